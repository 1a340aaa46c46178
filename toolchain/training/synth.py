"""A small labelled audio dataset synthesized offline, for the demo: five sound classes a ResNet can tell apart.

Clips vary in length (0.8-4 s), level, pitch, sample rate and background noise, so the demo exercises resampling,
silence trimming and padding like real recordings do. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

Generator = Callable[[np.random.Generator, np.ndarray, int], np.ndarray]


def _tone(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    f0 = rng.uniform(180, 600)
    return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))


def _chirp(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    f0, f1 = rng.uniform(200, 500), rng.uniform(2_000, 5_000)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    return np.sin(phase)


def _noise_bursts(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    noise = rng.standard_normal(t.size)
    gate = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0).astype(float)
    return noise * gate


def _clicks(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    y = np.zeros(t.size)
    period = int(sr / rng.uniform(6, 14))
    y[::period] = 1.0
    decay = np.exp(-np.arange(int(0.01 * sr)) / (0.002 * sr))
    return np.convolve(y, decay)[: t.size]


def _beeps(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    f = rng.uniform(1_000, 3_000)
    gate = (np.sin(2 * np.pi * rng.uniform(3, 7) * t) > 0.6).astype(float)
    return np.sin(2 * np.pi * f * t) * gate


CLASSES: dict[str, Generator] = {
    "beeps": _beeps,
    "chirp": _chirp,
    "clicks": _clicks,
    "noise": _noise_bursts,
    "tone": _tone,
}
SAMPLE_RATES = (16_000, 22_050, 44_100)


@dataclass(frozen=True)
class DemoData:
    train: Path  # folder-per-class tree
    test: Path  # folder-per-class tree
    inbox: Path  # unlabelled "daily drops" to score, one subfolder per day


def synth_clip(label: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One clip of class `label`: (float32 samples, sample rate)."""
    sr = int(rng.choice(SAMPLE_RATES))
    t = np.arange(int(rng.uniform(0.8, 4.0) * sr)) / sr
    y = CLASSES[label](rng, t, sr)
    y = y / (np.max(np.abs(y)) + 1e-9) * rng.uniform(0.2, 0.9)
    y = y + rng.normal(0, 0.01, y.size)
    lead = np.zeros(int(rng.uniform(0, 0.5) * sr))  # Leading silence, trimmed by the feature contract.
    return np.concatenate([lead, y]).astype(np.float32), sr


def _write(folder: Path, name: str, label: str, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    y, sr = synth_clip(label, rng)
    sf.write(folder / name, y, sr, subtype="PCM_16")


def make_demo_data(out: str | Path, per_class: int = 12, test_per_class: int = 4, seed: int = 0) -> DemoData:
    """Write train/test trees and a two-day inbox under `out` (existing files are overwritten)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    data = DemoData(train=out / "train", test=out / "test", inbox=out / "inbox")
    for label in CLASSES:
        for i in range(per_class):
            _write(data.train / label, f"{label}_{i:03d}.wav", label, rng)
        for i in range(test_per_class):
            _write(data.test / label, f"{label}_{i:03d}.wav", label, rng)
    for day in ("2026-11-22", "2026-11-23"):
        for i, label in enumerate(list(CLASSES) * 2):
            _write(data.inbox / day, f"rec_{i:03d}.wav", label, rng)
    return data
