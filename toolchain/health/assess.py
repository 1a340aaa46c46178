"""A run's sketch against the model's reference: the statistics, a verdict, and the report (JSON, markdown).

Statistics (files are the sample size; each file's windows weigh 1 together):
  class mix     Jensen-Shannon distance (natural log, as Evidently) and PSI of the predicted-class shares, and a
                chi-squared test of homogeneity (run counts vs reference counts)
  confidence    two-sample Kolmogorov-Smirnov on the top-class probability (binned CDFs, which only errs toward
                "no change"), and the share of files below `low_confidence`
  entropy       the same K-S test on the normalized entropy
  expected accuracy   mean calibrated confidence (`toolchain.health.reference`), against the reference's

Verdict: a shift is `drift` when it is both real (test p-value below alpha / 3, Bonferroni over the three tests)
and large (JS or PSI over its threshold for the class mix, K-S statistic over its threshold for confidence and
entropy); real but small is `warn`. Large but not real is noise, `ok`: at 200 files the JS distance of a sample
of the reference itself is ~0.1, which is why Evidently's fixed threshold alone would cry wolf on small folders.
The expected accuracy falling by `accuracy_drop` is `drift` (by half of it, `warn`), and decode failures above
`failure_share` are `warn`. Fewer than `min_files` scored files is `insufficient`; a model without a reference
gets `no_reference`. The verdict is the worst signal. (The scorer writes `error` when a report could not be
computed at all: `toolchain.scoring.folder.health_report`.)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.errors import HealthError
from toolchain.health.reference import BINS, Reference
from toolchain.health.sketch import Sketch

_SEVERITY = {"ok": 0, "warn": 1, "drift": 2}
_PSI_FLOOR = 1e-4  # Evidently fills empty shares with 0.0001 before taking logs.
TESTS = 3  # Class mix, confidence, entropy: the Bonferroni divisor.


@dataclass(frozen=True)
class HealthThresholds:
    """When a run's outputs count as shifted. Defaults from Evidently (JS 0.1, PSI 0.1, p 0.05)."""

    alpha: float = 0.05  # Family-wise false-alarm rate of the three tests together.
    js_distance: float = 0.1  # Class mix: Evidently's categorical drift threshold (natural log).
    psi: float = 0.1  # Class mix: Evidently's PSI threshold ("moderate shift").
    ks_statistic: float = 0.15  # Confidence / entropy: the largest gap between the two CDFs that counts as large.
    accuracy_drop: float = 0.10  # Expected accuracy this far below the reference's: drift (half of it: warn).
    low_confidence: float = 0.5  # The "share below" figure's threshold (on the 1/BINS grid).
    failure_share: float = 0.05  # Decode failures above this share of the files: warn.
    min_files: int = 50  # Fewer scored files than this: insufficient (the tests would be noise).

    def __post_init__(self) -> None:
        for name in ("alpha", "js_distance", "psi", "ks_statistic", "accuracy_drop", "low_confidence",
                     "failure_share"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= (10 if name == "psi" else 1):
                raise HealthError(f"health threshold {name}={value!r} is out of range: pass a number in (0, 1]"
                                  + (" (psi: (0, 10])" if name == "psi" else ""))
        if not isinstance(self.min_files, int) or self.min_files < 1:
            raise HealthError(f"health threshold min_files={self.min_files!r} must be a whole number >= 1")

    @classmethod
    def parse(cls, text: str) -> HealthThresholds:
        """`"js_distance=0.15,min_files=100"` -> thresholds (the CLI's `--health-thresholds`)."""
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        given: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise HealthError(f"health threshold {item!r} is not NAME=VALUE with NAME one of {', '.join(names)}")
            try:
                given[key] = int(value) if key == "min_files" else float(value)
            except ValueError:
                raise HealthError(f"health threshold {key}={value!r} is not a number") from None
        return cls(**given)


@dataclass(frozen=True)
class Signal:
    name: str  # class_mix | confidence | entropy | expected_accuracy | decode_failures
    status: str  # ok | warn | drift
    message: str


@dataclass(frozen=True)
class HealthReport:
    """One folder run's health (JSON-able through `to_dict`)."""

    verdict: str
    reason: str  # One line: why this verdict.
    files: int
    windows: int
    failed: int
    thresholds: HealthThresholds
    figures: dict[str, float | None] = field(default_factory=dict)
    signals: tuple[Signal, ...] = ()
    shares: dict[str, list[float]] = field(default_factory=dict)  # Run vs reference class mix and histograms.
    reference: dict[str, Any] | None = None  # Its files, accuracy, expected accuracy, temperature, source.
    context: dict[str, Any] = field(default_factory=dict)  # Folder, CSV, model, run id, time.

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "files": self.files, "windows": self.windows,
                "failed": self.failed, **self.context, "figures": self.figures,
                "signals": [dataclasses.asdict(s) for s in self.signals],
                "thresholds": dataclasses.asdict(self.thresholds), "reference": self.reference,
                "shares": self.shares}


