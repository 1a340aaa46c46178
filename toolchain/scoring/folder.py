"""Scoring folders: discover -> score (in shards) -> write -> record, the one orchestration for every caller.

`run_folder` holds the whole sequence and its bookkeeping (the ledger rows, the folder lock, busy and
already-scored folders, retry counts, the provider that ran). How each step runs is the caller's `ScoringSteps`:
`LocalSteps` calls them in this thread (what `toolchain score` does, through `score_folder`); the Prefect flow
`score-folder` runs them as tasks with retries and maps the shards with Prefect's `.map` or on a Dask cluster.
Inbox scans (`toolchain.scoring.inbox`) call `run_folder` once per subfolder with new files; which files are new
and whether a folder is done being written is `toolchain.scoring.files`; where runs may go, `toolchain.scoring.roots`.

What gets scored: every file under the folder, recursively, that `toolchain.audio.find_audio_files` lists (a
known audio extension, case-insensitive; hidden files and folders skipped). Files with other extensions get no
row; an audio-named file that does not decode gets an error row. With `skip_scored` only the files the model has
not scored as they are now, into a follow-up CSV, so every file that lands gets exactly one row from a model.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from toolchain.audio.config import FeatureConfig
from toolchain.errors import FolderBusyError, OutputPathError, ScoringError, one_line
from toolchain.health.assess import assess
from toolchain.health.reference import stored_reference
from toolchain.health.sketch import Sketch, SketchBuilder, merge_sketches
from toolchain.inference.contract import ModelMetadata, model_file_problem, read_scoring_metadata
from toolchain.io import check_output_dir, file_sha256
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.scoring.engine import EngineConfig, ScoredRow, ScoringModel, load_model, score_files
from toolchain.scoring.files import (
    DEFAULT_SETTLE_SECONDS,
    check_folder,
    discover_audio_files,
    files_to_score,
    stamp_files,
)
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.options import OutputFormat, ScoringOptions
from toolchain.scoring.outputs import (
    DETECTIONS_PREFIX,
    PartSummary,
    assemble_csv,
    assemble_raven,
    detections_part,
    health_path,
    inject_fault,
    new_csv_path,
    out_folder_for,
    part_path,
    publish_csv,
    remove_run_files,
    sibling_outputs,
    write_health,
    write_part,
)
from toolchain.scoring.roots import allowed_roots, confine, outside_roots

DEFAULT_SHARD_SIZE = 1000  # Files per shard: a retry or a Dask task redoes at most this much work.


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 8 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class ModelIdentity:
    path: str
    sha256: str  # Of the .onnx file.
    metadata: ModelMetadata


def describe_model(path: str | Path) -> ModelIdentity:
    """The model's identity and metadata without starting ONNX Runtime; refuses what is not a scoring model (a
    folder, a model.audio.onnx, a foreign graph or feature config) before any caller writes a ledger row."""
    path = Path(path).expanduser()
    problem = model_file_problem(path)
    if problem:
        raise ScoringError(f"model {path} {problem}")
    metadata = read_scoring_metadata(path)
    return ModelIdentity(str(path.resolve()), file_sha256(path), metadata)


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
    options: ScoringOptions = ScoringOptions()
    window_rule: str = ""  # `options.tag(...)` for the model's feature config.
    metadata: ModelMetadata | None = None  # The model's: its classes, sample rate, health reference.
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # Inbox runs: files newer than the _READY marker wait this long.

    @property
    def sample_rate(self) -> int:
        """The model's (the Raven table's frequency range is half of it); the default contract's without one."""
        return self.metadata.feature_config.sample_rate if self.metadata else FeatureConfig().sample_rate

    @property
    def ledger(self) -> Ledger:
        return Ledger.in_dir(self.out_dir)


