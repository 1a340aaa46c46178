"""Prediction CSVs: their columns, their names, and writing them so a killed run never leaves a partial one.

Layout under the output directory `<out>`:

  <out>/ledger.sqlite                               the run ledger (`toolchain.scoring.ledger`)
  <out>/<folder name>/predictions_<UTC YYYYmmddTHHMMSSZ>.csv    one complete CSV per scoring of that folder
  <out>/<folder name>/detections_<same UTC>.csv     one row per window of every file in it
  <out>/<folder name>/events_<same UTC>.csv         one row per event: merged runs of windows of one label
  <out>/<folder name>/raven_<same UTC>.selections.txt   the events (or windows) as a Raven selection table
  <out>/<folder name>/health_<same UTC>.json        the run's health report (`toolchain.health.assess`)
  <out>/<folder name>/.lock                         held (flock) by the run scoring that folder
  <out>/<folder name>/.parts_<run_id>/part_NNNNN.csv   shard outputs of a run in progress (removed when done)
  <out>/<folder name>/.predictions_<run_id>.csv.tmp    the CSV being assembled (renamed into place when complete)

Rows are written to part files as they are scored (memory stays bounded), each part renamed into place when
complete; the final CSV is the parts concatenated in shard order, fsync'ed, then `os.replace`d to its final name:
readers see either no CSV or a complete one. The detections CSV and the Raven table are published first, the
predictions CSV last: a predictions CSV always has its detections and health report beside it. Dot-files left by a killed run are
removed by the next run that takes the folder's lock.

Predictions columns (one row per file): file (posix path relative to the scored folder), label, confidence, status
(ok | error), error (empty when ok), duration_s (the decoded file), scored_s (seconds its windows cover: its
sounds, or on the grid the file minus leading/trailing silence), windows, aggregation (how the windows' probabilities became the file's: mean |
max), window_rule (e.g. `windows-v2 5s/2.5s sound+6dB`), prob_<class> for every class in the model's order,
model_version (NAME/VERSION of a registered model, empty for a model file), model_sha256 (of the .onnx file),
run_id. An error row has no label, times or probabilities.

Detections columns (one row per audible window at or above the run's min_confidence): file, start_s, end_s (seconds in
the original file), label, confidence, prob_<class>..., model_version, model_sha256, run_id.

Events columns (one row per event, `toolchain.inference.events`: consecutive windows of one top label at or above
min_confidence, runs of a label at most merge_gap_s apart merged): file, start_s, end_s, label, confidence (the
highest of its windows), mean_confidence, windows, model_version, model_sha256, run_id.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.audio.decode import audio_info
from toolchain.errors import ScoringError
from toolchain.inference.events import find_events
from toolchain.inference.predictions import format_prediction, format_probability, probability_columns
from toolchain.io import atomic_write, fsync_dir
from toolchain.scoring.engine import ScoredRow

CSV_PREFIX = "predictions_"
SHADOW_PREFIX = "shadow_"  # A challenger's outputs beside the real ones: shadow_predictions_<UTC>.csv, ...
DETECTIONS_PREFIX = "detections_"
EVENTS_PREFIX = "events_"
RAVEN_PREFIX = "raven_"
HEALTH_PREFIX = "health_"
RAVEN_SUFFIX = ".selections.txt"
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Begin Path", "File Offset (s)", "Label", "Confidence"]
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def csv_columns(classes: Iterable[str]) -> list[str]:
    return ["file", "label", "confidence", "status", "error", "duration_s", "scored_s", "windows", "aggregation",
            "window_rule", *probability_columns(classes), "model_version", "model_sha256", "run_id"]


def detection_columns(classes: Iterable[str]) -> list[str]:
    return ["file", "start_s", "end_s", "label", "confidence", *probability_columns(classes), "model_version",
            "model_sha256", "run_id"]


def event_columns() -> list[str]:
    return ["file", "start_s", "end_s", "label", "confidence", "mean_confidence", "windows", "model_version",
            "model_sha256", "run_id"]


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def row_values(row: ScoredRow, n_classes: int, model_sha256: str, run_id: str, window_rule: str = "",
               model_version: str = "") -> list[str]:
    if row.status == "ok" and row.probabilities is not None:
        return [row.file, row.label, format_probability(row.confidence), "ok", "", _seconds(row.duration_s),
                _seconds(row.scored_s), str(len(row.windows)), row.aggregation, window_rule,
                *map(format_probability, row.probabilities), model_version, model_sha256, run_id]
    return [row.file, "", "", "error", row.error or "unknown error", "", "", "0", "", window_rule,
            *([""] * n_classes), model_version, model_sha256, run_id]


def detection_rows(row: ScoredRow, classes: tuple[str, ...], model_sha256: str, run_id: str,
                   min_confidence: float = 0.0, model_version: str = "") -> Iterator[list[str]]:
    """One detections row per window of an ok row at or above `min_confidence` (silent windows never count)."""
    for window in row.counted:
        label, confidence, cells = format_prediction(window.probabilities, classes)
        if float(confidence) >= min_confidence:
            yield [row.file, _seconds(window.start_s), _seconds(window.end_s), label, confidence, *cells,
                   model_version, model_sha256, run_id]


def event_rows(row: ScoredRow, classes: tuple[str, ...], model_sha256: str, run_id: str,
               min_confidence: float = 0.0, merge_gap_s: float = 0.0, model_version: str = "") -> Iterator[list[str]]:
    """One events row per event of an ok row (`toolchain.inference.events.find_events`): a silent window is never
    part of an event and ends the run it interrupts (unless every window of the file is silent)."""
    if row.status != "ok" or not row.windows:
        return
    windows = row.windows
    audible = [w.audible for w in windows] if any(w.audible for w in windows) else None
    events = find_events([w.start_s for w in windows], [w.end_s for w in windows],
                         [w.probabilities for w in windows], classes, min_confidence, merge_gap_s, audible)
    for e in events:
        yield [row.file, _seconds(e.start_s), _seconds(e.end_s), e.label, format_probability(e.max_confidence),
               format_probability(e.mean_confidence), str(e.windows), model_version, model_sha256, run_id]


def out_folder_for(out_dir: str | Path, folder: str | Path) -> Path:
    """Where a folder's CSVs go: `<out>/<folder name>`."""
    name = Path(folder).name
    if not name:
        raise ScoringError(f"cannot name an output folder after {folder!s}: score a named folder, not a root")
    return Path(out_dir) / name


