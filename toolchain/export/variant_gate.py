"""When a reduced-precision variant may replace the fp32 model: the criterion, and its arithmetic on two sets of
logits. numpy only: no torch, no ONNX Runtime.

Two criteria. Without labels (or when any clip's label is unknown) the variant must agree with fp32's top-1 on at
least `min_agreement` of the clips: every flip counts the same. With labels, flips are judged by what they cost:

- **accuracy**: the variant may not be less accurate than fp32 beyond `max_accuracy_drop` (1 point), judged on the
  one-sided `level` (95 %) upper bound of the paired accuracy drop. The clips are paired (both models see the same
  clip), so only the discordant ones carry information: b clips fp32 got right and the variant wrong, c the other
  way; drop = (b - c) / n. The bound is a paired bootstrap over clips (the counts (b, c, rest) redrawn from their
  multinomial, seeded, so the same figures give the same verdict). McNemar's exact one-sided p value for "the
  variant is less accurate" is reported beside it. Why a bootstrap and not McNemar's conditional interval: when
  every discordant clip goes the same way the conditional bound equals the observed drop, no margin at all.
- **confident decisions**: the variant must agree with fp32 on at least `min_confident_agreement` (99.5 %) of the
  clips where fp32's top probability is at least `confidence` (0.5). A flip between two classes at 0.31 and 0.30 is
  not a decision anyone acts on; a flip of a confident one is.

Flips by fp32 confidence, overall agreement and both accuracies are reported either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from toolchain.errors import VariantRejectedError

CONFIDENCE_BINS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)  # fp32 top-probability bins the flips are counted in.
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class VariantCriterion:
    """What a variant must meet; `use_labels` False keeps the agreement rule even when labels are known."""

    min_agreement: float = 0.99  # Without labels: top-1 agreement with fp32 over all clips.
    use_labels: bool = True
    max_accuracy_drop: float = 0.01  # With labels: upper bound of (accuracy fp32 - accuracy variant).
    confidence: float = 0.5  # With labels: fp32 top probability that makes a clip's decision "confident".
    min_confident_agreement: float = 0.995  # With labels: agreement on the confident clips.
    level: float = 0.95  # One-sided confidence level of the accuracy-drop bound.
    resamples: int = 10_000  # Bootstrap resamples.

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_confident_agreement"):  # Above 1 no variant passes (tests use it).
            if not getattr(self, name) >= 0.0:
                raise VariantRejectedError(f"{name} {getattr(self, name)}: use a share in [0, 1], e.g. 0.99")
        if not 0.0 < self.confidence < 1.0:
            raise VariantRejectedError(f"confidence {self.confidence}: use a probability in (0, 1), e.g. 0.5")
        if not 0.0 <= self.max_accuracy_drop < 1.0:
            raise VariantRejectedError(f"max accuracy drop {self.max_accuracy_drop}: use a share in [0, 1), e.g. 0.01")
        if not 0.5 <= self.level < 1.0 or self.resamples < 100:
            raise VariantRejectedError(f"level {self.level} / resamples {self.resamples}: use e.g. 0.95 / 10000")

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> VariantCriterion:
        """The criterion a model's metadata recorded (`record`); the defaults for a model without one."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in (record or {}).items() if k in names})

    def describe(self, labelled: bool) -> str:
        """The rule in one line, as recorded in the model's metadata and shown by `verify-onnx`."""
        if labelled and self.use_labels:
            return (f"labelled: accuracy drop <= {self.max_accuracy_drop * 100:g} pt (one-sided {self.level:.0%} "
                    f"paired bootstrap bound) and >= {self.min_confident_agreement:.1%} top-1 agreement where fp32 "
                    f"p >= {self.confidence:g}")
        return f"agreement: >= {self.min_agreement:.1%} top-1 agreement with fp32 on every clip"

    def record(self, labelled: bool) -> dict[str, Any]:
        """The criterion as data (model metadata, reports): which rule applied, its thresholds, its one line."""
        rule = "labelled" if labelled and self.use_labels else "agreement"
        return {"rule": rule, "description": self.describe(labelled), **asdict(self)}


@dataclass(frozen=True)
class Decision:
    kept: bool
    reason: str  # One line: why kept or deleted.
    rule: str  # "labelled" | "agreement"
    figures: dict[str, Any] = field(default_factory=dict)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def label_indices(labels: Sequence[str | None] | None, classes: Sequence[str]) -> np.ndarray | None:
    """Class indices of `labels`, or None when any is missing or not one of `classes` (no labelled gate then)."""
    if not labels:
        return None
    index = {c: i for i, c in enumerate(classes)}
    if any(label is None or label not in index for label in labels):
        return None
    return np.array([index[label] for label in labels], dtype=np.int64)


