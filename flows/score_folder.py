"""Prefect flow `score-folder`: the library's folder scoring (`toolchain.scoring.folder.run_folder`), its steps
run as Prefect tasks.

Parameters: `model` (.onnx), `output_dir`, and either `folder` (score it now) or `inbox` (score every subfolder the
model has not scored yet, each as a child flow run named after the folder, or with `drain` in the run itself). The engine settings are one typed
parameter, `engine` (every `EngineConfig` field; a form in the UI); `batch_size`, `provider`, `decode_workers`
and `intra_op_threads` are also accepted on their own, overriding `engine`, so the common ones stay a plain
`--param batch_size=32`. The flow only wires tasks: the sequence, the CSV format, the ledger and the
busy/already-scored/retry bookkeeping live in the library, which `toolchain score` runs without Prefect.

Retries sit on the tasks that touch the disk (discover, score, write, record, find-unscored) and show in the logs
as "Retry 1/2 will start ..."; each folder's ledger row records how many retries it took. Shards are mapped on the
flow's task runner: one thread by default (the decode workers and ORT threads already fill the cores); pass another
runner with `score_folder_flow.with_options(task_runner=...)`, or pass `dask_address` to send the shards to a Dask
cluster through prefect-dask's DaskTaskRunner (`flows/dask_runner.py`). Schedules live in `flows/deploy.py`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dask_runner import shard_runner
from toolchain.errors import DriftError, ScoringError, ToolchainError
from toolchain.health.render import markdown as health_markdown
from toolchain.inference.predictions import Aggregation
from toolchain.inference.providers import Provider
from toolchain.scoring.engine import EngineConfig
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS
from toolchain.scoring.folder import (
    DEFAULT_SHARD_SIZE,
    Attempted,
    FolderJob,
    FolderOutcome,
    FolderSummary,
    ShardResult,
    run_folder,
    score_shard_of,
)
from toolchain.scoring.inbox import InboxScan, scan_inbox
from toolchain.scoring.options import OutputFormat, ScoringOptions

RETRIES = 2
FLOW_NAME = "score-folder"
MAX_DRAIN_SCANS = 100  # A drained inbox run ends after this many scans even if folders keep arriving.
T = TypeVar("T")


def _attempt() -> int:
    return max(1, task_run.run_count or 1)


@task(name="step", retries=RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def step_task(fn: Callable[[int], Any]) -> Attempted:
    """One library step (`fn(attempt)`); `PrefectSteps.run` names it (discover, write-csv, record, ...)."""
    attempt = _attempt()
    return Attempted(fn(attempt), attempt)


@task(name="score-shard", task_run_name="score-shard-{index}", retries=1, retry_delay_seconds=5,
      cache_policy=NO_CACHE)
def score_shard_task(model: str, job: FolderJob, index: int, files: list[str], config: EngineConfig) -> ShardResult:
    return score_shard_of(model, config, job, index, files, attempt=_attempt())


@dataclass(frozen=True)
class PrefectSteps:
    """`toolchain.scoring.folder.ScoringSteps` on Prefect: tasks with retries, shards by `.map` or on Dask."""

    model: str
    config: EngineConfig
    retry_delay_seconds: float = 5.0
    dask_address: str | None = None

    def run(self, name: str, fn: Callable[[int], T]) -> Attempted[T]:
        return step_task.with_options(name=name, task_run_name=name,
                                      retry_delay_seconds=self.retry_delay_seconds)(fn)

    def map_shards(self, job: FolderJob, shards: list[list[str]]) -> list[ShardResult]:
        shard_task = score_shard_task.with_options(retry_delay_seconds=self.retry_delay_seconds)
        parameters = {"model": unmapped(self.model), "job": unmapped(job), "index": list(range(len(shards))),
                      "files": shards, "config": unmapped(self.config)}
        with shard_runner(self.dask_address) as runner:
            if runner is None:
                futures = shard_task.map(**parameters)
            else:
                self.log(f"scoring {len(shards)} shard(s) on the Dask cluster at {self.dask_address}")
                futures = runner.map(shard_task, parameters=parameters)
            return [f.result() for f in futures]

    def log(self, message: str) -> None:
        get_run_logger().info("%s", message)


def _slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-") or "folder"


def _run_name() -> str:
    params = flow_run.parameters
    if params.get("folder"):
        return f"score-{Path(params['folder']).name}"
    return f"inbox-{Path(params.get('inbox') or '?').name}"


def publish_artifacts(summary: FolderSummary) -> None:
    name = Path(summary.folder).name
    rows = [{"label": label, "files": count} for label, count in summary.label_counts.items()]
    rows.append({"label": "(error)", "files": summary.files_error})
    create_table_artifact(
        key=f"predictions-{_slug(name)}",
        table=rows,
        description=f"{name}: {summary.files_total} files ({summary.files_error} errors), "
        f"{summary.files_per_second:.1f} files/s on {summary.provider}",
    )
    create_markdown_artifact(
        key=f"scoring-summary-{_slug(name)}",
        markdown="\n".join([
            f"# Scored `{name}`",
            "",
            "| | |", "|---|---|",
            f"| CSV | `{summary.csv_path}` |",
            f"| folder | `{summary.folder}` |",
            f"| files | {summary.files_total} ({summary.files_ok} ok, {summary.files_error} error) |",
            f"| windows | {summary.windows} ({summary.audio_hours:.2f} h of audio; {summary.window_rule}) |",
            f"| detections | `{summary.detections_path}` |",
            f"| throughput | {summary.files_per_second:.1f} files/s ({summary.seconds:.1f} s scoring) |",
            f"| provider | {summary.provider} |",
            f"| model sha256 | `{summary.model_sha256}` |",
            f"| run id | `{summary.run_id}` |",
            f"| task retries | {summary.task_retries} |",
            f"| health | **{summary.health.get('verdict', '')}**: {summary.health.get('reason', '')} |",
        ]),
        description=f"predictions CSV for {name}",
    )
    publish_health_artifact(summary)


def publish_health_artifact(summary: FolderSummary) -> None:
    """The folder run's health report as a markdown artifact (keyed per folder: its history is the trend)."""
    if not summary.health.get("path"):
        return
    name = Path(summary.folder).name
    report = json.loads(Path(summary.health["path"]).read_text())
    create_markdown_artifact(key=f"health-{_slug(name)}", markdown=health_markdown(report),
                             description=f"{name}: health {report['verdict']}")


