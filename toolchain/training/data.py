"""Labelled datasets: a folder-per-class tree or a CSV manifest -> `Sample`s, and a leak-free train/val split.

Two layouts are accepted for `--data` / `--test`:
  * a folder whose subfolders are the classes (`data/dog/a.wav`, `data/cat/sub/b.WAV`; audio found recursively);
  * a CSV manifest with columns `filename,label` and an optional `group` (paths relative to the CSV's folder or
    absolute). A group (speaker, recording session, ...) never straddles train and val.

Byte-identical files (real datasets have them) are treated as one group too, so a copy of a training clip can
never inflate validation accuracy.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.audio.decode import find_audio_files, is_audio_path, is_hidden
from toolchain.errors import DatasetError
from toolchain.io import file_sha256

REQUIRED_COLUMNS = ("filename", "label")


@dataclass(frozen=True)
class Sample:
    """One labelled clip. `path` is absolute; `group` is None when the dataset has no groups."""

    path: str
    label: str
    group: str | None = None


def load_dataset(path: str | Path, *, min_classes: int = 2, notes: list[str] | None = None) -> list[Sample]:
    """Read a folder-per-class tree or a CSV manifest; every listed file present, at least `min_classes` labels.

    Samples come back in a deterministic order (tree: sorted by class then path; CSV: row order). A file listed
    with two labels is refused; a file listed twice with one label is kept once, and `notes` (when given) says so.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist: pass a folder with one subfolder per class or a CSV "
                           "manifest with filename,label columns")
    samples = _load_tree(path) if path.is_dir() else _load_manifest(path, notes if notes is not None else [])
    classes = sorted({s.label for s in samples})
    if len(classes) < min_classes:
        raise DatasetError(f"dataset {path} has only one class ({classes[0]!r}): a classifier needs at least two "
                           "labels (one subfolder or CSV label per class)")
    return samples


def _load_tree(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)):
        samples += [Sample(str(f.resolve()), class_dir.name) for f in find_audio_files(class_dir)]
    if not samples:
        raise DatasetError(f"no audio files found in class subfolders of {root}: expected {root}/<label>/<clip>.wav "
                           "(extensions: .wav .flac .ogg .mp3 ...)")
    return samples


def read_manifest_rows(csv_path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> list[dict[str, str]]:
    """Rows of a CSV manifest as dicts; a clear error for unreadable files and missing columns."""
    if is_audio_path(csv_path):
        raise DatasetError(f"{csv_path} is an audio file: pass the folder that holds it, or a CSV manifest")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read CSV manifest {csv_path} ({type(exc).__name__}: {exc}): pass a UTF-8 CSV "
                           f"with columns {','.join(required)}") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetError(f"CSV manifest {csv_path} lacks column(s) {', '.join(missing)} (found: "
                           f"{', '.join(columns) or 'none'}): the header must include {','.join(required)}")
    return rows


def resolve_listed(csv_path: Path, filename: str) -> Path:
    """A manifest path: absolute as given, otherwise relative to the CSV's folder."""
    p = Path(filename).expanduser()
    return p if p.is_absolute() else (csv_path.parent / p).resolve()


def _one_per_file(csv_path: Path, samples: list[Sample], notes: list[str]) -> list[Sample]:
    """Refuse a file listed with two labels; keep one row of a file listed more than once."""
    labels: dict[str, set[str]] = {}
    for s in samples:
        labels.setdefault(s.path, set()).add(s.label)
    conflicts = {p: sorted(ls) for p, ls in labels.items() if len(ls) > 1}
    if conflicts:
        shown = "; ".join(f"{p} as {' and '.join(ls)}" for p, ls in list(conflicts.items())[:3])
        more = f" (+{len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise DatasetError(f"CSV manifest {csv_path} lists {len(conflicts)} file(s) with two labels ({shown}{more}): "
                           "a clip has one label; fix or delete the wrong rows")
    first: dict[str, Sample] = {}
    for s in samples:
        first.setdefault(s.path, s)
    unique = list(first.values())  # The first row of each file, in row order.
    if len(unique) < len(samples):
        notes.append(f"{len(samples) - len(unique)} duplicate row(s) in {csv_path} (the same file listed again "
                     "with the same label) were dropped: each file counts once")
    return unique


def _load_manifest(csv_path: Path, notes: list[str]) -> list[Sample]:
    rows = read_manifest_rows(csv_path)
    has_group = any(row.get("group") for row in rows)
    samples: list[Sample] = []
    missing: list[str] = []
    for line, row in enumerate(rows, start=2):
        if not row["filename"] or not row["label"]:
            raise DatasetError(f"CSV manifest {csv_path} line {line} has an empty filename or label: fill it in or "
                               "delete the row")
        path = resolve_listed(csv_path, row["filename"])
        if not path.is_file():
            missing.append(row["filename"])
            continue
        samples.append(Sample(str(path), row["label"], (row.get("group") or None) if has_group else None))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(f"{len(missing)} file(s) listed in {csv_path} do not exist ({shown}): paths are "
                           f"relative to {csv_path.parent}; fix or remove those rows")
    if not samples:
        raise DatasetError(f"CSV manifest {csv_path} lists no files: add filename,label rows")
    return _one_per_file(csv_path, samples, notes)


