"""From `--data`/`--test` to DataLoaders: labels, cached features, undecodable files set aside, the split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sklearn.preprocessing import LabelEncoder

from toolchain.errors import DatasetError
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

    @property
    def val_paths(self) -> list[str]:
        return [s.path for s in self.val]

    def split_counts(self) -> dict[str, dict[str, int]]:
        return describe_split(self.train, self.val)

    def test_duplicates_of_training(self) -> int:
        """Test clips byte-identical to a train/val clip (they inflate test accuracy; reported, not removed)."""
        seen = {self.hashes[s.path] for s in self.train + self.val}
        return sum(self.hashes[s.path] in seen for s in self.test)


def load_labelled(data: str, test: str | None) -> tuple[list[Sample], list[Sample], list[str]]:
    """Training samples, test samples and the class list; test labels must be training classes."""
    samples = load_dataset(data)
    classes = [str(c) for c in LabelEncoder().fit([s.label for s in samples]).classes_]
    test_samples = load_dataset(test, min_classes=1) if test else []
    unknown = sorted({s.label for s in test_samples} - set(classes))
    if unknown:
        raise DatasetError(f"test set {test} has labels {unknown} that the training data {data} lacks: the model "
                           f"can only predict {classes}")
    return samples, test_samples, classes


def prepare_data(
    samples: list[Sample], test_samples: list[Sample], classes: list[str], cache: FeatureCache, *,
    val_fraction: float, seed: int, num_workers: int | None, progress: ProgressReporter,
) -> PreparedData:
    """Cache features of every file (`num_workers` processes), drop undecodable ones, split the rest into
    train/val (`val_fraction`, `seed`: see `toolchain.training.data.split_dataset`)."""
    report = cache.ensure([s.path for s in samples + test_samples], num_workers=num_workers, progress=progress)
    good = [s for s in samples if s.path not in report.failures]
    lost = sorted(set(classes) - {s.label for s in good})
    if lost:
        raise DatasetError(f"class(es) {lost} have no decodable files (e.g. {_example(samples, report.failures, lost)})"
                           ": fix or replace those files")
    train, val = split_dataset(good, val_fraction, seed, hashes=report.hashes)
    return PreparedData(
        classes=classes, cache=cache, train=train, val=val,
        test=[s for s in test_samples if s.path not in report.failures],
        test_order=[s.path for s in test_samples], failures=dict(report.failures), hashes=dict(report.hashes),
    )


def _example(samples: Sequence[Sample], failures: dict[str, str], labels: list[str]) -> str:
    path = next(s.path for s in samples if s.label in labels)
    return f"{path}: {failures[path]}"


def loader_for(
    data: PreparedData, samples: Sequence[Sample], batch_size: int, runtime: Runtime,
    generator: torch.Generator | None = None,
) -> torch.utils.data.DataLoader:
    """Batches of ((B, 3, n_mels, frames) float32, (B,) int64); shuffled when a `generator` is given.

    Reading cached .npy files is ~0.1 ms per clip, so loading stays in this process (no loader workers).
    """
    index = {c: i for i, c in enumerate(data.classes)}
    dataset = CachedFeatureDataset(data.cache, [s.path for s in samples], [index[s.label] for s in samples])
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator, num_workers=0,
        pin_memory=runtime.device.type == "cuda",
    )
