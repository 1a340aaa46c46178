"""The machinery every reduced-precision variant shares: build under a temporary name, evaluate against the fp32
model in fresh ORT sessions, write the report, keep the file only when the report passes. And the FP16 variant
(`convert_fp16`, for CUDA); the INT8 one, with its recipes, is `toolchain.export.int8`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from toolchain.errors import OutputPathError, VariantRejectedError, one_line
from toolchain.export.exporter import publishing, save_model_atomic
from toolchain.export.parity import compare_logits
from toolchain.export.variant_gate import VariantCriterion, judge, label_indices
from toolchain.export.versions import library_versions
from toolchain.inference.contract import read_metadata, write_metadata
from toolchain.inference.providers import CPU_EP, CUDA_EP
from toolchain.inference.session import candidate_providers, open_session, run_batches
from toolchain.io import write_json
from toolchain.progress import NullProgress, ProgressReporter

EVAL_BATCH = 16  # Throughput figures use the scorer's default batch.
# fp16 must be a drop-in for fp32 on CUDA: judged by agreement alone, labels or not.
FP16_CRITERION = VariantCriterion(min_agreement=0.99, use_labels=False)


@dataclass(frozen=True)
class VariantReport:
    precision: str  # "int8" | "fp16"
    model_path: str
    kept: bool
    reason: str  # Why it was kept or deleted, one line.
    threshold: float  # Minimum top-1 agreement with fp32 (the rule without labels).
    provider: str  # Execution provider the variant was evaluated on.
    n_clips: int
    top1_agreement: float | None = None
    max_abs_prob_diff: float | None = None
    accuracy_fp32: float | None = None  # On labelled evaluation clips only.
    accuracy_variant: float | None = None
    clips_per_s_fp32: float | None = None
    clips_per_s_variant: float | None = None
    # The rule applied (`variant_gate.VariantCriterion.record`) and its figures (`variant_gate.Decision.figures`:
    # flips by fp32 confidence; with labels the accuracy-drop bound and the confident clips' agreement).
    criterion: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": "kept" if self.kept else "deleted"}


def _timed_logits(session, features: np.ndarray) -> tuple[np.ndarray, float]:
    """Logits and clips/s at EVAL_BATCH, after one warm-up batch (first runs pay for allocations)."""
    run_batches(session, features[:EVAL_BATCH], EVAL_BATCH)
    start = time.perf_counter()
    logits = run_batches(session, features, EVAL_BATCH)
    return logits, len(features) / max(time.perf_counter() - start, 1e-9)


def _accuracy(logits: np.ndarray, labels: list[str | None], classes: tuple[str, ...]) -> float | None:
    if not labels or any(label is None for label in labels):
        return None
    predicted = [classes[i] for i in logits.argmax(axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, labels)]))


def _save_variant_metadata(fp32_path: Path, variant_path: Path, precision: str, gate: dict[str, Any]) -> None:
    """Copy the fp32 model's metadata onto the variant, with its precision and the rule it is judged by (ORT's
    tools drop metadata_props)."""
    meta = dataclasses.replace(read_metadata(fp32_path), precision=precision, gate=gate)
    proto = onnx.load(str(variant_path))
    write_metadata(proto, meta)
    save_model_atomic(proto, variant_path)


def evaluate_variant(
    fp32_path: Path,
    variant_path: Path,
    features: np.ndarray,
    labels: list[str | None] | None,
    provider: str,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(fp32 logits, variant logits, figures) on `features`, both models in fresh sessions on the saved files."""
    classes = read_metadata(fp32_path).classes
    reference, fp32_speed = _timed_logits(open_session(fp32_path, CPU_EP), features)
    session = open_session(variant_path, provider)
    actual = session.get_providers()[0]
    if actual != provider:
        raise VariantRejectedError(f"{provider} fell back to {actual}; cannot evaluate the variant there")
    logits, variant_speed = _timed_logits(session, features)
    figures = compare_logits(reference, logits)
    return reference, logits, {
        "provider": provider,
        "top1_agreement": figures["top1_agreement"],
        "max_abs_prob_diff": figures["max_abs_prob_diff"],
        "accuracy_fp32": _accuracy(reference, labels or [], classes),
        "accuracy_variant": _accuracy(logits, labels or [], classes),
        "clips_per_s_fp32": fp32_speed if provider == CPU_EP else None,
        "clips_per_s_variant": variant_speed,
    }