@contextmanager
def folder_lock(out_folder: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `<out_folder>/.lock`; the kernel drops it if the holder dies (kill -9)."""
    try:
        out_folder.mkdir(parents=True, exist_ok=True)
        handle = open(out_folder / ".lock", "a+")  # noqa: SIM115 (closed by the `with` below)
    except OSError as exc:
        raise OutputPathError(f"cannot create the lock file {out_folder / '.lock'} ({exc.strerror}): make "
                              f"{out_folder} writable, or pass another output folder") from None
    with handle:
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


@contextmanager
def folder_job(ledger: Ledger, folder: str | Path, out_dir: str | Path, run_id: str, model_sha256: str, *,
               flow_run_id: str | None = None, skip_if_scored: bool = False,
               settle_seconds: float = DEFAULT_SETTLE_SECONDS, options: ScoringOptions = ScoringOptions(),
               window_rule: str = "", metadata: ModelMetadata | None = None) -> Iterator[FolderJob | None]:
    """Claim a folder: lock it, settle what killed runs left, start its ledger row; yields None when skipped
    (`skip_if_scored` and no file of the folder is both undecided by the model and done being written).

    On an exception inside the block the row is marked 'failed' with the one-line reason and this run's temporary
    files are removed; the exception propagates.
    """
    folder = check_folder(folder)
    out_folder = out_folder_for(out_dir, folder)
    with folder_lock(out_folder):
        ledger.reconcile_folder(str(out_folder))
        remove_run_files(out_folder)  # Leftovers of killed runs: we hold the lock, so nobody else is writing.
        if skip_if_scored and not files_to_score(folder, ledger, model_sha256, settle_seconds):
            yield None
            return
        folder_run_id = ledger.start_folder(run_id, str(folder), str(out_folder), model_sha256, flow_run_id)
        job = FolderJob(str(folder), str(out_folder), str(out_dir), run_id, folder_run_id, model_sha256, flow_run_id,
                        options, window_rule, metadata, settle_seconds)
        try:
            yield job
        except BaseException as exc:
            ledger.finish_folder(folder_run_id, "failed", error=one_line(exc))
            remove_run_files(out_folder, run_id)
            raise


@dataclass(frozen=True)
class ShardResult:
    index: int
    part: PartSummary
    seconds: float
    provider: str
    attempt: int = 1  # Which attempt produced it (retries = attempt - 1).
    sketch: Sketch = Sketch()  # Its windows, summarized for the health report.


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
    reference, _ = stored_reference(model.metadata.health_reference, len(model.classes))
    sketch = SketchBuilder(len(model.classes), reference.temperature if reference else 1.0)
    rows = score_files(model, job.folder, files, config, progress, job.options.rule, job.options.aggregation)
    part = write_part(part_path(Path(job.out_folder), job.run_id, index), _sketched(rows, sketch), model.classes,
                      model.sha256, job.run_id, job.window_rule, job.options.min_confidence)
    return ShardResult(index, part, time.perf_counter() - start, model.provider, attempt, sketch.build())


def _sketched(rows: Iterable[ScoredRow], sketch: SketchBuilder) -> Iterator[ScoredRow]:
    """`rows`, unchanged, each one added to `sketch` on its way to the part file."""
    for row in rows:
        if row.status == "ok" and row.windows:
            sketch.add([w.probabilities for w in row.windows])
        elif row.status != "ok":
            sketch.fail()
        yield row


def health_report(job: FolderJob, shards: Sequence[ShardResult], predictions: Path) -> dict[str, Any]:
    """The folder run's health (`toolchain.health.assess`) as the JSON written beside `predictions`."""
    classes = job.metadata.classes if job.metadata else ()
    reference, why_not = stored_reference(job.metadata.health_reference if job.metadata else None, len(classes))
    context = {"folder": job.folder, "predictions_csv": str(predictions), "run_id": job.run_id,
               "model_sha256": job.model_sha256, "window_rule": job.window_rule, "classes": list(classes),
               "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    sketch = merge_sketches(s.sketch for s in sorted(shards, key=lambda s: s.index))
    try:
        return assess(sketch, reference, job.options.health, context, why_not).to_dict()
    except Exception as exc:  # A bug in a statistic must never cost the predictions: say so and go on.
        return {"verdict": "error", "reason": f"the health report could not be computed ({one_line(exc)}); the "
                "predictions are unaffected", "files": sketch.files, "windows": sketch.windows,
                "failed": sketch.failed, **context, "figures": {}}


def write_predictions(job: FolderJob, shards: Sequence[ShardResult], attempt: int = 1) -> Path:
    """Assemble the shards' parts (in shard order) into `predictions_<UTC>.csv` and `detections_<same>.csv` (and
    the Raven table when asked), each atomically, the predictions CSV last; returns its path."""
    out_folder = Path(job.out_folder)
    parts = [s.part.path for s in sorted(shards, key=lambda s: s.index)]
    tmp = assemble_csv(out_folder, job.run_id, parts, attempt)
    detections_tmp = assemble_csv(out_folder, job.run_id, [str(detections_part(p)) for p in parts], attempt,
                                  prefix=DETECTIONS_PREFIX)
    raven_tmp = None
    if job.options.format == OutputFormat.raven.value:
        raven_tmp = assemble_raven(out_folder, job.run_id, tmp, detections_tmp, job.folder, job.sample_rate / 2)
    final = new_csv_path(out_folder)
    detections, raven = sibling_outputs(final)
    health_tmp = write_health(out_folder, job.run_id, health_report(job, shards, final))
    job.ledger.set_csv_path(job.folder_run_id, str(final))  # Before the rename: a crash after it is recoverable.
    publish_csv(detections_tmp, detections)
    if raven_tmp is not None:
        publish_csv(raven_tmp, raven)
    publish_csv(health_tmp, health_path(final))
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
    windows: int = 0  # Windows scored over all files.
    audio_hours: float = 0.0  # Hours of audio decoded.
    detections_path: str = ""
    window_rule: str = ""
    health: dict[str, Any] = field(default_factory=dict)  # Verdict, reason, report path and key figures.

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
    health = _health_summary(health_path(Path(csv_path)))
    summary = FolderSummary(
        folder=job.folder, csv_path=str(csv_path), run_id=job.run_id, model_sha256=job.model_sha256,
        provider=shards[0].provider if shards else "", files_ok=sum(s.part.files_ok for s in shards),
        files_error=sum(s.part.files_error for s in shards), seconds=sum(s.seconds for s in shards),
        task_retries=task_retries, label_counts=dict(sorted(labels.items())),
        windows=sum(s.part.windows for s in shards), audio_hours=sum(s.part.audio_s for s in shards) / 3600,
        detections_path=str(sibling_outputs(Path(csv_path))[0]), window_rule=job.window_rule, health=health,
    )
    job.ledger.finish_folder(job.folder_run_id, "completed", files_ok=summary.files_ok,
                             files_error=summary.files_error, task_retries=task_retries, csv_path=str(csv_path),
                             health=health)
    remove_run_files(Path(job.out_folder), job.run_id)
    return summary


def _health_summary(path: Path) -> dict[str, Any]:
    """The ledger's and the summary's part of a published health report."""
    report = json.loads(path.read_text())
    figures = report.get("figures") or {}
    return {"verdict": report["verdict"], "reason": report["reason"], "path": str(path),
            "js_distance": figures.get("js_distance"), "expected_accuracy": figures.get("expected_accuracy")}


@contextmanager
def scoring_run(out_dir: str | Path, *, mode: str, target: str | Path, model: ModelIdentity,
                flow_run_id: str | None = None, parent_run_id: str | None = None,
                run_id: str | None = None, window_rule: str | None = None) -> Iterator[str]:
    """A ledger `runs` row around a block: yields the run id; 'completed', or 'failed' with the reason."""
    run_id = run_id or new_run_id()
    ledger = Ledger.in_dir(out_dir)
    ledger.reap_dead_runs()
    ledger.start_run(run_id, mode=mode, target=str(target), model_path=model.path, model_sha256=model.sha256,
                     checkpoint_sha256=model.metadata.checkpoint_sha256, flow_run_id=flow_run_id,
                     parent_run_id=parent_run_id, window_rule=window_rule)
    try:
        yield run_id
    except BaseException as exc:
        ledger.finish_run(run_id, "failed", one_line(exc))
        raise
    ledger.finish_run(run_id, "completed")


T = TypeVar("T")


@dataclass(frozen=True)
class Attempted(Generic[T]):
    """A step's value plus the attempt that produced it (1 = no retry)."""

    value: T
    attempt: int = 1


class ScoringSteps(Protocol):
    """How `run_folder`'s steps execute. `run` calls `fn(attempt)` (retrying it as the runner sees fit) and says
    which attempt succeeded; `map_shards` scores every shard (anywhere) and returns their results in any order;
    `log` reports one line."""

    def run(self, name: str, fn: Callable[[int], T]) -> Attempted[T]: ...

    def map_shards(self, job: FolderJob, shards: list[list[str]]) -> list[ShardResult]: ...

    def log(self, message: str) -> None: ...


def score_shard_of(model_path: str | Path, config: EngineConfig, job: FolderJob, index: int, files: Sequence[str],
                   progress: ProgressReporter = NullProgress(), attempt: int = 1) -> ShardResult:
    """One shard from a model path: what every shard mapper runs (the model is loaded once per process)."""
    return score_shard(load_model_cached(model_path, config), job, index, files, config, progress, attempt)


@dataclass
class LocalSteps:
    """Every step in this thread, once, in order (no retries): `toolchain score` and plain Python callers."""

    model_path: str | Path
    config: EngineConfig = EngineConfig()
    progress: ProgressReporter = field(default_factory=NullProgress)

    def run(self, name: str, fn: Callable[[int], T]) -> Attempted[T]:
        return Attempted(fn(1))

    def map_shards(self, job: FolderJob, shards: list[list[str]]) -> list[ShardResult]:
        return [score_shard_of(self.model_path, self.config, job, i, files, self.progress)
                for i, files in enumerate(shards)]

    def log(self, message: str) -> None:
        pass


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
               settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> FolderOutcome:
    """Score every audio file under `folder` into `<out_dir>/<folder name>/predictions_<UTC>.csv` (one row per
    file) and `detections_<UTC>.csv` (one row per window), recorded in `<out_dir>/ledger.sqlite`:
    discover -> score shards -> write -> record, each step run by `steps`; `options` says how files are cut into
    windows and what is written.

    `skip_scored` (inbox scans) scores only the files this model has not decided about as they are now and
    that are done being written (`settle_seconds`: `toolchain.scoring.files.ready_files`; none: the folder is
    skipped), and skips a folder another run is scoring right now; without it every file is scored and a busy
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
    steps.log(f"model {model_path} sha256={identity.sha256} ({identity.metadata.arch}, "
              f"{len(identity.metadata.classes)} classes); {window_rule}")
    with scoring_run(out_dir, mode="folder", target=folder, model=identity, flow_run_id=flow_run_id,
                     parent_run_id=parent_run_id, run_id=run_id, window_rule=window_rule) as run_id:
        folder = str(check_folder(folder))  # Inside the run: a missing folder is a failed run in the ledger.
        try:
            with folder_job(ledger, folder, out_dir, run_id, identity.sha256, flow_run_id=flow_run_id,
                            skip_if_scored=skip_scored, settle_seconds=settle_seconds, options=options,
                            window_rule=window_rule, metadata=identity.metadata) as job:
                if job is None:
                    steps.log(f"{folder} is already scored by this model: skipped")
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
        if only_new:  # Files this model decided about, unchanged, are not scored again: a follow-up CSV holds the rest.
            return [s.file for s in files_to_score(Path(job.folder), job.ledger, job.model_sha256,
                                                   job.settle_seconds, log=steps.log)]
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
    written = steps.run("write-csv", lambda attempt: write_predictions(job, results, attempt))
    steps.log(f"wrote {written.value}")
    retries = (discovered.attempt - 1) + (written.attempt - 1) + sum(r.attempt - 1 for r in results)
    return steps.run("record", lambda attempt: record_folder(job, results, written.value,
                                                            retries + attempt - 1)).value


def score_folder(model_path: str | Path, folder: str | Path, out_dir: str | Path,
                 config: EngineConfig = EngineConfig(), progress: ProgressReporter = NullProgress(), *,
                 run_id: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                 options: ScoringOptions = ScoringOptions()) -> FolderSummary:
    """`run_folder` with every step in this thread: what `toolchain score` runs.

    Raises `ScoringError` (missing folder, unreadable model, busy folder, a window rule the model cannot take)
    before any CSV is written; bad audio files become error rows.
    """
    check_folder(folder)
    check_output_dir(out_dir, "--out")
    # A model that cannot run, or a window rule it cannot take, is refused before any ledger row is written.
    options.tag(load_model_cached(model_path, config).feature_config)
    outcome = run_folder(model_path, folder, out_dir, LocalSteps(model_path, config, progress),
                         shard_size=shard_size, run_id=run_id, options=options)
    assert outcome.summary is not None  # Only inbox scans (skip_scored) skip folders.
    return outcome.summary