def accuracy_drop_bound(right_to_wrong: int, wrong_to_right: int, n: int, level: float = 0.95,
                        resamples: int = 10_000, seed: int = BOOTSTRAP_SEED) -> float:
    """One-sided `level` upper bound of the paired accuracy drop (b - c) / n, by a paired bootstrap: the clips'
    outcome counts redrawn from their multinomial `resamples` times. 0 when no clip is discordant."""
    if n <= 0:
        raise ValueError("no clips")
    b, c = int(right_to_wrong), int(wrong_to_right)
    if b + c == 0:
        return 0.0
    draws = np.random.default_rng(seed).multinomial(n, [b / n, c / n, max(0.0, 1.0 - (b + c) / n)], size=resamples)
    drops = (draws[:, 0] - draws[:, 1]) / n
    return float(np.quantile(drops, level, method="higher"))


def mcnemar_p(right_to_wrong: int, wrong_to_right: int) -> float:
    """McNemar's exact one-sided p value that the variant is less accurate: P(X >= b), X ~ Bin(b + c, 1/2)."""
    b, d = int(right_to_wrong), int(right_to_wrong) + int(wrong_to_right)
    if d == 0:
        return 1.0
    return min(1.0, sum(math.comb(d, k) for k in range(b, d + 1)) / 2.0**d)


def flips_by_confidence(fp32_top: np.ndarray, flipped: np.ndarray) -> list[dict[str, Any]]:
    """Clips and flips per fp32 top-probability bin (CONFIDENCE_BINS)."""
    rows = []
    for low, high in zip(CONFIDENCE_BINS, CONFIDENCE_BINS[1:]):
        inside = (fp32_top >= low) & ((fp32_top < high) if high < 1.0 else (fp32_top <= high))
        rows.append({"fp32_top_prob": f"{low:g}-{high:g}", "clips": int(inside.sum()),
                     "flips": int((flipped & inside).sum())})
    return rows


def judge(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None,
          criterion: VariantCriterion = VariantCriterion()) -> Decision:
    """Judge `candidate` logits (the variant) against `reference` (fp32), both (n, n_classes), on the same clips;
    `labels`: their class indices (`label_indices`) or None."""
    n = len(reference)
    if n == 0 or candidate.shape != reference.shape:
        raise VariantRejectedError(f"cannot judge logits of shapes {candidate.shape} and {reference.shape}")
    fp32_top = _softmax(reference).max(axis=1)
    ref_label, var_label = reference.argmax(axis=1), candidate.argmax(axis=1)
    flipped = ref_label != var_label
    agreement = float(1.0 - flipped.mean())
    figures: dict[str, Any] = {"agreement": agreement, "flips": int(flipped.sum()),
                               "flips_by_fp32_confidence": flips_by_confidence(fp32_top, flipped)}
    if labels is None or not criterion.use_labels:
        if agreement >= criterion.min_agreement:
            return Decision(True, f"top-1 agreement with fp32 {agreement:.2%} >= {criterion.min_agreement:.2%}",
                            "agreement", figures)
        return Decision(False, f"top-1 agreement with fp32 {agreement:.2%} < {criterion.min_agreement:.2%} on {n} "
                        "clips; use the fp32 model.onnx", "agreement", figures)

    ref_right, var_right = ref_label == labels, var_label == labels
    b, c = int((ref_right & ~var_right).sum()), int((~ref_right & var_right).sum())
    drop = (b - c) / n
    bound = accuracy_drop_bound(b, c, n, criterion.level, criterion.resamples)
    confident = fp32_top >= criterion.confidence
    n_confident = int(confident.sum())
    confident_agreement = float(1.0 - flipped[confident].mean()) if n_confident else 1.0
    figures.update({
        "accuracy_fp32": float(ref_right.mean()), "accuracy_variant": float(var_right.mean()),
        "right_to_wrong": b, "wrong_to_right": c, "accuracy_drop": drop, "accuracy_drop_bound": bound,
        "mcnemar_p": mcnemar_p(b, c), "confident_clips": n_confident, "confident_agreement": confident_agreement,
        "confident_flips": int((flipped & confident).sum()),
    })
    failures = []
    if not bound <= criterion.max_accuracy_drop:
        failures.append(f"accuracy drop up to {bound * 100:.1f} pt at {criterion.level:.0%} "
                        f"(observed {drop * 100:+.1f} pt: {b} right->wrong, {c} wrong->right) > "
                        f"{criterion.max_accuracy_drop * 100:g} pt")
    if not confident_agreement >= criterion.min_confident_agreement:
        failures.append(f"{confident_agreement:.2%} agreement on the {n_confident} clips fp32 is confident about "
                        f"(p >= {criterion.confidence:g}) < {criterion.min_confident_agreement:.2%}")
    summary = (f"accuracy {ref_right.mean():.1%} -> {var_right.mean():.1%} (drop <= {bound * 100:.1f} pt at "
               f"{criterion.level:.0%}), {confident_agreement:.2%} agreement on {n_confident} confident clips, "
               f"{agreement:.2%} on all {n}")
    if failures:
        return Decision(False, f"{'; '.join(failures)} ({summary}); use the fp32 model.onnx", "labelled", figures)
    return Decision(True, summary, "labelled", figures)
