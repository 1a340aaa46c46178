"""A scored folder's outputs: the shards' parts assembled into the predictions CSV (with its detections, Raven
table and health report), published atomically, then recorded in the ledger."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import one_line
from toolchain.health.assess import assess
from toolchain.health.reference import stored_reference
from toolchain.health.sketch import merge_sketches
from toolchain.scoring.options import OutputFormat, RavenRows
from toolchain.scoring.outputs import (
    DETECTIONS_PREFIX,
    EVENTS_PREFIX,
    assemble_csv,
    assemble_raven,
    detections_part,
    events_part,
    events_path,
    health_path,
    new_csv_path,
    publish_csv,
    remove_run_files,
    sibling_outputs,
    write_health,
)
from toolchain.scoring.runs import FolderJob
from toolchain.scoring.shards import ShardResult


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


def write_predictions(job: FolderJob, shards: Sequence[ShardResult]) -> Path:
    """Assemble the shards' parts (in shard order) into `predictions_<UTC>.csv`, `detections_<same>.csv` and
    `events_<same>.csv` (and the Raven table when asked), each atomically, the predictions CSV last; returns its
    path."""
    out_folder = Path(job.out_folder)
    parts = [s.part.path for s in sorted(shards, key=lambda s: s.index)]
    tmp = assemble_csv(out_folder, job.run_id, parts)
    detections_tmp = assemble_csv(out_folder, job.run_id, [str(detections_part(p)) for p in parts],
                                  prefix=DETECTIONS_PREFIX)
    events_tmp = assemble_csv(out_folder, job.run_id, [str(events_part(p)) for p in parts], prefix=EVENTS_PREFIX)
    raven_tmp = None
    if job.options.format == OutputFormat.raven.value:
        selections = events_tmp if job.options.raven_rows == RavenRows.events.value else detections_tmp
        raven_tmp = assemble_raven(out_folder, job.run_id, tmp, selections, job.folder, job.sample_rate / 2)
    final = new_csv_path(out_folder)
    detections, raven = sibling_outputs(final)
    health_tmp = write_health(out_folder, job.run_id, health_report(job, shards, final))
    job.ledger.set_csv_path(job.folder_run_id, str(final))  # Before the rename: a crash after it is recoverable.
    publish_csv(detections_tmp, detections)
    publish_csv(events_tmp, events_path(final))
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
    events_path: str = ""
    window_rule: str = ""
    health: dict[str, Any] = field(default_factory=dict)  # Verdict, reason, report path and key figures.
    model_version: str = ""  # NAME/VERSION of a registered model, "" for a model file.
    shadow: dict[str, Any] = field(default_factory=dict)  # The challenger's comparison (`scoring.shadow`), if any.

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
        model_version=job.model_version,
        provider=shards[0].provider if shards else "", files_ok=sum(s.part.files_ok for s in shards),
        files_error=sum(s.part.files_error for s in shards), seconds=sum(s.seconds for s in shards),
        task_retries=task_retries, label_counts=dict(sorted(labels.items())),
        windows=sum(s.part.windows for s in shards), audio_hours=sum(s.part.audio_s for s in shards) / 3600,
        detections_path=str(sibling_outputs(Path(csv_path))[0]), events_path=str(events_path(Path(csv_path))),
        window_rule=job.window_rule, health=health,
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