def list_inputs(path: str | Path) -> list[str]:
    """Files to predict on, absolute, in a stable order: a folder (audio found recursively), a CSV manifest with a
    `filename` column (labels optional; listed files that are missing become error rows later), or one audio file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"input {path} does not exist: pass a folder of audio files or a CSV with a filename column")
    if path.is_dir():
        files = [str(f.resolve()) for f in find_audio_files(path)]
        if not files:
            raise DatasetError(f"no audio files found under {path} (extensions: .wav .flac .ogg .mp3 ...)")
        return files
    if is_audio_path(path):
        return [str(path.resolve())]
    rows = read_manifest_rows(path, required=("filename",))
    files = [str(resolve_listed(path, row["filename"])) for row in rows if row["filename"]]
    if not files:
        raise DatasetError(f"CSV {path} lists no files: add rows under its filename column")
    return files


def content_hashes(samples: Iterable[Sample]) -> dict[str, str]:
    """path -> sha256 of the file bytes (one read per distinct path); unreadable files are left out (the feature
    cache reports them with their cause)."""
    hashes = {}
    for p in dict.fromkeys(s.path for s in samples):
        try:
            hashes[p] = file_sha256(p)
        except OSError:
            continue
    return hashes


def data_fingerprint(samples: Iterable[Sample], hashes: Mapping[str, str]) -> str:
    """A hash of what a dataset is: every file's content (sha256), label and group, whatever the paths or order.

    Checkpoints record it, so `--resume` can tell whether it is given the data the run was trained on.
    """
    lines = sorted(f"{hashes.get(s.path, 'unreadable ' + s.path)}\t{s.label}\t{s.group or ''}" for s in samples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _components(samples: Sequence[Sample], hashes: Mapping[str, str]) -> list[int]:
    """Union-find over samples: same group or same bytes -> same component. Returns a component id per sample."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    for i, s in enumerate(samples):
        keys = [("sha", hashes[s.path])] + ([("group", s.group)] if s.group is not None else [])
        for key in keys:
            j = first_seen.setdefault(key, i)
            parent[find(i)] = find(j)
    return [find(i) for i in range(len(samples))]


def split_dataset(
    samples: Sequence[Sample],
    val_fraction: float = 0.2,
    seed: int = 42,
    hashes: Mapping[str, str] | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Stratified, group- and duplicate-aware split into (train, val), deterministic for a seed.

    Units that may not be separated (a group; a set of byte-identical files; both merged when they overlap) are
    assigned whole, largest first, to whichever side brings val's per-class counts closer to
    `val_fraction` x the class totals (squared error). Without groups or duplicates this is an exact stratified
    split (per class, round(val_fraction x count) clips in val). `hashes` (path -> sha256) avoids re-reading files.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.2)")
    hashes = hashes if hashes is not None else content_hashes(samples)
    classes = sorted({s.label for s in samples})
    class_index = {c: i for i, c in enumerate(classes)}
    comp_of = _components(samples, hashes)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(comp_of):
        members.setdefault(c, []).append(i)
    if len(members) < 2:
        raise DatasetError(f"cannot split {len(samples)} files into train and val: they form one group (or are "
                           "identical copies); add files from other groups")

    units = list(members.values())
    order = np.random.default_rng(seed).permutation(len(units))  # Random tie-break among equal sizes.
    units = [units[i] for i in sorted(order, key=lambda i: -len(units[i]))]

    totals = np.bincount([class_index[s.label] for s in samples], minlength=len(classes)).astype(float)
    target = val_fraction * totals
    val_counts = np.zeros(len(classes))
    in_val = np.zeros(len(samples), dtype=bool)
    for unit in units:
        counts = np.bincount([class_index[samples[i].label] for i in unit], minlength=len(classes))
        before = np.sum((val_counts - target) ** 2)
        after = np.sum((val_counts + counts - target) ** 2)
        if after < before and in_val.sum() + len(unit) < len(samples):
            val_counts += counts
            in_val[unit] = True
    if not in_val.any():
        # Every unit is bigger than the val target: take the smallest one rather than return an empty val set.
        in_val[min(units, key=len)] = True
    train = [s for s, v in zip(samples, in_val) if not v]
    val = [s for s, v in zip(samples, in_val) if v]
    return train, val


def describe_split(train: Sequence[Sample], val: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """Per-class counts on each side (for summary.json)."""
    return {"train": dict(sorted(Counter(s.label for s in train).items())),
            "val": dict(sorted(Counter(s.label for s in val).items()))}
