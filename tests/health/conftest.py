"""Synthetic model outputs with known properties (the real-model checks live in tests/scoring/test_health.py)."""

from __future__ import annotations

import numpy as np
import pytest

CLASSES = 10


def outputs(rng: np.random.Generator, n: int, *, mix=None, sharpness: float = 3.0, scale: float = 1.0):
    """(probabilities (n, CLASSES), true labels (n,)) of a classifier whose logits favour the true class by
    `sharpness`; probabilities are softmax(logits * scale), so scale != 1 is a miscalibrated model."""
    labels = rng.choice(CLASSES, n, p=mix) if mix is not None else rng.integers(0, CLASSES, n)
    logits = rng.normal(0.0, 1.0, (n, CLASSES))
    logits[np.arange(n), labels] += sharpness
    z = logits * scale
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), labels


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def make_outputs():
    return outputs
