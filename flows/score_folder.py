"""Prefect flow `score-folder`: score one folder with the library's folder scoring
(`toolchain.scoring.folder.run_folder`), its steps run as Prefect tasks (`flows/steps.py`).

Parameters (a form in the UI): `model` (.onnx), `folder`, `output_dir`, and three typed settings: `engine` (how
the model runs: `EngineConfig`), `options` (what comes out: `ScoringOptions`) and `run` (how the flow run runs:
`RunSettings`). `skip_scored` and `parent_run_id` are set by inbox scans (`flows/score_inbox.py`) on the
folder runs they start. The flow only wires tasks: the sequence, the CSV format, the ledger and the
busy/already-scored/retry bookkeeping live in the library, which `toolchain score` runs without Prefect.
Schedules live in `flows/deploy.py`.

A user error (a folder outside the allowed roots, a missing folder, a model that cannot run, drift when asked to
fail on it) ends the run Failed with its one line as the state message and one error log line, no traceback
(`prefect flow-run inspect ID` and the UI show it); the `ToolchainError` is the state's data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import publish_artifacts
from flows.steps import PrefectSteps, log
from toolchain.errors import DriftError, ScoringError, ToolchainError
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS
from toolchain.scoring.folder import run_folder
from toolchain.scoring.inbox import DEFAULT_RECONCILE_FILES
from toolchain.scoring.models import resolve_model
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.shards import DEFAULT_SHARD_SIZE

FLOW_NAME = "score-folder"


@dataclass(frozen=True)
class RunSettings:
    """How a scoring flow run runs; nothing here changes what it computes."""

    shard_size: int = DEFAULT_SHARD_SIZE  # Files per shard (one task each): a retry redoes at most this much.
    retry_delay_seconds: float = 5.0  # Between a failed task and its retry.
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # Inbox files not covered by _READY wait for this much quiet.
    dask_address: str | None = None  # "tcp://10.0.0.5:8786": score the shards on that Dask cluster.
    fail_on_drift: bool = False  # A drift verdict fails the run (after every output is written and recorded).
    # Inbox scans: files of unchanged-looking subfolders looked at anyway (the longest unverified first).
    reconcile_files: int = DEFAULT_RECONCILE_FILES

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ScoringError(f"shard_size={self.shard_size} must be at least 1")
        if self.reconcile_files < 0:
            raise ScoringError(f"reconcile_files={self.reconcile_files} must not be negative")
        for name in ("retry_delay_seconds", "settle_seconds"):
            if getattr(self, name) < 0:
                raise ScoringError(f"{name}={getattr(self, name)} must not be negative")


class OneLineRefusals(logging.Filter):
    """Drops the records that carry a `ToolchainError` with its traceback.

    When a deployment's run process ends, Prefect's engine raises the failed run's exception once more and logs it
    as "Engine execution exited with unexpected exception", traceback included, to the run's logs. A refused run
    has already said its one line (and made it the state message); tracebacks stay for every other exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ToolchainError))


for _name in ("prefect.flow_runs", "prefect.engine"):  # Loaded with this module in every run process.
    if not any(isinstance(f, OneLineRefusals) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(OneLineRefusals())


def refused(exc: ToolchainError) -> State:
    """A run ended by a user error: Failed, the one line as its state message and log line, no traceback."""
    get_run_logger().error("%s", exc)
    return Failed(message=str(exc), data=exc)


def drifted(outcomes: list[dict[str, Any]]) -> list[str]:
    """The folders whose health verdict is drift, each with the reason, from the flow's result rows."""
    return [f"{o['folder']} ({o['health']['reason']}; {o['health']['path']})" for o in outcomes
            if (o.get("health") or {}).get("verdict") == "drift"]


def checked(outcomes: list[dict[str, Any]], result: dict[str, Any], fail_on_drift: bool) -> dict[str, Any]:
    """`result`, or `DriftError` when asked to fail on drift and a folder drifted (its outputs are all kept)."""
    bad = drifted(outcomes) if fail_on_drift else []
    if bad:
        raise DriftError(f"the model no longer fits the audio of {len(bad)} folder(s): {'; '.join(bad)}")
    return result


def _run_name() -> str:
    return f"score-{Path(flow_run.parameters.get('folder') or '?').name}"


@flow(name=FLOW_NAME, flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def score_folder_flow(
    model: str,
    folder: str,
    output_dir: str,
    engine: EngineConfig | None = None,
    options: ScoringOptions | None = None,
    run: RunSettings | None = None,
    skip_scored: bool = False,
    parent_run_id: str | None = None,
) -> dict[str, Any] | State:
    """Score every audio file under `folder` with the ONNX `model` into
    `<output_dir>/<folder name>/predictions_<UTC>.csv` (with its detections and health report), recorded in
    the ledger (`<output_dir>/ledger.sqlite`, or `TOOLCHAIN_LEDGER_URL`).

    `engine`: batch size, provider, precision, device id, decode workers, ORT threads, ...: speed only, never
    results. `options`: window placement (`sound_db`; null: the grid) and hop, aggregation mean|max, detections'
    min confidence, output format csv|raven, max duration per file, health thresholds. `run`: shard size, retry delay, settle seconds, a Dask scheduler
    address, fail on drift. `skip_scored` scores only the files this model has not decided about and that are
    done being written (inbox scans set it, with `parent_run_id`).

    The folder gets a health report (`health_<UTC>.json` beside its CSV and a `health-<folder>` artifact); with
    `run.fail_on_drift` a drift verdict fails the run after every output is written and recorded, so Prefect's
    notifications can alert on it; by default drift is reported, never acted on.
    """
    run = run or RunSettings()
    try:
        model = str(resolve_model(model, say=log))  # models:/NAME@ALIAS: the version it names now.
        steps = PrefectSteps(model, engine or EngineConfig(), run.retry_delay_seconds, run.dask_address)
        outcome = run_folder(model, folder, output_dir, steps, shard_size=run.shard_size, skip_scored=skip_scored,
                             flow_run_id=flow_run.id, parent_run_id=parent_run_id,
                             options=options or ScoringOptions(), settle_seconds=run.settle_seconds)
        if outcome.summary is not None:
            publish_artifacts(outcome.summary)
            steps.log(f"health: {outcome.summary.health.get('verdict')}: {outcome.summary.health.get('reason')}")
            steps.log(f"predictions: {outcome.summary.csv_path}")  # The run's last log line names the CSV.
        return checked([outcome.to_dict()], outcome.to_dict(), run.fail_on_drift)
    except ToolchainError as exc:
        return refused(exc)
