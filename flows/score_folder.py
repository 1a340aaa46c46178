"""Prefect flow `score-folder`: discover -> score (shards) -> write -> record, around `toolchain.scoring`.

Parameters: `model` (.onnx), `output_dir`, and either `folder` (score it now) or `inbox` (score every subfolder the
model has not scored yet, each as a child flow run named after the folder). The flow only wires tasks; the work,
the CSV format and the ledger live in the library, callable without Prefect (`toolchain score` does).

Retries sit on the tasks that touch the disk (discover, score, write, record) and show in the logs as
"Retry 1/2 will start ..."; each folder's ledger row records how many retries it took. Shards are mapped on the
flow's task runner: one thread by default (the decode workers and ORT threads already fill the cores); pass another
runner with `score_folder_flow.with_options(task_runner=...)`, or pass `dask_address` to send the shards to a Dask
cluster through prefect-dask's DaskTaskRunner (`flows/dask_runner.py`).
Schedules live in `flows/deploy.py`, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dask_runner import shard_runner
from toolchain.engine import EngineConfig
from toolchain.errors import ScoringError
from toolchain.ledger import Ledger
from toolchain.scoring import (
    DEFAULT_SHARD_SIZE,
    FolderBusyError,
    FolderJob,
    FolderSummary,
    ShardResult,
    describe_model,
    discover_audio_files,
    folder_job,
    load_model_cached,
    record_folder,
    score_shard,
    scoring_run,
    shard,
    unscored_folders,
    write_predictions,
)

RETRIES = 2
FLOW_NAME = "score-folder"


@dataclass(frozen=True)
class Attempted:
    """A task's value plus the attempt that produced it (1 = no retry)."""

    value: Any
    attempt: int


def _attempt() -> int:
    return max(1, task_run.run_count or 1)


