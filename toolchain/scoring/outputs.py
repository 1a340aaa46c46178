"""Prediction CSVs: their columns, their names, and writing them so a killed run never leaves a partial one.

Layout under the output directory `<out>`:

  <out>/ledger.sqlite                               the run ledger (`toolchain.scoring.ledger`)
  <out>/<folder name>/predictions_<UTC YYYYmmddTHHMMSSZ>.csv    one complete CSV per scoring of that folder
  <out>/<folder name>/.lock                         held (flock) by the run scoring that folder
  <out>/<folder name>/.parts_<run_id>/part_NNNNN.csv   shard outputs of a run in progress (removed when done)
  <out>/<folder name>/.predictions_<run_id>.csv.tmp    the CSV being assembled (renamed into place when complete)

Rows are written to part files as they are scored (memory stays bounded), each part renamed into place when
complete; the final CSV is the parts concatenated in shard order, fsync'ed, then `os.replace`d to its final name:
readers see either no CSV or a complete one. Dot-files left by a killed run are removed by the next run that takes
the folder's lock.

Columns: file (posix path relative to the scored folder), label, confidence, status (ok | error), error (empty when
ok), prob_<class> for every class in the model's order, model_sha256 (of the .onnx file), run_id.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import InjectedFault, ScoringError
from toolchain.inference.predictions import format_probability, probability_columns
from toolchain.io import atomic_write, fsync_dir
from toolchain.scoring.engine import ScoredRow

CSV_PREFIX = "predictions_"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
FAULT_ENV = "TOOLCHAIN_FAULT_INJECT"
FAULT_STEPS = ("score", "write")


def csv_columns(classes: Iterable[str]) -> list[str]:
    return ["file", "label", "confidence", "status", "error", *probability_columns(classes), "model_sha256", "run_id"]


def row_values(row: ScoredRow, n_classes: int, model_sha256: str, run_id: str) -> list[str]:
    if row.status == "ok" and row.probabilities is not None:
        return [row.file, row.label, format_probability(row.confidence), "ok", "",
                *map(format_probability, row.probabilities), model_sha256, run_id]
    return [row.file, "", "", "error", row.error or "unknown error", *([""] * n_classes), model_sha256, run_id]


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


@dataclass(frozen=True)
class PartSummary:
    """What one shard wrote."""

    path: str
    files_ok: int
    files_error: int
    label_counts: dict[str, int] = field(default_factory=dict)


def write_part(path: Path, rows: Iterable[ScoredRow], classes: tuple[str, ...], model_sha256: str,
               run_id: str) -> PartSummary:
    """Stream `rows` (with a header) into the part file `path`, renamed into place only when complete."""
    labels: Counter[str] = Counter()
    errors = 0
    # Line-buffered: each row reaches the file as it is scored (progress is visible; the cost is one write per row).
    with atomic_write(path) as tmp, tmp.open("w", newline="", buffering=1) as f:
        writer = csv.writer(f)
        writer.writerow(csv_columns(classes))
        for row in rows:
            writer.writerow(row_values(row, len(classes), model_sha256, run_id))
            if row.status == "ok":
                labels[row.label] += 1
            else:
                errors += 1
    return PartSummary(str(path), sum(labels.values()), errors, dict(sorted(labels.items())))


def _free_csv_name(out_folder: Path) -> Path:
    """`predictions_<now>.csv`, a second later while that name is taken (rescoring within one second)."""
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    while (candidate := out_folder / f"{CSV_PREFIX}{when.strftime(TIMESTAMP_FORMAT)}.csv").exists():
        when += dt.timedelta(seconds=1)
    return candidate


def assemble_csv(out_folder: Path, run_id: str, parts: list[str], attempt: int = 1) -> Path:
    """Concatenate the part files (in the given order) into the temporary CSV; returns its path (not yet public).

    Idempotent: a retry rewrites the temporary file from the parts.
    """
    inject_fault("write", attempt)
    if not parts:
        raise ScoringError(f"no scored shards to write for {out_folder}: this is a bug, please report it")
    tmp = out_folder / f".{CSV_PREFIX}{run_id}.csv.tmp"
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


def new_csv_path(out_folder: Path) -> Path:
    """A fresh `predictions_<UTC now>.csv` path (one second later while that name is taken)."""
    return _free_csv_name(out_folder)


def publish_csv(tmp: Path, final: Path) -> Path:
    """Rename the assembled CSV to its final name, atomically (same folder, same filesystem)."""
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def remove_run_files(out_folder: Path, run_id: str | None = None) -> list[Path]:
    """Remove temporary files of `run_id` (or of every run: stale leftovers); never touches published CSVs."""
    pattern_tmp = f".{CSV_PREFIX}{run_id or '*'}.csv.tmp"
    pattern_parts = f".parts_{run_id or '*'}"
    removed = []
    for path in [*out_folder.glob(pattern_tmp), *out_folder.glob(pattern_parts)]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def inject_fault(step: str, attempt: int) -> None:
    """Fail `step` on its first N attempts when `TOOLCHAIN_FAULT_INJECT` says `step:N` (comma-separated list).

    Test-only sabotage of our own code, to prove that Prefect retries a transient I/O failure: e.g.
    `TOOLCHAIN_FAULT_INJECT=write:1` makes every folder's write step fail once, then succeed on the retry.
    Steps: score, write. Unset (the default) does nothing.
    """
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if name not in FAULT_STEPS or not count.isdigit():
            raise ScoringError(f"{FAULT_ENV}={spec!r} is malformed: use e.g. 'write:1' (steps: {FAULT_STEPS})")
        if name == step and attempt <= int(count):
            raise InjectedFault(f"injected transient failure in step '{step}', attempt {attempt} of the first "
                                f"{count} ({FAULT_ENV}={spec})")
