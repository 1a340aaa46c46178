"""A folder's files in shards (consecutive slices of the sorted list: a retry or a Dask task redoes at most one),
each scored into its own part file with a health sketch of its windows."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ScoringError
from toolchain.health.reference import stored_reference
from toolchain.health.sketch import Sketch, SketchBuilder
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.scoring.engine import ScoredRow, ScoringModel, score_files
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.models import load_model_cached
from toolchain.scoring.outputs import (
    PartSummary,
    part_path,
    write_part,
)
from toolchain.scoring.runs import FolderJob

DEFAULT_SHARD_SIZE = 1000  # Files per shard: a retry or a Dask task redoes at most this much work.


def shard(files: Sequence[str], shard_size: int = DEFAULT_SHARD_SIZE) -> list[list[str]]:
    """Consecutive slices of the sorted list (so concatenated shard outputs stay sorted); one empty shard if none."""
    if shard_size < 1:
        raise ScoringError(f"shard_size={shard_size} must be at least 1")
    return [list(files[i:i + shard_size]) for i in range(0, len(files), shard_size)] or [[]]


@dataclass(frozen=True)
class ShardResult:
    index: int
    part: PartSummary
    seconds: float
    provider: str
    attempt: int = 1  # Which attempt produced it (retries = attempt - 1).
    sketch: Sketch = Sketch()  # Its windows, summarized for the health report.


def score_shard(model: ScoringModel, job: FolderJob, index: int, files: Sequence[str],
                config: EngineConfig = EngineConfig(), progress: ProgressReporter = NullProgress(),
                attempt: int = 1) -> ShardResult:
    """Score one shard of the folder's files into its part file (streamed, renamed into place when complete)."""
    if job.model_sha256 not in (model.sha256, model.source_sha256):  # source: the file named, when fp16 runs.
        raise ScoringError(f"model {model.path} changed since the run started (sha256 {model.sha256[:12]} != "
                           f"{job.model_sha256[:12]}): rerun the scoring")
    start = time.perf_counter()
    reference, _ = stored_reference(model.metadata.health_reference, len(model.classes))
    sketch = SketchBuilder(len(model.classes), reference.temperature if reference else 1.0)
    rows = score_files(model, job.folder, files, config, progress, job.options.rule, job.options.aggregation)
    part = write_part(part_path(Path(job.out_folder), job.run_id, index), sketched(rows, sketch), model.classes,
                      model.sha256, job.run_id, job.window_rule, job.options.min_confidence, job.model_version,
                      job.options.merge_gap_s)
    return ShardResult(index, part, time.perf_counter() - start, model.provider, attempt, sketch.build())


def sketched(rows: Iterable[ScoredRow], sketch: SketchBuilder) -> Iterator[ScoredRow]:
    """`rows`, unchanged, each one added to `sketch` on its way to the part file."""
    for row in rows:
        if row.status == "ok" and row.windows:
            sketch.add([w.probabilities for w in row.counted])
        elif row.status != "ok":
            sketch.fail()
        yield row


def load_and_score_shard(model_path: str | Path, config: EngineConfig, job: FolderJob, index: int, files: Sequence[str],
                   progress: ProgressReporter = NullProgress(), attempt: int = 1) -> ShardResult:
    """One shard from a model path: what every shard mapper runs (the model is loaded once per process)."""
    return score_shard(load_model_cached(model_path, config), job, index, files, config, progress, attempt)
