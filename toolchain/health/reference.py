"""What "normal" looks like for a model: summaries of its outputs on the validation windows, and a calibration.

Everything is per window, and every file weighs the same (a file's windows share a weight of 1): a 2-hour
recording does not outweigh a hundred clips, and for clips no longer than the model's window (one window each)
the figures are plain per-file figures. Histograms use `BINS` equal bins over [0, 1] for the top-class
probability ("confidence") and for the entropy divided by log(classes) ("normalized entropy").

Calibration is temperature scaling (Guo et al. 2017) on the windows' log-probabilities: `softmax(log p / T)`
equals `softmax(logits / T)`, so a scorer that keeps only probabilities applies it exactly. T is fitted on the
validation windows by weighted negative log-likelihood; the mean calibrated confidence of a run's windows is its
expected accuracy (what NannyML's CBPE does for a classifier, without labels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from toolchain.errors import HealthError

BINS = 50  # 0.02 wide: finer than any threshold we judge, coarse enough to keep the model metadata ~2 KB.
REFERENCE_VERSION = 1
TEMPERATURE_RANGE = (0.05, 20.0)
_EPS = 1e-12


def window_stats(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, classes) probabilities -> (confidence, normalized entropy, predicted class) per window."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0)
    classes = p.shape[1]
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(classes) if classes > 1 else np.zeros(len(p))
    return p.max(axis=1), np.clip(entropy, 0.0, 1.0), p.argmax(axis=1)


def histogram(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted counts in `BINS` equal bins over [0, 1] (1.0 falls in the last bin)."""
    index = np.minimum((np.asarray(values) * BINS).astype(np.int64), BINS - 1)
    return np.bincount(index, weights=weights, minlength=BINS)


def calibrated_confidence(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Top-class probability of `softmax(log p / T)` per window."""
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e.max(axis=1) / e.sum(axis=1)


def file_weights(file_index: np.ndarray) -> np.ndarray:
    """1 / (windows of its file) for every window: each file weighs 1 in total."""
    file_index = np.asarray(file_index)
    _, inverse, counts = np.unique(file_index, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def fit_temperature(probabilities: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    """The T in `TEMPERATURE_RANGE` minimizing the weighted NLL of `softmax(log p / T)` against `targets`."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0))
    rows = np.arange(len(logp))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-(weights * log_softmax[rows, targets]).sum() / weights.sum())

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


@dataclass(frozen=True)
class Reference:
    """The model's outputs on its validation windows, summarized (JSON-able through `to_dict`)."""

    files: int
    windows: int
    class_mix: tuple[float, ...]  # Share of files predicted as each class (model class order; sums to 1).
    confidence_hist: tuple[float, ...]  # Share of files per confidence bin (BINS bins; sums to 1).
    entropy_hist: tuple[float, ...]  # Share of files per normalized-entropy bin.
    temperature: float  # Calibration: softmax(log p / T).
    accuracy: float  # Measured on the validation windows (files weighted equally).
    expected_accuracy: float  # Mean calibrated confidence there (close to `accuracy` once T is fitted).
    source: str = ""  # Where it came from, e.g. "validation windows, epoch 12".
    version: int = REFERENCE_VERSION

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("class_mix", "confidence_hist", "entropy_hist"):
            values[key] = [round(float(v), 6) for v in values[key]]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], classes: int) -> Reference:
        """Parse and check a stored reference; raises `HealthError` naming what is wrong."""
        if not isinstance(values, dict) or values.get("version") != REFERENCE_VERSION:
            raise HealthError(f"the model's health reference is not version {REFERENCE_VERSION}: re-export the "
                              "model with this toolchain")
        try:
            ref = cls(**{**values, **{k: tuple(float(v) for v in values[k])
                                      for k in ("class_mix", "confidence_hist", "entropy_hist")}})
        except (TypeError, KeyError, ValueError) as exc:
            raise HealthError(f"the model's health reference is damaged ({exc}): re-export the model") from None
        if len(ref.class_mix) != classes or len(ref.confidence_hist) != BINS or len(ref.entropy_hist) != BINS:
            raise HealthError(f"the model's health reference does not fit {classes} classes and {BINS} bins: "
                              "re-export the model")
        return ref


def build_reference(probabilities: np.ndarray, file_index: np.ndarray, targets: np.ndarray,
                    source: str = "") -> Reference:
    """The reference of validation windows: `probabilities` (windows, classes), `file_index` (windows,) the file
    of each window, `targets` (windows,) its file's true class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probabilities.ndim != 2 or not len(probabilities) or len(file_index) != len(probabilities) \
            or len(targets) != len(probabilities):
        raise HealthError(f"cannot build a health reference from {probabilities.shape} probabilities, "
                          f"{len(file_index)} file indices and {len(targets)} targets: no validation windows?")
    weights = file_weights(file_index)
    files = float(weights.sum())
    confidence, entropy, predicted = window_stats(probabilities)
    temperature = fit_temperature(probabilities, targets, weights)
    mix = np.bincount(predicted, weights=weights, minlength=probabilities.shape[1]) / files
    return Reference(
        files=int(round(files)), windows=len(probabilities), class_mix=tuple(mix),
        confidence_hist=tuple(histogram(confidence, weights) / files),
        entropy_hist=tuple(histogram(entropy, weights) / files), temperature=temperature,
        accuracy=float((weights * (predicted == targets)).sum() / files),
        expected_accuracy=float((weights * calibrated_confidence(probabilities, temperature)).sum() / files),
        source=source,
    )


def stored_reference(values: dict[str, Any] | None, classes: int) -> tuple[Reference | None, str]:
    """(reference, "") from a model's `health_reference` metadata, or (None, why not): a missing or damaged
    reference never stops scoring, it only turns the verdict into `no_reference`."""
    if values is None:
        return None, ""
    try:
        return Reference.from_dict(values, classes), ""
    except HealthError as exc:
        return None, str(exc)