def parts_dir(out_folder: Path, run_id: str) -> Path:
    return out_folder / f".parts_{run_id}"


def part_path(out_folder: Path, run_id: str, index: int) -> Path:
    return parts_dir(out_folder, run_id) / f"part_{index:05d}.csv"


def detections_part(part: str | Path) -> Path:
    """The detections part written beside a predictions part."""
    return Path(part).with_suffix(".detections.csv")


def events_part(part: str | Path) -> Path:
    """The events part written beside a predictions part."""
    return Path(part).with_suffix(".events.csv")


@dataclass(frozen=True)
class PartSummary:
    """What one shard wrote."""

    path: str
    files_ok: int
    files_error: int
    label_counts: dict[str, int] = field(default_factory=dict)
    windows: int = 0
    audio_s: float = 0.0  # Seconds of audio decoded (the files' durations).


def write_part(path: Path, rows: Iterable[ScoredRow], classes: tuple[str, ...], model_sha256: str,
               run_id: str, window_rule: str = "", min_confidence: float = 0.0,
               model_version: str = "", merge_gap_s: float = 0.0) -> PartSummary:
    """Stream `rows` (with a header) into the part file `path`, their windows into its detections part and their
    events into its events part, each renamed into place only when complete."""
    labels: Counter[str] = Counter()
    errors = windows = 0
    audio_s = 0.0
    # Line-buffered: each row reaches the file as it is scored (progress is visible; the cost is one write per row).
    with atomic_write(path) as tmp, tmp.open("w", newline="", buffering=1) as f, \
            atomic_write(detections_part(path)) as dtmp, dtmp.open("w", newline="") as d, \
            atomic_write(events_part(path)) as etmp, etmp.open("w", newline="") as e:
        writer, detections, events = csv.writer(f), csv.writer(d), csv.writer(e)
        writer.writerow(csv_columns(classes))
        detections.writerow(detection_columns(classes))
        events.writerow(event_columns())
        for row in rows:
            writer.writerow(row_values(row, len(classes), model_sha256, run_id, window_rule, model_version))
            detections.writerows(detection_rows(row, classes, model_sha256, run_id, min_confidence, model_version))
            events.writerows(event_rows(row, classes, model_sha256, run_id, min_confidence, merge_gap_s,
                                        model_version))
            if row.status == "ok":
                labels[row.label] += 1
                windows += len(row.windows)
                audio_s += row.duration_s
            else:
                errors += 1
    return PartSummary(str(path), sum(labels.values()), errors, dict(sorted(labels.items())), windows, audio_s)


def _stamp(path: Path, prefix: str = CSV_PREFIX) -> str:
    return path.name[len(prefix):-len(".csv")]


def events_path(predictions: Path) -> Path:
    """The events CSV with the same UTC stamp as a predictions CSV."""
    return predictions.with_name(f"{EVENTS_PREFIX}{_stamp(predictions)}.csv")


def sibling_outputs(predictions: Path) -> tuple[Path, Path]:
    """(detections CSV, Raven table) with the same UTC stamp as a predictions CSV."""
    stamp = _stamp(predictions)
    return (predictions.with_name(f"{DETECTIONS_PREFIX}{stamp}.csv"),
            predictions.with_name(f"{RAVEN_PREFIX}{stamp}{RAVEN_SUFFIX}"))


def health_path(predictions: Path) -> Path:
    """The health report with the same UTC stamp as a predictions CSV."""
    return predictions.with_name(f"{HEALTH_PREFIX}{_stamp(predictions)}.json")


