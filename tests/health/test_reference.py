import numpy as np
import pytest

from toolchain.errors import HealthError
from toolchain.health.reference import (
    BINS,
    Reference,
    build_reference,
    calibrated_confidence,
    file_weights,
    fit_temperature,
    stored_reference,
)


def test_temperature_undoes_a_known_miscalibration(rng):
    # Labels drawn from softmax(z) (a calibrated model), probabilities reported as softmax(3 z): T near 3.
    z = rng.normal(0.0, 2.0, (6000, 10))
    calibrated = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(10, p=row) for row in calibrated])
    sharp = np.exp(3 * z) / np.exp(3 * z).sum(axis=1, keepdims=True)
    assert 2.7 < fit_temperature(sharp, y, np.ones(len(y))) < 3.3


def test_calibrated_confidence_predicts_accuracy(rng, make_outputs):
    p, y = make_outputs(rng, 3000, scale=0.4)  # Underconfident, like a label-smoothed model.
    ref = build_reference(p[:1500], np.arange(1500), y[:1500])
    held_out = calibrated_confidence(p[1500:], ref.temperature).mean()
    measured = (p[1500:].argmax(axis=1) == y[1500:]).mean()
    assert abs(held_out - measured) < 0.03
    assert p[1500:].max(axis=1).mean() < measured - 0.1  # Uncalibrated, the confidence would be far off.


def test_each_file_weighs_one_whatever_its_windows():
    weights = file_weights(np.array([0, 0, 0, 0, 1, 2, 2]))
    assert np.allclose(weights, [0.25] * 4 + [1.0] + [0.5] * 2)
    # A 4-window file of class 0 and one window each of classes 1 and 2: a third each.
    p = np.eye(3)[[0, 0, 0, 0, 1, 2, 2]] * 0.9 + 0.1 / 3
    ref = build_reference(p, np.array([0, 0, 0, 0, 1, 2, 2]), np.array([0, 0, 0, 0, 1, 2, 2]))
    assert ref.files == 3 and ref.windows == 7
    assert np.allclose(ref.class_mix, [1 / 3] * 3)
    assert ref.accuracy == pytest.approx(1.0)
    assert sum(ref.confidence_hist) == pytest.approx(1.0) and len(ref.confidence_hist) == BINS


def test_round_trip_and_refusals(rng, make_outputs):
    p, y = make_outputs(rng, 200)
    ref = build_reference(p, np.arange(200), y, source="test")
    again = Reference.from_dict(ref.to_dict(), 10)
    assert again.temperature == ref.temperature and np.allclose(again.class_mix, ref.class_mix, atol=1e-6)
    assert stored_reference(None, 10) == (None, "")
    with pytest.raises(HealthError, match="does not fit 3 classes"):
        Reference.from_dict(ref.to_dict(), 3)
    damaged = {**ref.to_dict(), "class_mix": "x"}
    reference, why = stored_reference(damaged, 10)
    assert reference is None and "re-export" in why
    with pytest.raises(HealthError, match="no validation windows"):
        build_reference(np.zeros((0, 10)), np.zeros(0), np.zeros(0))
