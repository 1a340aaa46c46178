"""From `--data`/`--test` to DataLoaders: labels, cached features, undecodable files set aside, the split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import LabelEncoder

from toolchain.errors import DatasetError
from toolchain.io import file_sha256
from toolchain.progress import ProgressReporter
from toolchain.training.cache import CachedFeatureDataset, FeatureCache
from toolchain.training.data import Sample, describe_split, load_dataset, split_dataset
from toolchain.training.runtime import Runtime


@dataclass(frozen=True)
class PreparedData:
    """Everything a run trains and reports on. Undecodable files are in `failures`, nowhere else."""

    classes: list[str]  # LabelEncoder order (sorted); index = class id.
    cache: FeatureCache
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]  # Decodable test clips.
    test_order: list[str]  # Every test path as listed (prediction rows keep this order, failures included).
    failures: dict[str, str]  # path -> cause, training and test files alike.
    hashes: dict[str, str]  # path -> sha256 of every decodable file.
    notes: tuple[str, ...] = ()  # What the user should know before training (undecodable files, empty val classes).

    @property
    def val_paths(self) -> list[str]:
        return [s.path for s in self.val]

    def split_counts(self) -> dict[str, dict[str, int]]:
        return describe_split(self.train, self.val)

    def test_duplicates_of_training(self) -> int:
        """Test clips byte-identical to a train/val clip (they inflate test accuracy; reported, not removed)."""
        seen = {self.hashes[s.path] for s in self.train + self.val}
        return sum(self.hashes[s.path] in seen for s in self.test)


def load_labelled(data: str, test: str | None,
                  notes: list[str] | None = None) -> tuple[list[Sample], list[Sample], list[str]]:
    """Training samples, test samples and the class list; test labels must be training classes. Notices about
    the data (dropped duplicate rows) are appended to `notes`."""
    samples = load_dataset(data, notes=notes)
    classes = [str(c) for c in LabelEncoder().fit([s.label for s in samples]).classes_]
    test_samples = load_dataset(test, min_classes=1, notes=notes) if test else []
    unknown = sorted({s.label for s in test_samples} - set(classes))
    if unknown:
        raise DatasetError(f"test set {test} has labels {unknown} that the training data {data} lacks: the model "
                           f"can only predict {classes}")
    return samples, test_samples, classes


def prepare_data(
    samples: list[Sample], test_samples: list[Sample], classes: list[str], cache: FeatureCache, *,
    val_fraction: float, seed: int, num_workers: int | None, progress: ProgressReporter,
    hashes: dict[str, str] | None = None, keep_out_of_training: Sequence[str] = (),
) -> PreparedData:
    """Cache features of every file (`num_workers` processes), drop undecodable ones, split the rest into
    train/val (`val_fraction`, `seed`: see `toolchain.training.data.split_dataset`).

    `keep_out_of_training`: files (by path or by content) that must not be trained on, e.g. an earlier run's
    validation files when it is resumed on new data; those present are moved to validation.
    """
    report = cache.ensure([s.path for s in samples + test_samples], hashes=hashes, num_workers=num_workers,
                          progress=progress)
    good = [s for s in samples if s.path not in report.failures]
    lost = sorted(set(classes) - {s.label for s in good})
    if lost:
        raise DatasetError(f"class(es) {lost} have no decodable files (e.g. {_example(samples, report.failures, lost)})"
                           ": fix or replace those files")
    train, val = split_dataset(good, val_fraction, seed, hashes=report.hashes)
    notes = []
    bad = [p for p in report.failures if p in {s.path for s in samples}]
    if bad:
        notes.append(f"{len(bad)} of {len(samples)} training file(s) cannot be decoded and are left out (e.g. "
                     f"{bad[0]}: {report.failures[bad[0]]})")
    if keep_out_of_training:
        train, val, moved = _hold_out(train, val, keep_out_of_training, report.hashes)
        notes.append(f"resumed on new data: {moved} of the checkpoint's {len(keep_out_of_training)} validation files "
                     "are in this data and stay out of training (moved to validation)")
    empty = sorted(set(classes) - {s.label for s in val})
    if empty:
        notes.append(f"class(es) {empty} have no validation clips (too few clips, or all in one group): validation "
                     "cannot measure them; add clips from other groups or raise --val-fraction")
    return PreparedData(
        classes=classes, cache=cache, train=train, val=val,
        test=[s for s in test_samples if s.path not in report.failures],
        test_order=[s.path for s in test_samples], failures=dict(report.failures), hashes=dict(report.hashes),
        notes=tuple(notes),
    )


def _hold_out(train: list[Sample], val: list[Sample], paths: Sequence[str],
              hashes: dict[str, str]) -> tuple[list[Sample], list[Sample], int]:
    """Move training samples that are one of `paths` (same path, or same bytes) to validation."""
    names, shas = set(paths), {file_sha256(p) for p in paths if Path(p).is_file()}

    def earlier_val(s: Sample) -> bool:
        return s.path in names or hashes.get(s.path) in shas

    held = [s for s in train if earlier_val(s)]
    kept = [s for s in train if not earlier_val(s)]
    return kept, val + held, sum(map(earlier_val, train + val))


def _example(samples: Sequence[Sample], failures: dict[str, str], labels: list[str]) -> str:
    path = next(s.path for s in samples if s.label in labels)
    return f"{path}: {failures[path]}"


def loader_for(
    data: PreparedData, samples: Sequence[Sample], batch_size: int, runtime: Runtime,
    generator: torch.Generator | None = None, balanced: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches of ((B, 3, n_mels, frames) float32, (B,) int64). With a `generator` (training): shuffled (or, with
    `balanced`, drawn with class-balanced weights), one random window per file; without (evaluation): every
    window in file order, aggregated per file by `evaluate`.

    Reading cached .npy files is ~0.1 ms per clip, so loading stays in this process (no loader workers).
    """
    index = {c: i for i, c in enumerate(data.classes)}
    dataset = CachedFeatureDataset(data.cache, [s.path for s in samples], [index[s.label] for s in samples],
                                   windows="random" if generator is not None else "all")
    sampler = None
    if balanced and generator is not None:  # Every class drawn equally often; an epoch is still len(samples) draws.
        counts = np.bincount(dataset.targets, minlength=len(data.classes))
        weights = torch.as_tensor([1.0 / counts[t] for t in dataset.targets], dtype=torch.double)
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True, generator=generator)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=generator is not None and sampler is None, sampler=sampler,
        generator=generator if sampler is None else None, num_workers=0, pin_memory=runtime.device.type == "cuda",
    )
