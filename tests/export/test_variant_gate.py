"""The variant gate's arithmetic on constructed logits: which flips cost a variant its certificate."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.errors import VariantRejectedError
from toolchain.export.variant_gate import (
    VariantCriterion,
    accuracy_drop_bound,
    judge,
    label_indices,
    mcnemar_p,
)

N_CLASSES = 6


def _logits(top: np.ndarray, p_top: np.ndarray, runner_up: np.ndarray | None = None, p_second: float | None = None):
    """(n, N_CLASSES) logits whose softmax puts `p_top` on class `top` (and `p_second` on `runner_up`); the rest
    share what is left."""
    n = len(top)
    probs = np.zeros((n, N_CLASSES))
    for i in range(n):
        rest = 1.0 - p_top[i]
        if runner_up is not None:
            probs[i, runner_up[i]] = p_second
            rest -= p_second
        others = [c for c in range(N_CLASSES) if c != top[i] and (runner_up is None or c != runner_up[i])]
        probs[i, others] = rest / len(others)
        probs[i, top[i]] = p_top[i]
    return np.log(probs).astype(np.float32)


@pytest.fixture
def clips():
    """600 clips: half of them fp32 is confident about (p 0.8, right), half near-ties (0.31 vs 0.30; right on 40 %
    of them)."""
    rng = np.random.default_rng(7)
    n = 600
    labels = rng.integers(0, N_CLASSES, n)
    confident = np.arange(n) < n // 2
    runner = (labels + 1) % N_CLASSES
    top = labels.copy()
    near_wrong = ~confident & (rng.random(n) >= 0.4)
    top[near_wrong] = (labels[near_wrong] + 2) % N_CLASSES  # fp32 wrong on these near-ties.
    reference = np.empty((n, N_CLASSES), dtype=np.float32)
    reference[confident] = _logits(top[confident], np.full(confident.sum(), 0.8))
    reference[~confident] = _logits(top[~confident], np.full((~confident).sum(), 0.31), runner[~confident], 0.30)
    return reference, labels, confident, top, runner


def _flip(logits: np.ndarray, rows: np.ndarray, to: np.ndarray) -> np.ndarray:
    """A variant that agrees with `logits` except on `rows`, where its top class becomes `to`."""
    out = logits.copy()
    for row, cls in zip(rows, to):
        out[row, cls] = out[row].max() + 0.05
    return out


def test_a_variant_that_flips_only_near_ties_passes(clips):
    reference, labels, confident, top, runner = clips
    # 3 % of all clips, between two wrong classes: the agreement rule (99 %) would reject it.
    near = np.flatnonzero(~confident & (top != labels))[:18]
    variant = _flip(reference, near, runner[near])
    decision = judge(reference, variant, labels)
    assert decision.rule == "labelled" and decision.kept, decision.reason
    figures = decision.figures
    assert figures["agreement"] == pytest.approx(1 - 18 / 600) and figures["confident_agreement"] == 1.0
    assert figures["confident_clips"] == 300 and figures["confident_flips"] == 0
    assert figures["accuracy_drop_bound"] == 0.0 and figures["accuracy_fp32"] == figures["accuracy_variant"]
    bins = {row["fp32_top_prob"]: row for row in figures["flips_by_fp32_confidence"]}
    assert bins["0.3-0.5"] == {"fp32_top_prob": "0.3-0.5", "clips": 300, "flips": 18}
    assert bins["0.7-0.9"]["flips"] == 0 and sum(r["clips"] for r in bins.values()) == 600
    # The same flips without labels: today's agreement rule, which rejects them.
    unlabelled = judge(reference, variant, None)
    assert unlabelled.rule == "agreement" and not unlabelled.kept and "97.00% < 99.00%" in unlabelled.reason


def test_a_variant_that_flips_confident_predictions_fails(clips):
    reference, labels, confident, top, runner = clips
    rows = np.flatnonzero(confident)[:3]  # 1 % of the confident clips, 0.5 % of all.
    decision = judge(reference, _flip(reference, rows, (top[rows] + 3) % N_CLASSES), labels)
    assert not decision.kept and decision.figures["confident_flips"] == 3
    assert "99.00% agreement on the 300 clips fp32 is confident about (p >= 0.5) < 99.50%" in decision.reason
    assert "\n" not in decision.reason and decision.reason.endswith("use the fp32 model.onnx")
    # One confident flip in 300 stays inside 99.5 %; a stricter confidence threshold setting changes nothing here.
    one = judge(reference, _flip(reference, rows[:1], (top[rows[:1]] + 3) % N_CLASSES), labels)
    assert one.kept and one.figures["confident_agreement"] == pytest.approx(299 / 300)


def test_a_real_accuracy_drop_fails_even_on_near_ties(clips):
    reference, labels, confident, top, runner = clips
    right_near = np.flatnonzero(~confident & (top == labels))[:12]  # 2 points of accuracy lost, no confident flip.
    decision = judge(reference, _flip(reference, right_near, runner[right_near]), labels)
    assert not decision.kept and decision.figures["confident_flips"] == 0
    assert decision.figures["right_to_wrong"] == 12 and decision.figures["wrong_to_right"] == 0
    assert decision.figures["accuracy_drop"] == pytest.approx(0.02)
    assert decision.figures["accuracy_drop_bound"] > 0.02 and "accuracy drop up to" in decision.reason
    assert decision.figures["mcnemar_p"] == pytest.approx(0.5**12)
    # A looser limit lets the same variant through: the bound, not a fixed count, decides.
    assert judge(reference, _flip(reference, right_near, runner[right_near]), labels,
                 VariantCriterion(max_accuracy_drop=0.05)).kept


def test_flips_that_cancel_out_are_not_an_accuracy_drop(clips):
    reference, labels, confident, top, runner = clips
    right = np.flatnonzero(~confident & (top == labels))[:4]
    wrong = np.flatnonzero(~confident & (top != labels))[:4]
    variant = _flip(_flip(reference, right, runner[right]), wrong, labels[wrong])
    decision = judge(reference, variant, labels)
    assert decision.figures["accuracy_drop"] == 0.0 and decision.kept, decision.reason


def test_accuracy_drop_bound_arithmetic():
    assert accuracy_drop_bound(0, 0, 500) == 0.0  # Identical decisions: nothing to bound.
    one_way = accuracy_drop_bound(5, 0, 500)
    assert 5 / 500 < one_way <= 12 / 500  # A margin above the observed drop, even when every flip goes one way.
    assert accuracy_drop_bound(5, 0, 500) == one_way  # Seeded: the same figures, the same verdict.
    assert accuracy_drop_bound(5, 5, 500) < one_way and accuracy_drop_bound(0, 5, 500) <= 0.0
    assert accuracy_drop_bound(5, 0, 5000) < one_way  # More clips, a tighter bound.
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 0) == pytest.approx(0.125) and mcnemar_p(0, 3) == 1.0


def test_labels_count_only_when_every_clip_has_a_known_one():
    classes = ("a", "b", "c")
    assert label_indices(["b", "a"], classes).tolist() == [1, 0]
    assert label_indices(["b", None], classes) is None and label_indices(["b", "z"], classes) is None
    assert label_indices([], classes) is None


def test_criterion_refuses_bad_values_and_describes_itself():
    with pytest.raises(VariantRejectedError, match="confidence 1.5"):
        VariantCriterion(confidence=1.5)
    with pytest.raises(VariantRejectedError, match="max accuracy drop -0.1"):
        VariantCriterion(max_accuracy_drop=-0.1)
    criterion = VariantCriterion(confidence=0.7)
    assert criterion.record(True)["rule"] == "labelled" and "p >= 0.7" in criterion.describe(True)
    assert criterion.record(False)["rule"] == "agreement" and criterion.describe(False).startswith("agreement: >= 99.0%")
    assert VariantCriterion(use_labels=False).record(True)["rule"] == "agreement"
