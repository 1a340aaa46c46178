"""Scoring folders: discover -> score (in shards) -> write -> record, callable with or without Prefect.

`score_folder` runs every step for one folder (what `toolchain score` does). The Prefect flow `score-folder` calls
the same steps (`discover_audio_files`, `score_shard`, `write_predictions`, `record_folder`) as separate tasks
inside `folder_job`, so retries, shards on other workers and logs come from Prefect while the logic stays here.

What gets scored: every file under the folder, recursively, whose extension is a known audio extension
(`toolchain.features.AUDIO_EXTENSIONS`, case-insensitive). Files with other extensions (`.txt`, `.csv`, `.json`,
images...) are ignored and get no row; an audio-named file that does not decode gets an error row. Hidden
directories (`.git`, `.parts_*`) are not entered. In inbox mode each non-hidden subfolder holding at least one
audio file is a unit of work; empty ones are left for a later scan (their files may still be arriving).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolchain.digest import file_sha256
from toolchain.engine import EngineConfig, ScoringModel, load_model, score_files
from toolchain.errors import ScoringError
from toolchain.features import is_audio_path
from toolchain.ledger import Ledger
from toolchain.onnx_metadata import ModelMetadata, read_metadata
from toolchain.outputs import (
    PartSummary,
    assemble_csv,
    inject_fault,
    new_csv_path,
    out_folder_for,
    part_path,
    publish_csv,
    remove_run_files,
    write_part,
)
from toolchain.progress import NullProgress, ProgressReporter

DEFAULT_SHARD_SIZE = 1000  # Files per shard: a retry or a Dask task redoes at most this much work.


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 8 random hex digits."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class ModelIdentity:
    path: str
    sha256: str  # Of the .onnx file.
    metadata: ModelMetadata


def describe_model(path: str | Path) -> ModelIdentity:
    """The model's identity and metadata without starting ONNX Runtime (refuses foreign feature configs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ScoringError(f"model {path} does not exist: pass the .onnx file written by `toolchain export-onnx`")
    return ModelIdentity(str(path.resolve()), file_sha256(path), read_metadata(path))


def check_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ScoringError(f"input folder {path} {what}: pass a directory of audio files")
    return path.resolve()