def _finite(value):
    """JSON has no NaN: a statistic a model's NaN outputs made undefined is written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_health(out_folder: Path, run_id: str, report: dict) -> Path:
    """The health report as a temporary file (published with `publish_csv`), fsync'ed."""
    tmp = out_folder / f".{HEALTH_PREFIX}{run_id}.json.tmp"
    with tmp.open("w") as out:
        json.dump(_finite(report), out, indent=1, sort_keys=False, allow_nan=False)
        out.flush()
        os.fsync(out.fileno())
    return tmp


def new_csv_path(out_folder: Path) -> Path:
    """A fresh `predictions_<UTC now>.csv` path whose stamp no output of an earlier run uses (one second later
    while it is taken: rescoring within one second, or detections left by a run killed before its predictions)."""
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    while True:
        candidate = out_folder / f"{CSV_PREFIX}{when.strftime(TIMESTAMP_FORMAT)}.csv"
        if not any(p.exists() for p in (candidate, *sibling_outputs(candidate), events_path(candidate),
                                        health_path(candidate))):
            return candidate
        when += dt.timedelta(seconds=1)


def assemble_csv(out_folder: Path, run_id: str, parts: list[str], prefix: str = CSV_PREFIX) -> Path:
    """Concatenate the part files (in the given order) into the temporary CSV `.<prefix><run_id>.csv.tmp`;
    returns its path (not yet public). Idempotent: a retry rewrites the temporary file from the parts.
    """
    if not parts:
        raise ScoringError(f"no scored shards to write for {out_folder}: this is a bug, please report it")
    tmp = out_folder / f".{prefix}{run_id}.csv.tmp"
    header: str | None = None
    with tmp.open("w", newline="") as out:
        for part in parts:
            with open(part, newline="") as f:
                first = f.readline()
                if header is None:
                    header = first
                    out.write(first)
                elif first != header:
                    raise ScoringError(f"part {part} has different columns than {parts[0]}: parts of two models?")
                shutil.copyfileobj(f, out)
        out.flush()
        os.fsync(out.fileno())  # The bytes are on disk before the rename makes them visible.
    return tmp


def assemble_raven(out_folder: Path, run_id: str, predictions: Path, selections: Path, folder: str | Path,
                   high_freq_hz: float) -> Path:
    """A Raven selection table (tab-separated) from the assembled predictions and `selections` (the events CSV,
    or the detections CSV: both have file, start_s, end_s, label, confidence): one selection per row,
    `Begin Time (s)` counted over the folder's files end to end (Raven's multi-file view), `Begin Path` and
    `File Offset (s)` naming the file and the time in it. `High Freq (Hz)` is the band the model saw of that
    file: half the lower of its own sample rate and the model's (`high_freq_hz`, the model's Nyquist), read from
    its header (the model's when the header cannot be read). Returns the temporary path."""
    offsets: dict[str, float] = {}
    bands: dict[str, float] = {}
    elapsed = 0.0
    with predictions.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] == "ok":
                offsets[row["file"]] = elapsed
                elapsed += float(row["duration_s"])

    def band(file: str) -> float:
        if file not in bands:
            info = audio_info(Path(folder) / file)
            bands[file] = min(high_freq_hz, info.sample_rate / 2) if info is not None else high_freq_hz
        return bands[file]

    tmp = out_folder / f".{RAVEN_PREFIX}{run_id}{RAVEN_SUFFIX}.tmp"
    with selections.open(newline="") as f, tmp.open("w", newline="") as out:
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(RAVEN_COLUMNS)
        for n, row in enumerate(csv.DictReader(f), start=1):
            start, end, base = float(row["start_s"]), float(row["end_s"]), offsets[row["file"]]
            writer.writerow([n, "Spectrogram 1", 1, _seconds(base + start), _seconds(base + end), "0",
                             f"{band(row['file']):g}", str(Path(folder) / row["file"]), row["start_s"],
                             row["label"], row["confidence"]])
        out.flush()
        os.fsync(out.fileno())
    return tmp


def publish_csv(tmp: Path, final: Path) -> Path:
    """Rename an assembled file to its final name, atomically (same folder, same filesystem)."""
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def remove_run_files(out_folder: Path, run_id: str | None = None) -> list[Path]:
    """Remove temporary files of `run_id` (or of every run: stale leftovers); never touches published files.
    A shadow comparison's temporary files are named by time, not run: any found under the lock are stale."""
    prefixes = (CSV_PREFIX, DETECTIONS_PREFIX, EVENTS_PREFIX, RAVEN_PREFIX, HEALTH_PREFIX)
    patterns = [f".{prefix}{run_id or '*'}.*.tmp" for prefix in prefixes] + [f".{SHADOW_PREFIX}*.tmp"]
    patterns.append(f".parts_{run_id or '*'}")
    removed = []
    for path in [p for pattern in patterns for p in out_folder.glob(pattern)]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