def drifted(outcomes: list[dict[str, Any]]) -> list[str]:
    """The folders whose health verdict is drift, each with the reason, from the flow's result rows."""
    return [f"{o['folder']} ({o['health']['reason']}; {o['health']['path']})" for o in outcomes
            if (o.get("health") or {}).get("verdict") == "drift"]


def publish_inbox_artifact(scan: InboxScan) -> None:
    lines = [f"- `{o.folder}` -> `{o.summary.csv_path if o.summary else o.skipped}`" for o in scan.outcomes]
    lines += [f"- `{sub}` **failed**" for sub in scan.failed]
    create_markdown_artifact(
        key=f"inbox-scan-{_slug(Path(scan.inbox).name)}",
        markdown=f"# Inbox scan of `{scan.inbox}`\n\n{len(scan.todo)} new folder(s)\n\n" + "\n".join(lines),
        description=f"inbox scan: {len(scan.todo)} folder(s), {len(scan.failed)} failed",
    )


def engine_settings(engine: EngineConfig | None, **overrides: Any) -> EngineConfig:
    """`engine` with the top-level shortcut parameters that were given (not None) laid over it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(engine or EngineConfig(), **given)


def scoring_options(options: ScoringOptions | None, **overrides: Any) -> ScoringOptions:
    """`options` with the top-level shortcut parameters that were given (not None) laid over it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(options or ScoringOptions(), **given)


@flow(name=FLOW_NAME, flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def score_folder_flow(
    model: str,
    output_dir: str,
    folder: str | None = None,
    inbox: str | None = None,
    engine: EngineConfig | None = None,
    batch_size: int | None = None,
    provider: Provider | None = None,
    decode_workers: int | None = None,
    intra_op_threads: int | None = None,
    options: ScoringOptions | None = None,
    hop_seconds: float | None = None,
    aggregation: Aggregation | None = None,
    min_confidence: float | None = None,
    output_format: OutputFormat | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    retry_delay_seconds: float = 5.0,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    drain: bool = False,
    skip_scored: bool = False,
    parent_run_id: str | None = None,
    dask_address: str | None = None,
    fail_on_drift: bool = False,
) -> dict[str, Any] | State:
    """Score `folder` (or each new subfolder of `inbox`) with the ONNX `model` into
    `<output_dir>/<folder name>/predictions_<UTC>.csv`, recorded in `<output_dir>/ledger.sqlite`.

    `engine`: every engine setting (batch size, provider, precision, device id, decode workers, ORT threads, ...);
    they change speed only, never results. `batch_size`, `provider`, `decode_workers`, `intra_op_threads`, when
    given, override the same fields of `engine`. `options`: what is computed and written (window hop,
    aggregation mean|max, detections' min confidence, output format csv|raven, max duration per file);
    `hop_seconds`, `aggregation`, `min_confidence`, `output_format` override its fields. `skip_scored` scores only the files this model has not scored
    yet (inbox scans set it). `settle_seconds`: an inbox subfolder without a `_READY` marker is scored once
    nothing in it changed for this long. An inbox scan scores each folder as a child flow run; with `drain` it
    scores them in this run instead (their steps are this run's tasks: a child run costs seconds of API work,
    which a burst of arrivals cannot afford) and scans again until no folder is ready (the on-arrival
    deployment sets it). `parent_run_id` is set by inbox scans on their per-folder runs. `dask_address` (e.g.
    "tcp://10.0.0.5:8786") scores the shards on that Dask cluster instead of in this process.

    Every folder gets a health report (`health_<UTC>.json` beside its CSV and a `health-<folder>` artifact):
    verdict ok | warn | drift | insufficient | no_reference against the model's own reference; `options.health`
    sets its thresholds. `fail_on_drift` makes a drift verdict fail the run (after every output is written and
    recorded), so Prefect's notifications can alert on it; by default drift is reported, never acted on.

    A user error (a folder outside the allowed roots, a missing folder, a model that cannot run, drift when asked
    to fail on it) ends the run Failed with its one line as the state message and one error log line, no
    traceback (`prefect flow-run inspect ID` and the UI show it); the `ToolchainError` is the state's data.
    """
    try:
        return _score(model, output_dir, folder, inbox, engine_settings(
            engine, batch_size=batch_size, provider=provider, decode_workers=decode_workers,
            intra_op_threads=intra_op_threads), scoring_options(
            options, hop_seconds=hop_seconds, aggregation=aggregation, min_confidence=min_confidence,
            format=output_format), shard_size=shard_size, retry_delay_seconds=retry_delay_seconds,
            settle_seconds=settle_seconds, drain=drain, skip_scored=skip_scored, parent_run_id=parent_run_id,
            dask_address=dask_address, fail_on_drift=fail_on_drift)
    except ToolchainError as exc:  # The operator's one line: the state message in the UI, one log line, no traceback.
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=exc)


