"""A run's windows, summarized so that shards merge by addition: what `assess` compares with the reference.

A shard adds every scored file's window probabilities (and counts its decode failures); shards run anywhere
(threads, Prefect tasks, Dask workers) and send back a `Sketch` (JSON-able, a few KB), which `merge` sums. The
cost is a few numpy operations per buffered block of windows: ~0.1 s per 10,000 one-window files here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from toolchain.health.reference import BINS, calibrated_confidence, histogram, window_stats

_FLUSH_WINDOWS = 4096  # Windows buffered before their statistics are folded in (bounded memory, vectorized).


@dataclass(frozen=True)
class Sketch:
    """Weighted sums over a run's files (each file's windows weigh 1 together)."""

    files: int = 0  # Files scored.
    failed: int = 0  # Files that did not decode.
    windows: int = 0
    class_mass: tuple[float, ...] = ()  # Per class: files' worth of windows predicted as it.
    confidence_hist: tuple[float, ...] = ()  # BINS bins.
    entropy_hist: tuple[float, ...] = ()
    calibrated: float = 0.0  # Sum over files of their windows' mean calibrated confidence.

    def merge(self, other: Sketch) -> Sketch:
        def add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
            if not a or not b:
                return a or b
            return tuple(float(x) for x in np.add(a, b))

        return Sketch(self.files + other.files, self.failed + other.failed, self.windows + other.windows,
                      add(self.class_mass, other.class_mass), add(self.confidence_hist, other.confidence_hist),
                      add(self.entropy_hist, other.entropy_hist), self.calibrated + other.calibrated)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Sketch:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def merge_sketches(sketches: Iterable[Sketch]) -> Sketch:
    total = Sketch()
    for s in sketches:
        total = total.merge(s)
    return total


class SketchBuilder:
    """Accumulates one shard's files: `add(window_probabilities)` per scored file, `fail()` per failed one."""

    def __init__(self, classes: int, temperature: float = 1.0):
        self.classes, self.temperature = classes, temperature
        self._blocks: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._buffered = 0
        self._files = self._failed = self._windows = 0
        self._mass = np.zeros(classes)
        self._confidence = np.zeros(BINS)
        self._entropy = np.zeros(BINS)
        self._calibrated = 0.0

    def add(self, window_probabilities: np.ndarray) -> None:
        """One file's (windows, classes) probabilities; windows with non-finite values (a model's NaN or inf
        outputs) are left out of the statistics, and a file with none left counts as failed."""
        block = np.asarray(window_probabilities, dtype=np.float64).reshape(-1, self.classes)
        block = block[np.isfinite(block).all(axis=1)]
        if not len(block):
            self._failed += 1
            return
        self._blocks.append(block)
        self._weights.append(np.full(len(block), 1.0 / len(block)))
        self._files += 1
        self._windows += len(block)
        self._buffered += len(block)
        if self._buffered >= _FLUSH_WINDOWS:
            self._flush()

    def fail(self) -> None:
        self._failed += 1

    def _flush(self) -> None:
        if not self._blocks:
            return
        p, w = np.concatenate(self._blocks), np.concatenate(self._weights)
        confidence, entropy, predicted = window_stats(p)
        self._mass += np.bincount(predicted, weights=w, minlength=self.classes)
        self._confidence += histogram(confidence, w)
        self._entropy += histogram(entropy, w)
        self._calibrated += float((w * calibrated_confidence(p, self.temperature)).sum())
        self._blocks, self._weights, self._buffered = [], [], 0

    def build(self) -> Sketch:
        self._flush()
        return Sketch(self._files, self._failed, self._windows, tuple(map(float, self._mass)),
                      tuple(map(float, self._confidence)), tuple(map(float, self._entropy)), self._calibrated)