def discover_audio_files(folder: str | Path) -> list[str]:
    """Audio files under `folder`, recursively, as sorted posix paths relative to it."""
    root = check_folder(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        found.extend((base / name).relative_to(root).as_posix() for name in filenames if is_audio_path(name))
    return sorted(found)


def has_audio(folder: Path) -> bool:
    return any(is_audio_path(name) for _, _, names in os.walk(folder) for name in names)


def unscored_folders(inbox: str | Path, ledger: Ledger, model_sha256: str) -> list[Path]:
    """Subfolders of `inbox` holding audio and not yet scored by this model, sorted by name."""
    root = check_folder(inbox)
    # Resolved like `check_folder` does, so a symlinked subfolder matches its ledger key.
    subfolders = sorted(p.resolve() for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subfolders if ledger.scored_csv(str(p), model_sha256) is None and has_audio(p)]


def shard(files: Sequence[str], shard_size: int = DEFAULT_SHARD_SIZE) -> list[list[str]]:
    """Consecutive slices of the sorted list (so concatenated shard outputs stay sorted); one empty shard if none."""
    if shard_size < 1:
        raise ScoringError(f"shard_size={shard_size} must be at least 1")
    return [list(files[i:i + shard_size]) for i in range(0, len(files), shard_size)] or [[]]


@dataclass(frozen=True)
class FolderJob:
    """One folder being scored by one run, while that run holds the output folder's lock."""

    folder: str  # Absolute input folder.
    out_folder: str
    out_dir: str
    run_id: str
    folder_run_id: int
    model_sha256: str
    flow_run_id: str | None = None

    @property
    def ledger(self) -> Ledger:
        return Ledger.in_dir(self.out_dir)


@contextmanager
def folder_lock(out_folder: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `<out_folder>/.lock`; the kernel drops it if the holder dies (kill -9)."""
    out_folder.mkdir(parents=True, exist_ok=True)
    with open(out_folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"{out_folder} is being written by another scoring run right now: wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FolderBusyError(ScoringError):
    """Another live run holds the folder's lock."""


@contextmanager
def folder_job(ledger: Ledger, folder: str | Path, out_dir: str | Path, run_id: str, model_sha256: str, *,
               flow_run_id: str | None = None, skip_if_scored: bool = False) -> Iterator[FolderJob | None]:
    """Claim a folder: lock it, settle what killed runs left, start its ledger row; yields None when skipped.

    On an exception inside the block the row is marked 'failed' with the one-line reason and this run's temporary
    files are removed; the exception propagates.
    """
    folder = check_folder(folder)
    out_folder = out_folder_for(out_dir, folder)
    with folder_lock(out_folder):
        ledger.reconcile_folder(str(out_folder))
        remove_run_files(out_folder)  # Leftovers of killed runs: we hold the lock, so nobody else is writing.
        if skip_if_scored and ledger.scored_csv(str(folder), model_sha256) is not None:
            yield None
            return
        folder_run_id = ledger.start_folder(run_id, str(folder), str(out_folder), model_sha256, flow_run_id)
        job = FolderJob(str(folder), str(out_folder), str(out_dir), run_id, folder_run_id, model_sha256, flow_run_id)
        try:
            yield job
        except BaseException as exc:
            ledger.finish_folder(folder_run_id, "failed", error=_one_line(exc))
            remove_run_files(out_folder, run_id)
            raise


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class ShardResult:
    index: int
    part: PartSummary
    seconds: float
    provider: str
    attempt: int = 1  # Which attempt produced it (retries = attempt - 1).


@functools.lru_cache(maxsize=1)
def _cached_model(path: str, mtime_ns: int, size: int, config: EngineConfig) -> ScoringModel:
    return load_model(path, config)


def load_model_cached(path: str | Path, config: EngineConfig = EngineConfig()) -> ScoringModel:
    """`load_model`, reused across shards in one process (keyed on the file's mtime and size, so a replaced model
    file is reloaded)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return load_model(path, config)  # Raises the one-line error.
    stat = path.stat()
    return _cached_model(str(path.resolve()), stat.st_mtime_ns, stat.st_size, config)


def score_shard(model: ScoringModel, job: FolderJob, index: int, files: Sequence[str],
                config: EngineConfig = EngineConfig(), progress: ProgressReporter = NullProgress(),
                attempt: int = 1) -> ShardResult:
    """Score one shard of the folder's files into its part file (streamed, renamed into place when complete)."""
    if job.model_sha256 not in (model.sha256, model.source_sha256):  # source: the file named, when fp16 runs.
        raise ScoringError(f"model {model.path} changed since the run started (sha256 {model.sha256[:12]} != "
                           f"{job.model_sha256[:12]}): rerun the scoring")
    inject_fault("score", attempt)
    start = time.perf_counter()
    rows = score_files(model, job.folder, files, config, progress)
    part = write_part(part_path(Path(job.out_folder), job.run_id, index), rows, model.classes, model.sha256,
                      job.run_id)
    return ShardResult(index, part, time.perf_counter() - start, model.provider, attempt)


def write_predictions(job: FolderJob, shards: Sequence[ShardResult], attempt: int = 1) -> Path:
    """Assemble the shards' parts (in shard order) into `predictions_<UTC>.csv`, atomically; returns its path."""
    out_folder = Path(job.out_folder)
    ordered = sorted(shards, key=lambda s: s.index)
    tmp = assemble_csv(out_folder, job.run_id, [s.part.path for s in ordered], attempt)
    final = new_csv_path(out_folder)
    job.ledger.set_csv_path(job.folder_run_id, str(final))  # Before the rename: a crash after it is recoverable.
    return publish_csv(tmp, final)


@dataclass(frozen=True)
class FolderSummary:
    """The outcome of scoring one folder (JSON-able through `to_dict`)."""

    folder: str
    csv_path: str
    run_id: str
    model_sha256: str
    provider: str
    files_ok: int
    files_error: int
    seconds: float  # Time spent scoring (decode + features + inference + part writes), summed over shards.
    task_retries: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)

    @property
    def files_total(self) -> int:
        return self.files_ok + self.files_error

    @property
    def files_per_second(self) -> float:
        return self.files_total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "files_total": self.files_total, "files_per_second": self.files_per_second}


