"""How a probability vector becomes a prediction and CSV cells, the same for every predictions CSV we write
(`test_predictions_resnet.csv`, `toolchain predict`, and scoring's `predictions_<UTC>.csv`)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np


class Aggregation(str, Enum):
    """How a file's window probabilities become its file-level probabilities (and label).

    mean: the average of the windows' probability vectors (a distribution; the default, steady on long files);
    max: each class's highest window probability (finds a short event in a long file; not a distribution).
    """

    mean = "mean"
    max = "max"


AGGREGATIONS = tuple(a.value for a in Aggregation)


def aggregate(window_probabilities: np.ndarray, rule: Aggregation | str = Aggregation.mean) -> np.ndarray:
    """(windows, classes) -> (classes,) by `rule`."""
    probs = np.asarray(window_probabilities, dtype=np.float64)
    return probs.max(axis=0) if Aggregation(rule) is Aggregation.max else probs.mean(axis=0)


def probability_columns(classes: Sequence[str]) -> list[str]:
    """`prob_<class>` for every class, in the model's class order."""
    return [f"prob_{c}" for c in classes]


def format_probability(p: float) -> str:
    return f"{p:.6f}"


def top_class(probabilities: Sequence[float] | np.ndarray, classes: Sequence[str]) -> tuple[str, float]:
    """(label, confidence): the most probable class and its probability."""
    probs = np.asarray(probabilities, dtype=np.float64)
    best = int(np.argmax(probs))
    return classes[best], float(probs[best])


def format_prediction(probabilities: Sequence[float] | np.ndarray,
                      classes: Sequence[str]) -> tuple[str, str, list[str]]:
    """(label, confidence, one cell per class) as CSV cells."""
    label, confidence = top_class(probabilities, classes)
    return label, format_probability(confidence), [format_probability(float(p)) for p in probabilities]