def build_and_judge(
    precision: str,
    fp32_path: Path,
    out_path: Path,
    build: Callable[[Path], None],
    evaluation: np.ndarray,
    labels: list[str | None] | None,
    provider: str,
    criterion: VariantCriterion,
    settings: dict[str, Any],
    report_path: Path | None,
) -> VariantReport:
    """Build the variant under a temporary name (`build(path)`), judge it against the fp32 model, write the
    report, and publish it as `out_path` only when the report passes; otherwise delete it (and any stale variant at
    `out_path`) and raise `VariantRejectedError` carrying the report. `OutputPathError` when the OS refuses the
    rename of a variant that passed (its report is removed, a stale variant too)."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if len(evaluation) == 0:
        raise VariantRejectedError(f"no evaluation clips for the {precision} model: pass real audio with --parity-data")
    classes = read_metadata(fp32_path).classes
    truth = label_indices(labels, classes)
    gate = criterion.record(truth is not None)
    base = {
        "precision": precision, "model_path": str(out_path), "threshold": criterion.min_agreement,
        "provider": provider, "n_clips": len(evaluation), "criterion": gate, "settings": settings,
        "versions": library_versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        with publishing(out_path, unpublished=[report_path] if report_path else []) as pending:
            try:
                build(pending)
                _save_variant_metadata(fp32_path, pending, precision, gate)
                reference, logits, figures = evaluate_variant(fp32_path, pending, evaluation, labels, provider)
            except Exception as exc:  # ORT's quantizer and EPs raise many types; the variant is rejected in one line.
                report = VariantReport(**base, kept=False, reason=f"could not build or run it ({one_line(exc)})")
            else:
                decision = judge(reference, logits, truth, criterion)
                report = VariantReport(**{**base, **figures}, kept=decision.kept, reason=decision.reason,
                                       decision=decision.figures)
            if report_path is not None:
                write_json(report.to_dict(), report_path)
            if not report.kept:
                out_path.unlink(missing_ok=True)  # A stale variant from an earlier export must not look current.
                where = f" (report: {report_path})" if report_path else ""
                raise VariantRejectedError(f"{precision} model deleted: {report.reason}{where}", report=report)
    except OutputPathError:  # It passed but did not land (no other recipe can fix that): neither may an earlier one.
        with suppress(OSError):
            out_path.unlink(missing_ok=True)
        raise
    return report


def convert_fp16(
    fp32_path: str | Path,
    out_path: str | Path,
    evaluation: np.ndarray,
    *,
    labels: list[str | None] | None = None,
    criterion: VariantCriterion = FP16_CRITERION,
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
) -> VariantReport:
    """Float16 weights and compute with float32 I/O (`features`/`logits` unchanged) -> `out_path`, judged.

    Meant for the CUDA EP; evaluated there when a CUDA device is usable, otherwise on the CPU EP (where ORT runs
    it, but its throughput says nothing about a GPU). Kept on top-1 agreement with fp32 alone (FP16_CRITERION).
    """
    progress = progress or NullProgress()
    provider = CUDA_EP if CUDA_EP in candidate_providers() else CPU_EP

    def build(pending: Path) -> None:
        # Deferred: onnxruntime.transformers takes seconds to import, and only an FP16 build needs it.
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save_model(model, str(pending), save_as_external_data=False)

    settings = {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True}
    if provider == CPU_EP:
        # ORT's CPU EP lacks float16 kernels for most ops and inserts casts to float32 around them: the figures
        # show the cost of rounding weights to float16, not CUDA's float16 arithmetic or speed.
        settings["note"] = "evaluated on the CPU EP (no CUDA device): weight rounding only, CPU float32 compute"
    progress.start("fp16", f"FP16: converting and evaluating on {provider.removesuffix('ExecutionProvider')}", None)
    try:
        return build_and_judge("fp16", Path(fp32_path), Path(out_path), build, evaluation, labels, provider,
                               criterion, settings, Path(report_path) if report_path else None)
    finally:
        progress.finish("fp16")