@task(name="discover", retries=RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def discover_task(folder: str) -> Attempted:
    files = discover_audio_files(folder)
    get_run_logger().info("discovered %d audio files in %s", len(files), folder)
    return Attempted(files, _attempt())


@task(name="score-shard", task_run_name="score-shard-{index}", retries=1, retry_delay_seconds=5,
      cache_policy=NO_CACHE)
def score_shard_task(model: str, job: FolderJob, index: int, files: list[str], config: EngineConfig) -> ShardResult:
    loaded = load_model_cached(model, config)
    result = score_shard(loaded, job, index, files, config, attempt=_attempt())
    get_run_logger().info(
        "shard %d: %d ok, %d error in %.1f s on %s", index, result.part.files_ok, result.part.files_error,
        result.seconds, result.provider,
    )
    return result


@task(name="write-csv", retries=RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def write_task(job: FolderJob, shards: list[ShardResult]) -> Attempted:
    path = write_predictions(job, shards, attempt=_attempt())
    get_run_logger().info("wrote %s", path)
    return Attempted(str(path), _attempt())


@task(name="record", retries=RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def record_task(job: FolderJob, shards: list[ShardResult], csv_path: str, task_retries: int) -> FolderSummary:
    return record_folder(job, shards, csv_path, task_retries + _attempt() - 1)


@task(name="find-unscored", retries=RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def find_unscored_task(inbox: str, output_dir: str, model_sha256: str) -> list[str]:
    return [str(p) for p in unscored_folders(inbox, Ledger.in_dir(output_dir), model_sha256)]


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
            f"| throughput | {summary.files_per_second:.1f} files/s ({summary.seconds:.1f} s scoring) |",
            f"| provider | {summary.provider} |",
            f"| model sha256 | `{summary.model_sha256}` |",
            f"| run id | `{summary.run_id}` |",
            f"| task retries | {summary.task_retries} |",
        ]),
        description=f"predictions CSV for {name}",
    )


def _score_one(model: str, output_dir: str, folder: str, config: EngineConfig, shard_size: int,
               retry_delay_seconds: float, skip_scored: bool, parent_run_id: str | None,
               dask_address: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    identity = describe_model(model)
    ledger = Ledger.in_dir(output_dir)
    delays = {"retry_delay_seconds": retry_delay_seconds}
    logger.info("model %s sha256=%s (%s, %d classes)", model, identity.sha256, identity.metadata.arch,
                len(identity.metadata.classes))
    with scoring_run(output_dir, mode="folder", target=folder, model=identity, flow_run_id=flow_run.id,
                     parent_run_id=parent_run_id) as run_id:
        try:
            with folder_job(ledger, folder, output_dir, run_id, identity.sha256, flow_run_id=flow_run.id,
                            skip_if_scored=skip_scored) as job:
                if job is None:
                    logger.info("%s is already scored by this model: skipped", folder)
                    return {"folder": folder, "skipped": "already scored"}
                discovered = discover_task.with_options(**delays)(folder)
                shards = shard(discovered.value, shard_size)
                shard_task = score_shard_task.with_options(**delays)
                with shard_runner(dask_address) as runner:
                    if runner is None:
                        futures = shard_task.map(
                            unmapped(model), unmapped(job), list(range(len(shards))), shards, unmapped(config)
                        )
                    else:
                        logger.info("scoring %d shard(s) on the Dask cluster at %s", len(shards), dask_address)
                        futures = runner.map(shard_task, parameters={
                            "model": unmapped(model), "job": unmapped(job), "index": list(range(len(shards))),
                            "files": shards, "config": unmapped(config),
                        })
                    results = [f.result() for f in futures]
                ledger.set_provider(run_id, results[0].provider)
                written = write_task.with_options(**delays)(job, results)
                retries = (discovered.attempt - 1) + (written.attempt - 1) + sum(r.attempt - 1 for r in results)
                summary = record_task.with_options(**delays)(job, results, written.value, retries)
        except FolderBusyError as exc:
            if not skip_scored:
                raise
            logger.warning("skipped: %s", exc)
            return {"folder": folder, "skipped": "busy"}
    logger.info(
        "scored %s: %d files (%d ok, %d error), %.1f files/s, provider %s, model sha256 %s, task retries %d -> %s",
        folder, summary.files_total, summary.files_ok, summary.files_error, summary.files_per_second,
        summary.provider, summary.model_sha256, summary.task_retries, summary.csv_path,
    )
    publish_artifacts(summary)
    return summary.to_dict()


def _scan_inbox(model: str, output_dir: str, inbox: str, params: dict[str, Any]) -> dict[str, Any]:
    logger = get_run_logger()
    identity = describe_model(model)
    with scoring_run(output_dir, mode="inbox", target=inbox, model=identity, flow_run_id=flow_run.id) as run_id:
        todo = find_unscored_task(inbox, output_dir, identity.sha256)
        logger.info("inbox %s: %d folder(s) not yet scored by model %s", inbox, len(todo), identity.sha256[:12])
        states = [
            score_folder_flow(model=model, output_dir=output_dir, folder=sub, skip_scored=True,
                              parent_run_id=run_id, return_state=True, **params)
            for sub in todo
        ]
        failed = [sub for sub, state in zip(todo, states) if not state.is_completed()]
        results = [state.result() for state in states if state.is_completed()]
        lines = [f"- `{r['folder']}` -> `{r.get('csv_path', r.get('skipped'))}`" for r in results]
        lines += [f"- `{sub}` **failed**" for sub in failed]
        create_markdown_artifact(
            key=f"inbox-scan-{_slug(Path(inbox).name)}",
            markdown=f"# Inbox scan of `{inbox}`\n\n{len(todo)} new folder(s)\n\n" + "\n".join(lines),
            description=f"inbox scan: {len(todo)} folder(s), {len(failed)} failed",
        )
        if failed:
            raise ScoringError(f"{len(failed)} of {len(todo)} inbox folders failed: {', '.join(failed)}")
    return {"inbox": inbox, "run_id": run_id, "folders": results}


@flow(name=FLOW_NAME, flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def score_folder_flow(
    model: str,
    output_dir: str,
    folder: str | None = None,
    inbox: str | None = None,
    batch_size: int = 16,
    shard_size: int = DEFAULT_SHARD_SIZE,
    decode_workers: int | None = None,
    intra_op_threads: int | None = None,
    provider: str = "auto",
    retry_delay_seconds: float = 5.0,
    skip_scored: bool = False,
    parent_run_id: str | None = None,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Score `folder` (or each new subfolder of `inbox`) with the ONNX `model` into
    `<output_dir>/<folder name>/predictions_<UTC>.csv`, recorded in `<output_dir>/ledger.sqlite`.

    `skip_scored` skips a folder this model already scored (inbox scans set it); `parent_run_id` is set by inbox
    scans on their per-folder runs. `dask_address` (e.g. "tcp://10.0.0.5:8786") scores the shards on that Dask
    cluster instead of in this process. The engine settings (batch_size, decode_workers, intra_op_threads, provider)
    change speed only, never results.
    """
    if (folder is None) == (inbox is None):
        raise ScoringError("pass exactly one of `folder` (score it) or `inbox` (score its new subfolders)")
    config = EngineConfig(batch_size=batch_size, provider=provider, decode_workers=decode_workers,
                          intra_op_threads=intra_op_threads)
    if inbox is not None:
        params = dict(batch_size=batch_size, shard_size=shard_size, decode_workers=decode_workers,
                      intra_op_threads=intra_op_threads, provider=provider, retry_delay_seconds=retry_delay_seconds,
                      dask_address=dask_address)
        return _scan_inbox(model, output_dir, inbox, params)
    return _score_one(model, output_dir, folder, config, shard_size, retry_delay_seconds, skip_scored,
                      parent_run_id, dask_address)
