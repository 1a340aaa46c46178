"""Prefect flow `score-inbox`: score, in every subfolder of an inbox, the audio files no model has decided about
yet that are done being written (`toolchain.scoring.inbox.scan_inbox`); or, with `backfill`, the history the
model has not scored (`toolchain.scoring.files.Backfill`: `since`, `folders`).

Each such subfolder is scored as a child run of `score-folder` named after it, or, with `drain` or `backfill`, in
this run itself (its steps are this run's tasks: a child run costs seconds of API work, which a burst of arrivals
or a thousand-folder backfill cannot afford); `drain` scans again until a scan scores nothing (the on-arrival
deployment sets it). Parameters: `model`, `inbox`, `output_dir` and the typed `engine`, `options` and `run` of
`score-folder`, plus `drain` and `backfill`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.exceptions import MissingResult
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import publish_artifacts, publish_inbox_artifact
from flows.score_folder import RunSettings, checked, refused, score_folder_flow
from flows.steps import PrefectSteps, log
from toolchain.errors import ToolchainError
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import Backfill
from toolchain.scoring.folder import FolderOutcome, run_folder
from toolchain.scoring.inbox import scan_inbox
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import resolve_model
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.publish import FolderSummary

FLOW_NAME = "score-inbox"
MAX_DRAIN_SCANS = 100  # A drained inbox run ends after this many scans even if folders keep arriving.


def _run_name() -> str:
    kind = "backfill" if flow_run.parameters.get("backfill") else "inbox"
    return f"{kind}-{Path(flow_run.parameters.get('inbox') or '?').name}"


@flow(name=FLOW_NAME, flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def score_inbox_flow(
    model: str,
    inbox: str,
    output_dir: str,
    engine: EngineConfig | None = None,
    options: ScoringOptions | None = None,
    run: RunSettings | None = None,
    drain: bool = False,
    backfill: Backfill | None = None,
) -> dict[str, Any] | State:
    """Score each subfolder of `inbox` holding files the ONNX `model` has not scored, each into
    `<output_dir>/<folder name>/predictions_<UTC>.csv` (a follow-up CSV for files that arrived after their
    folder was scored), recorded in the ledger (`<output_dir>/ledger.sqlite`, or `TOOLCHAIN_LEDGER_URL`). `engine`, `options` and `run` as for
    `score-folder`; `run.settle_seconds`: files not covered by a `_READY` marker are scored once nothing in their
    subfolder changed for this long. One failed folder never stops the others (the run then ends Failed, naming
    them). With `drain`, scan again until a scan scores nothing. With `backfill`, score once what this model has
    not scored in the history (`toolchain backfill`); killed, the next backfill run resumes."""
    run = run or RunSettings()
    engine, options = engine or EngineConfig(), options or ScoringOptions()
    try:
        model = str(resolve_model(model, say=log))  # models:/NAME@ALIAS: the version it names now, for every folder.
    except ToolchainError as exc:
        return refused(exc)
    steps = PrefectSteps(model, engine, run.retry_delay_seconds, run.dask_address)

    def score_in_this_run(sub: str, parent: str) -> FolderOutcome:
        outcome = run_folder(model, sub, output_dir, steps, shard_size=run.shard_size, skip_scored=True,
                             flow_run_id=flow_run.id, parent_run_id=parent, options=options,
                             settle_seconds=run.settle_seconds, backfill=backfill)
        if outcome.summary is not None:
            publish_artifacts(outcome.summary)
        return outcome

    def score_as_child_run(sub: str, parent: str) -> FolderOutcome:
        # Drift is this run's to act on (below), once: the child reports it.
        child = dataclasses.replace(run, fail_on_drift=False)
        state = score_folder_flow(model=model, folder=sub, output_dir=output_dir, engine=engine, options=options,
                                  run=child, skip_scored=True, parent_run_id=parent, return_state=True)
        try:
            result = state.result()  # Raises the child's exception when it failed.
        except MissingResult:
            if not state.is_completed():
                raise
            # A busy server can hand back its own copy of the child's final state, without the returned data:
            # the child completed, and the ledger holds what it did.
            log(f"{sub}: the child run completed but its result did not come back; read from the ledger")
            return recorded_outcome(output_dir, sub, str(state.state_details.flow_run_id))
        summary = FolderSummary(**_summary_fields(result)) if "csv_path" in result else None
        return FolderOutcome(sub, summary, result.get("skipped", ""))

    try:
        scans = []
        while True:  # With `drain`, scan again until nothing is ready: one process (one model load) for a burst.
            here = drain or backfill is not None
            scans.append(scan_inbox(model, inbox, output_dir, steps,
                                    score_in_this_run if here else score_as_child_run, flow_run_id=flow_run.id,
                                    report=publish_inbox_artifact, settle_seconds=run.settle_seconds,
                                    reconcile_files=run.reconcile_files, backfill=backfill))
            # Another scan only when this one scored something: a folder that keeps looking new without yielding
            # a CSV (a bug, or files nobody may read) must never turn draining into a loop of empty runs.
            if not drain or not any(o.summary for o in scans[-1].outcomes) or len(scans) >= MAX_DRAIN_SCANS:
                break
        result = scans[0].to_dict()
        result["folders"] = [f for scan in scans for f in scan.to_dict()["folders"]]
        return checked(result["folders"], result, run.fail_on_drift)
    except ToolchainError as exc:
        return refused(exc)


def recorded_outcome(output_dir: str, folder: str, child_flow_run_id: str) -> FolderOutcome:
    """What a completed child flow run did with `folder`, as the ledger recorded it."""
    rows = [r for r in Ledger.in_dir(output_dir).folder_runs(str(Path(folder).resolve()))
            if r.flow_run_id == child_flow_run_id and r.state == "completed"]
    if not rows:
        return FolderOutcome(folder, skipped="already scored")  # It found nothing to do: no folder run.
    r = rows[-1]
    if not r.csv_path:
        return FolderOutcome(folder, skipped="nothing to score")
    health = {"verdict": r.health_verdict, "reason": "", "path": r.health_path, "js_distance": r.js_distance,
              "expected_accuracy": r.expected_accuracy}
    return FolderOutcome(folder, FolderSummary(
        folder=r.folder, csv_path=r.csv_path, run_id=r.run_id, model_sha256=r.model_sha256, provider="",
        files_ok=r.files_ok, files_error=r.files_error, seconds=0.0, task_retries=r.task_retries, health=health))


def _summary_fields(result: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(FolderSummary)}
    return {k: v for k, v in result.items() if k in names}