def record_folder(job: FolderJob, shards: Sequence[ShardResult], csv_path: str | Path,
                  task_retries: int = 0) -> FolderSummary:
    """Mark the folder scored in the ledger (its CSV is complete) and remove the run's part files."""
    labels: Counter[str] = Counter()
    for s in shards:
        labels.update(s.part.label_counts)
    summary = FolderSummary(
        folder=job.folder, csv_path=str(csv_path), run_id=job.run_id, model_sha256=job.model_sha256,
        provider=shards[0].provider if shards else "", files_ok=sum(s.part.files_ok for s in shards),
        files_error=sum(s.part.files_error for s in shards), seconds=sum(s.seconds for s in shards),
        task_retries=task_retries, label_counts=dict(sorted(labels.items())),
    )
    job.ledger.finish_folder(job.folder_run_id, "completed", files_ok=summary.files_ok,
                             files_error=summary.files_error, task_retries=task_retries, csv_path=str(csv_path))
    remove_run_files(Path(job.out_folder), job.run_id)
    return summary


@contextmanager
def scoring_run(out_dir: str | Path, *, mode: str, target: str | Path, model: ModelIdentity,
                flow_run_id: str | None = None, parent_run_id: str | None = None,
                run_id: str | None = None) -> Iterator[str]:
    """A ledger `runs` row around a block: yields the run id; 'completed', or 'failed' with the reason."""
    run_id = run_id or new_run_id()
    ledger = Ledger.in_dir(out_dir)
    ledger.reap_dead_runs()
    ledger.start_run(run_id, mode=mode, target=str(target), model_path=model.path, model_sha256=model.sha256,
                     checkpoint_sha256=model.metadata.checkpoint_sha256, flow_run_id=flow_run_id,
                     parent_run_id=parent_run_id)
    try:
        yield run_id
    except BaseException as exc:
        ledger.finish_run(run_id, "failed", _one_line(exc))
        raise
    ledger.finish_run(run_id, "completed")


def score_folder(model_path: str | Path, folder: str | Path, out_dir: str | Path,
                 config: EngineConfig = EngineConfig(), progress: ProgressReporter = NullProgress(), *,
                 run_id: str | None = None) -> FolderSummary:
    """Score every audio file under `folder` into `<out_dir>/<folder name>/predictions_<UTC>.csv`, recorded in
    `<out_dir>/ledger.sqlite`. Raises `ScoringError` (missing folder, unreadable model, busy folder) before any
    CSV is written; bad audio files become error rows."""
    folder = check_folder(folder)
    model = load_model(model_path, config)
    # The ledger knows a model by the file the user named, as the flow does; rows name the file that ran (the
    # fp16 variant on CUDA), so a GPU run and a CPU run of the same model.onnx are one model to the ledger.
    identity = ModelIdentity(str(Path(model_path).resolve()), model.source_sha256, model.metadata)
    with scoring_run(out_dir, mode="folder", target=folder, model=identity, run_id=run_id) as run_id:
        ledger = Ledger.in_dir(out_dir)
        ledger.set_provider(run_id, model.provider)
        with folder_job(ledger, folder, out_dir, run_id, identity.sha256) as job:
            assert job is not None  # skip_if_scored is off
            files = discover_audio_files(folder)
            shards = [score_shard(model, job, 0, files, config, progress)]
            csv_path = write_predictions(job, shards)
            return record_folder(job, shards, csv_path)
