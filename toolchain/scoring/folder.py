"""Scoring folders: discover -> score (in shards) -> write -> record, the one orchestration for every caller.

`run_folder` holds the whole sequence; its parts live beside it: the ledger rows and the folder lock (`runs`), the
model's identity (`models`), shards (`shards`), publishing and recording (`publish`). How each step runs is the
caller's `ScoringSteps` (`steps`): `LocalSteps` calls them in this thread (what `toolchain score` does, through
`score_folder`); the Prefect flows run them as tasks with retries and map the shards with Prefect's `.map` or on a
Dask cluster. Inbox scans (`toolchain.scoring.inbox`) call `run_folder` once per subfolder with new files; which
files are new and which are done being written is `toolchain.scoring.files`; where runs may go,
`toolchain.scoring.roots`.

What gets scored: every file under the folder, recursively, that `toolchain.audio.find_audio_files` lists (a
known audio extension, case-insensitive; hidden files and folders skipped). Files with other extensions get no
row; an audio-named file that does not decode gets an error row. With `skip_scored` only the files the model has
not scored as they are now, into a follow-up CSV, so every file that lands gets exactly one row from a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import FolderBusyError, one_line
from toolchain.inference.events import uninformative_threshold
from toolchain.io import check_output_dir
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import (
    DEFAULT_SETTLE_SECONDS,
    Backfill,
    check_folder,
    discover_audio_files,
    files_to_score,
    stamp_files,
)
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import describe_model, load_model_cached, resolve_model
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.publish import FolderSummary, record_folder, write_predictions
from toolchain.scoring.roots import allowed_roots, confine, outside_roots
from toolchain.scoring.runs import FolderJob, folder_job, scoring_run
from toolchain.scoring.shadow import shadow_compare
from toolchain.scoring.shards import DEFAULT_SHARD_SIZE, shard
from toolchain.scoring.steps import Attempted, LocalSteps, ScoringSteps


@dataclass(frozen=True)
class FolderOutcome:
    """What `run_folder` did with a folder: scored it (`summary`) or skipped it (`skipped` says why)."""

    folder: str
    summary: FolderSummary | None = None
    skipped: str = ""  # "" | "already scored" | "busy" | "nothing to score"

    def to_dict(self) -> dict[str, Any]:
        return self.summary.to_dict() if self.summary else {"folder": self.folder, "skipped": self.skipped}


def run_folder(model_path: str | Path, folder: str | Path, out_dir: str | Path, steps: ScoringSteps, *,
               shard_size: int = DEFAULT_SHARD_SIZE, skip_scored: bool = False, flow_run_id: str | None = None,
               parent_run_id: str | None = None, run_id: str | None = None,
               options: ScoringOptions = ScoringOptions(),
               settle_seconds: float = DEFAULT_SETTLE_SECONDS, backfill: Backfill | None = None) -> FolderOutcome:
    """Score every audio file under `folder` into `<out_dir>/<folder name>/predictions_<UTC>.csv` (one row per
    file), `detections_<UTC>.csv` (one row per window) and `events_<UTC>.csv`, recorded in the ledger (`<out_dir>/ledger.sqlite`, or `TOOLCHAIN_LEDGER_URL`):
    discover -> score shards -> write -> record, each step run by `steps`; `options` says how files are cut into
    windows and what is written.

    `skip_scored` (inbox scans) scores only the files no model has decided about as they are now (with
    `backfill`: this model) and that are done being written (`settle_seconds`:
    `toolchain.scoring.files.ready_files`; none: the folder is skipped), and skips a folder another run is scoring
    right now; without it every file is scored and a busy
    folder raises `FolderBusyError`. The ledger knows a model by the file named here
    (a GPU run of its fp16 variant and a CPU run are one model to the ledger); CSV rows name the file that ran.
    """
    roots = allowed_roots()
    confine(roots, model=model_path, output_dir=out_dir, folder=folder)
    check_output_dir(out_dir, "output_dir")
    identity = describe_model(model_path)
    config = identity.metadata.feature_config
    window_rule = options.tag(config)  # A hop longer than the model's window is refused here, before any work.
    ledger = Ledger.in_dir(out_dir)
    steps.log(f"model {model_path}{' (' + identity.version + ')' if identity.version else ''} "
              f"sha256={identity.sha256} ({identity.metadata.arch}, "
              f"{len(identity.metadata.classes)} classes); {window_rule}")
    useless = uninformative_threshold(options.min_confidence, len(identity.metadata.classes))
    if useless and options.min_confidence > 0:
        steps.log(f"warning: {useless}")
    with scoring_run(out_dir, mode="folder", target=folder, model=identity, flow_run_id=flow_run_id,
                     parent_run_id=parent_run_id, run_id=run_id, window_rule=window_rule) as run_id:
        folder = str(check_folder(folder))  # Inside the run: a missing folder is a failed run in the ledger.
        try:
            with folder_job(ledger, folder, out_dir, run_id, identity.sha256, flow_run_id=flow_run_id,
                            skip_if_scored=skip_scored, settle_seconds=settle_seconds, options=options,
                            window_rule=window_rule, metadata=identity.metadata, backfill=backfill,
                            model_version=identity.version) as job:
                if job is None:
                    steps.log(f"{folder} is already scored: skipped")
                    return FolderOutcome(folder, skipped="already scored")
                summary = _score_job(job, steps, shard_size, only_new=skip_scored)
                if summary is None:
                    return FolderOutcome(folder, skipped="nothing to score")
        except FolderBusyError as exc:
            if not skip_scored:
                raise
            steps.log(f"skipped: {exc}")
            return FolderOutcome(folder, skipped="busy")
    steps.log(
        f"scored {folder}: {summary.files_total} files ({summary.files_ok} ok, {summary.files_error} error), "
        f"{summary.windows} windows ({summary.audio_hours:.2f} h of audio), "
        f"{summary.files_per_second:.1f} files/s, provider {summary.provider}, model sha256 {summary.model_sha256}, "
        f"task retries {summary.task_retries} -> {summary.csv_path}"
    )
    return FolderOutcome(folder, summary=summary)


OUTSIDE_ROOTS = "links outside the folders this server may read"  # The ledger's decision for such a file.


def _score_job(job: FolderJob, steps: ScoringSteps, shard_size: int, only_new: bool) -> FolderSummary | None:
    """discover -> score -> write -> record; None when an inbox run (`only_new`) finds nothing it may score (the
    files it skipped are recorded with the reason, so they do not make the folder new again)."""
    def discover(attempt: int) -> list[str]:
        if only_new:  # Files decided about, unchanged, are not scored again: a follow-up CSV holds the rest.
            return [s.file for s in files_to_score(Path(job.folder), job.ledger, job.model_sha256,
                                                   job.settle_seconds, log=steps.log, backfill=job.backfill)]
        return discover_audio_files(job.folder)

    discovered = steps.run("discover", discover)
    steps.log(f"discovered {len(discovered.value)} {'new ' if only_new else ''}audio files in {job.folder}")
    roots = allowed_roots()
    escaping = [f for f in discovered.value if roots and outside_roots(Path(job.folder) / f, roots)]
    if escaping:
        steps.log(f"skipped {len(escaping)} file(s) that link outside the allowed folders, e.g. {escaping[0]}")
        job.ledger.record_files(job.folder_run_id, stamp_files(job.folder, escaping), decision=OUTSIDE_ROOTS)
        discovered = Attempted([f for f in discovered.value if f not in set(escaping)], discovered.attempt)
    if not discovered.value and only_new:
        job.ledger.finish_folder(job.folder_run_id, "completed")  # Its decisions count; no CSV, no health.
        steps.log(f"{job.folder}: nothing to score")
        return None
    if not discovered.value:
        steps.log(f"warning: {job.folder} holds no audio files (extensions: .wav .flac .ogg .mp3 ...): its CSV "
                  "has a header and no rows")
    job.ledger.record_files(job.folder_run_id, stamp_files(job.folder, discovered.value, content=True))
    results = steps.map_shards(job, shard(discovered.value, shard_size))
    for r in sorted(results, key=lambda r: r.index):
        steps.log(f"shard {r.index}: {r.part.files_ok} ok, {r.part.files_error} error in {r.seconds:.1f} s "
                  f"on {r.provider}")
    job.ledger.set_provider(job.run_id, results[0].provider)
    written = steps.run("write-csv", lambda attempt: write_predictions(job, results))
    steps.log(f"wrote {written.value}")
    retries = (discovered.attempt - 1) + (written.attempt - 1) + sum(r.attempt - 1 for r in results)
    summary = steps.run("record", lambda attempt: record_folder(job, results, written.value,
                                                               retries + attempt - 1)).value
    if job.options.challenger:
        summary = dataclasses.replace(summary, shadow=_shadow(job, summary, steps))
    return summary


def _shadow(job: FolderJob, summary: FolderSummary, steps: ScoringSteps) -> dict[str, Any]:
    """The challenger's comparison on the files just scored (`toolchain.scoring.shadow`), recorded in MLflow when
    a registered model is involved; a failure is logged and returned as `{"error": ...}`, never raised: the
    folder's own outputs are already published."""
    try:
        challenger = resolve_model(job.options.challenger, say=steps.log)
        comparison = steps.run("shadow", lambda attempt: shadow_compare(
            summary, job.model_version, challenger, steps.config, job.options)).value
    except Exception as exc:
        steps.log(f"shadow comparison with {job.options.challenger} failed: {one_line(exc)}; the folder's own "
                  "outputs are unaffected")
        return {"error": one_line(exc), "challenger": job.options.challenger}
    agreement = comparison["agreement"]
    steps.log(f"shadow: {job.options.challenger} agrees with the serving model on "
              f"{'-' if agreement is None else f'{agreement:.1%}'} of {comparison['files_compared']} files; health "
              f"{comparison['champion']['verdict']} (serving) vs {comparison['challenger']['verdict']} -> "
              f"{comparison['shadow_csv']}")
    if comparison["challenger"]["version"] or comparison["champion"]["version"]:
        try:
            from toolchain.registry.shadow import record_comparison

            comparison["mlflow_run"] = record_comparison(comparison)
        except Exception as exc:
            steps.log(f"the shadow comparison is not in MLflow ({one_line(exc)}); it is in {comparison['path']}")
    return comparison


def score_folder(model_path: str | Path, folder: str | Path, out_dir: str | Path,
                 config: EngineConfig = EngineConfig(), progress: ProgressReporter = NullProgress(), *,
                 run_id: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                 options: ScoringOptions = ScoringOptions(),
                 say: Callable[[str], None] = lambda message: None) -> FolderSummary:
    """`run_folder` with every step in this thread: what `toolchain score` runs. `model_path` may name a
    registered version (models:/NAME@ALIAS), resolved now; `say` gets the steps' log lines.

    Raises `ScoringError` (missing folder, unreadable model, busy folder, a window rule the model cannot take)
    before any CSV is written; bad audio files become error rows.
    """
    check_folder(folder)
    check_output_dir(out_dir, "--out")
    model_path = resolve_model(model_path, say=say)
    # A model that cannot run, or a window rule it cannot take, is refused before any ledger row is written.
    options.tag(load_model_cached(model_path, config).feature_config)
    outcome = run_folder(model_path, folder, out_dir, LocalSteps(model_path, config, progress, say=say),
                         shard_size=shard_size, run_id=run_id, options=options)
    assert outcome.summary is not None  # Only inbox scans (skip_scored) skip folders.
    return outcome.summary