def _shares(values: tuple[float, ...] | np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    total = a.sum()
    return a / total if total > 0 else a


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, natural log (scipy's `jensenshannon`, which returns NaN for near-identical
    distributions: rounding makes the divergence slightly negative; clamped to 0 here)."""
    from scipy.special import rel_entr

    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    divergence = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / 2
    return float(np.sqrt(max(0.0, divergence)))


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    r, c = np.maximum(reference, _PSI_FLOOR), np.maximum(current, _PSI_FLOOR)
    return float(((c - r) * np.log(c / r)).sum())


def chi2_p(reference: np.ndarray, reference_n: int, current: np.ndarray, current_n: int) -> float:
    """Chi-squared test of homogeneity of two class mixes given as shares and sample sizes."""
    from scipy.stats import chi2_contingency

    table = np.vstack([reference * reference_n, current * current_n])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def ks_binned(reference: np.ndarray, reference_n: int, current: np.ndarray, current_n: int) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample K-S test on two binned distributions (shares per bin)."""
    from scipy.stats import kstwo

    d = float(np.abs(np.cumsum(reference) - np.cumsum(current)).max())
    n = max(1, round(reference_n * current_n / (reference_n + current_n)))
    return d, float(kstwo.sf(d, n))


def _judge(name: str, real: bool, large: bool, what: str) -> Signal:
    status = "drift" if real and large else "warn" if real else "ok"
    note = {"drift": "shifted", "warn": "shifted slightly (significant, under the size threshold)",
            "ok": "no significant shift"}[status]
    return Signal(name, status, f"{name.replace('_', ' ')} {note}: {what}")


def assess(sketch: Sketch, reference: Reference | None, thresholds: HealthThresholds = HealthThresholds(),
           context: dict[str, Any] | None = None, no_reference_reason: str = "") -> HealthReport:
    """Compare a run's `sketch` with the model's `reference` under `thresholds`."""
    context = context or {}
    counts = {"files": sketch.files, "windows": sketch.windows, "failed": sketch.failed}
    if reference is None:
        why = no_reference_reason or "the model carries no health reference (exported before health reports, " \
            "or from a checkpoint without one): retrain, then re-export, to get one"
        return HealthReport("no_reference", why, **counts, thresholds=thresholds, context=context)
    run_mix, ref_mix = _shares(sketch.class_mass), np.asarray(reference.class_mix)
    run_conf, ref_conf = _shares(sketch.confidence_hist), np.asarray(reference.confidence_hist)
    run_ent, ref_ent = _shares(sketch.entropy_hist), np.asarray(reference.entropy_hist)
    n, m = sketch.files, reference.files
    low_bins = int(math.floor(thresholds.low_confidence * BINS + 1e-9))
    figures: dict[str, float | None] = {
        "failure_share": sketch.failed / (sketch.files + sketch.failed) if sketch.files + sketch.failed else 0.0,
        "reference_expected_accuracy": reference.expected_accuracy,
        "reference_accuracy": reference.accuracy,
        "reference_low_confidence_share": float(ref_conf[:low_bins].sum()),
    }
    shares = {"reference_class_mix": [round(float(x), 6) for x in ref_mix],
              "reference_confidence": [round(float(x), 6) for x in ref_conf]}
    if n == 0:
        verdict, why = ("warn", f"none of the {sketch.failed} files decoded") if sketch.failed else \
            ("insufficient", "no file was scored")
        return HealthReport(verdict, why, **counts, thresholds=thresholds, figures=figures, shares=shares,
                            reference=_reference_summary(reference), context=context)
    chi_p = chi2_p(ref_mix, m, run_mix, n)
    ks_conf, ks_conf_p = ks_binned(ref_conf, m, run_conf, n)
    ks_ent, ks_ent_p = ks_binned(ref_ent, m, run_ent, n)
    expected = sketch.calibrated / n
    figures.update({
        "js_distance": js_distance(ref_mix, run_mix), "psi": psi(ref_mix, run_mix), "chi2_p": chi_p,
        "confidence_ks": ks_conf, "confidence_ks_p": ks_conf_p, "entropy_ks": ks_ent, "entropy_ks_p": ks_ent_p,
        "low_confidence_share": float(run_conf[:low_bins].sum()), "expected_accuracy": expected,
    })
    shares.update({"class_mix": [round(float(x), 6) for x in run_mix],
                   "confidence": [round(float(x), 6) for x in run_conf]})
    alpha = thresholds.alpha / TESTS
    drop = reference.expected_accuracy - expected
    whose = "the file's windows" if n == 1 else "windows (each file weighs 1)"
    signals = (
        _judge("class_mix", chi_p < alpha, figures["js_distance"] >= thresholds.js_distance
               or figures["psi"] >= thresholds.psi,
               f"JS distance {figures['js_distance']:.3f}, PSI {figures['psi']:.3f}, chi-squared p {chi_p:.2g}"),
        _judge("confidence", ks_conf_p < alpha, ks_conf >= thresholds.ks_statistic,
               f"K-S {ks_conf:.3f} (p {ks_conf_p:.2g}); {figures['low_confidence_share']:.1%} of "
               f"{whose} below "
               f"{thresholds.low_confidence:g} (reference {figures['reference_low_confidence_share']:.1%})"),
        _judge("entropy", ks_ent_p < alpha, ks_ent >= thresholds.ks_statistic, f"K-S {ks_ent:.3f} (p {ks_ent_p:.2g})"),
        Signal("expected_accuracy",
               "drift" if drop >= thresholds.accuracy_drop else "warn" if drop >= thresholds.accuracy_drop / 2
               else "ok",
               f"expected accuracy {expected:.1%} (reference {reference.expected_accuracy:.1%}, measured there "
               f"{reference.accuracy:.1%})"),
        Signal("decode_failures", "warn" if figures["failure_share"] > thresholds.failure_share else "ok",
               f"{sketch.failed} of {sketch.files + sketch.failed} files did not decode"),
    )
    if n < thresholds.min_files:
        verdict, reason = "insufficient", f"{n} files scored, fewer than min_files={thresholds.min_files}: " \
            "figures are reported, not judged"
    else:
        worst = max(signals, key=lambda s: _SEVERITY[s.status])
        verdict = worst.status
        flagged = [s.message for s in signals if s.status == verdict and verdict != "ok"]
        reason = "; ".join(flagged) if flagged else "outputs look like the reference"
    return HealthReport(verdict, reason, **counts, thresholds=thresholds, figures=figures, signals=signals,
                        shares=shares, reference=_reference_summary(reference), context=context)


def _reference_summary(reference: Reference) -> dict[str, Any]:
    return {"files": reference.files, "windows": reference.windows, "accuracy": reference.accuracy,
            "expected_accuracy": reference.expected_accuracy, "temperature": reference.temperature,
            "source": reference.source}