def _score(model: str, output_dir: str, folder: str | None, inbox: str | None, config: EngineConfig,
           what: ScoringOptions, *, shard_size: int, retry_delay_seconds: float, settle_seconds: float, drain: bool,
           skip_scored: bool, parent_run_id: str | None, dask_address: str | None,
           fail_on_drift: bool) -> dict[str, Any]:
    """The flow's work, once its parameters are resolved; user errors raise `ToolchainError`."""
    if (folder is None) == (inbox is None):
        raise ScoringError("pass exactly one of `folder` (score it) or `inbox` (score its new subfolders)")
    steps = PrefectSteps(model, config, retry_delay_seconds, dask_address)
    if inbox is not None:
        def score_in_this_run(sub: str, parent: str) -> FolderOutcome:
            outcome = run_folder(model, sub, output_dir, steps, shard_size=shard_size, skip_scored=True,
                                 flow_run_id=flow_run.id, parent_run_id=parent, options=what,
                                 settle_seconds=settle_seconds)
            if outcome.summary is not None:
                publish_artifacts(outcome.summary)
            return outcome

        def score_as_child_run(sub: str, parent: str) -> FolderOutcome:
            state = score_folder_flow(model=model, output_dir=output_dir, folder=sub, engine=config,
                                      options=what, shard_size=shard_size, retry_delay_seconds=retry_delay_seconds,
                                      settle_seconds=settle_seconds, skip_scored=True, parent_run_id=parent,
                                      dask_address=dask_address,
                                      return_state=True)  # Drift is the parent's to act on (below), once.
            result = state.result()  # Raises the child's exception when it failed.
            return FolderOutcome(sub, FolderSummary(**_summary_fields(result)) if "csv_path" in result else None,
                                 result.get("skipped", ""))

        scans = []
        while True:  # With `drain`, scan again until nothing is ready: one process (one model load) for a burst.
            scans.append(scan_inbox(model, inbox, output_dir, steps,
                                    score_in_this_run if drain else score_as_child_run, flow_run_id=flow_run.id,
                                    report=publish_inbox_artifact, settle_seconds=settle_seconds))
            # Another scan only when this one scored something: a folder that keeps looking new without yielding
            # a CSV (a bug, or files nobody may read) must never turn draining into a loop of empty runs.
            if not drain or not any(o.summary for o in scans[-1].outcomes) or len(scans) >= MAX_DRAIN_SCANS:
                break
        result = scans[0].to_dict()
        result["folders"] = [f for scan in scans for f in scan.to_dict()["folders"]]
        return _checked(result["folders"], result, fail_on_drift)
    outcome = run_folder(model, folder, output_dir, steps, shard_size=shard_size, skip_scored=skip_scored,
                         flow_run_id=flow_run.id, parent_run_id=parent_run_id, options=what,
                         settle_seconds=settle_seconds)
    if outcome.summary is not None:
        publish_artifacts(outcome.summary)
        steps.log(f"health: {outcome.summary.health.get('verdict')}: {outcome.summary.health.get('reason')}")
        steps.log(f"predictions: {outcome.summary.csv_path}")  # The run's last log line names the CSV.
    return _checked([outcome.to_dict()], outcome.to_dict(), fail_on_drift)


def _checked(outcomes: list[dict[str, Any]], result: dict[str, Any], fail_on_drift: bool) -> dict[str, Any]:
    """`result`, or `DriftError` when asked to fail on drift and a folder drifted (its outputs are all kept)."""
    bad = drifted(outcomes) if fail_on_drift else []
    if bad:
        raise DriftError(f"the model no longer fits the audio of {len(bad)} folder(s): {'; '.join(bad)}")
    return result


def _summary_fields(result: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(FolderSummary)}
    return {k: v for k, v in result.items() if k in names}
