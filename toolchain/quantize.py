"""Reduced-precision variants of a certified fp32 model: INT8 (static QDQ, for CPU) and FP16 (for CUDA).

Each variant gets its own report (top-1 agreement with the fp32 ONNX model, probability drift, accuracy when
labels are known, throughput on the evaluation clips) and is kept only when the report passes its threshold;
otherwise the file is deleted and `VariantRejectedError` says why.

INT8 mode: this CPU (AVX2, no VNNI) computes U8S8 products with 16-bit intermediate sums that can saturate; ORT's
quantization docs advise 7-bit weights (`reduce_range=True`) or U8U8 there. The default below was chosen by
measurement (see `INT8_MODES` and the project README): keep the mode in the report so a reader knows which it was.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ExportError
from toolchain.onnx_export import save_model_atomic
from toolchain.onnx_metadata import INPUT_NAME, read_metadata, write_metadata
from toolchain.onnx_session import CPU, CUDA, candidate_providers, open_session, run_onnx
from toolchain.parity import compare_logits
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.report_io import library_versions, write_json_atomic

EVAL_BATCH = 16  # Throughput figures use the scorer's default batch.
INT8_MIN_AGREEMENT = 0.99  # Issue 3: an INT8 model must agree with fp32 on >= 99 % of clips.
FP16_MIN_AGREEMENT = 0.99  # Same bar for fp16: it must be a drop-in for fp32 on CUDA.


class VariantRejectedError(ExportError):
    """A reduced-precision variant failed its report's threshold (or could not be built); it was deleted."""


class Int8Mode(str, Enum):
    """Activation/weight integer types for ORT static quantization."""

    s8s8_reduce = "s8s8-reduce"  # Signed activations and 7-bit signed weights: no saturation without VNNI.
    u8s8_reduce = "u8s8-reduce"  # ORT's classic CPU pairing, 7-bit weights.
    u8u8 = "u8u8"  # Full 8-bit range on both, slower kernels on x86 but no saturation.
    s8s8 = "s8s8"  # ORT's QDQ default; can saturate on AVX2 without VNNI (kept for measurement only).


DEFAULT_INT8_MODE = Int8Mode.s8s8_reduce


@dataclass(frozen=True)
class VariantReport:
    precision: str  # "int8" | "fp16"
    model_path: str
    kept: bool
    reason: str  # Why it was kept or deleted, one line.
    threshold: float  # Minimum top-1 agreement with fp32.
    provider: str  # Execution provider the variant was evaluated on.
    n_clips: int
    top1_agreement: float | None = None
    max_abs_prob_diff: float | None = None
    accuracy_fp32: float | None = None  # On labelled evaluation clips only.
    accuracy_variant: float | None = None
    clips_per_s_fp32: float | None = None
    clips_per_s_variant: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": "kept" if self.kept else "deleted"}


class _FeatureReader:
    """ORT `CalibrationDataReader` over a features array, one clip per call (MinMax keeps running extremes)."""

    def __init__(self, features: np.ndarray, progress: ProgressReporter):
        self._features = features
        self._next = 0
        self._progress = progress

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._features):
            return None
        batch = self._features[self._next : self._next + 1]
        self._next += 1
        self._progress.advance("calibrate")
        return {INPUT_NAME: np.ascontiguousarray(batch)}

    def rewind(self) -> None:
        self._next = 0


def _quant_types(mode: Int8Mode) -> tuple[Any, Any, bool]:
    from onnxruntime.quantization import QuantType

    return {
        Int8Mode.s8s8_reduce: (QuantType.QInt8, QuantType.QInt8, True),
        Int8Mode.u8s8_reduce: (QuantType.QUInt8, QuantType.QInt8, True),
        Int8Mode.u8u8: (QuantType.QUInt8, QuantType.QUInt8, False),
        Int8Mode.s8s8: (QuantType.QInt8, QuantType.QInt8, False),
    }[mode]


def _timed_logits(session, features: np.ndarray) -> tuple[np.ndarray, float]:
    """Logits and clips/s at EVAL_BATCH, after one warm-up batch (first runs pay for allocations)."""
    run_onnx(session, features[:EVAL_BATCH], EVAL_BATCH)
    start = time.perf_counter()
    logits = run_onnx(session, features, EVAL_BATCH)
    return logits, len(features) / max(time.perf_counter() - start, 1e-9)


def _accuracy(logits: np.ndarray, labels: list[str | None], classes: tuple[str, ...]) -> float | None:
    if not labels or any(label is None for label in labels):
        return None
    predicted = [classes[i] for i in logits.argmax(axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, labels)]))


def _temp_path(out_path: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=suffix, dir=out_path.parent)
    os.close(fd)
    return Path(tmp)


def _save_variant_metadata(fp32_path: Path, variant_path: Path, precision: str) -> None:
    """Copy the fp32 model's metadata onto the variant, with its precision (ORT's tools drop metadata_props)."""
    import onnx

    meta = dataclasses.replace(read_metadata(fp32_path), precision=precision)
    proto = onnx.load(str(variant_path))
    write_metadata(proto, meta)
    save_model_atomic(proto, variant_path)


def _evaluate(
    fp32_path: Path,
    variant_path: Path,
    features: np.ndarray,
    labels: list[str | None] | None,
    provider: str,
) -> dict[str, Any]:
    """Figures of the variant against the fp32 model, both in fresh sessions on the saved files."""
    classes = read_metadata(fp32_path).classes
    reference, fp32_speed = _timed_logits(open_session(fp32_path, CPU), features)
    session = open_session(variant_path, provider)
    actual = session.get_providers()[0]
    if actual != provider:
        raise VariantRejectedError(f"{provider} fell back to {actual}; cannot evaluate the variant there")
    logits, variant_speed = _timed_logits(session, features)
    figures = compare_logits(reference, logits)
    return {
        "provider": provider,
        "top1_agreement": figures["top1_agreement"],
        "max_abs_prob_diff": figures["max_abs_prob_diff"],
        "accuracy_fp32": _accuracy(reference, labels or [], classes),
        "accuracy_variant": _accuracy(logits, labels or [], classes),
        "clips_per_s_fp32": fp32_speed if provider == CPU else None,
        "clips_per_s_variant": variant_speed,
    }


def _keep_or_delete(
    pending: Path,
    out_path: Path,
    report: VariantReport,
    report_path: Path | None,
) -> VariantReport:
    """Publish the variant under `out_path` only when its report passes; otherwise delete it and raise."""
    report = dataclasses.replace(report, model_path=str(out_path))
    if report_path is not None:
        write_json_atomic(report.to_dict(), report_path)
    if report.kept:
        os.replace(pending, out_path)
        return report
    pending.unlink(missing_ok=True)
    out_path.unlink(missing_ok=True)  # A stale variant from an earlier export must not look current.
    where = f" (report: {report_path})" if report_path else ""
    exc = VariantRejectedError(f"{report.precision} model deleted: {report.reason}{where}")
    exc.report = report  # type: ignore[attr-defined]
    raise exc


def _judge_variant(precision: str, figures: dict[str, Any], threshold: float) -> tuple[bool, str]:
    agreement = figures["top1_agreement"]
    if agreement >= threshold:
        return True, f"top-1 agreement with fp32 {agreement:.2%} >= {threshold:.2%}"
    return False, (
        f"top-1 agreement with fp32 {agreement:.2%} < {threshold:.2%} on {figures['n_clips']} clips; "
        "use the fp32 model.onnx"
    )


def _build_and_judge(
    precision: str,
    fp32_path: Path,
    out_path: Path,
    build,
    evaluation: np.ndarray,
    labels: list[str | None] | None,
    provider: str,
    threshold: float,
    settings: dict[str, Any],
    report_path: Path | None,
) -> VariantReport:
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if len(evaluation) == 0:
        raise VariantRejectedError(f"no evaluation clips for the {precision} model: pass real audio with --parity-data")
    pending = _temp_path(out_path, ".pending")
    base = {
        "precision": precision, "model_path": str(out_path), "threshold": threshold, "provider": provider,
        "n_clips": len(evaluation), "settings": settings, "versions": library_versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        try:
            build(pending)
            _save_variant_metadata(fp32_path, pending, precision)
            figures = {**_evaluate(fp32_path, pending, evaluation, labels, provider), "n_clips": len(evaluation)}
        except Exception as exc:  # ORT's quantizer and EPs raise many types; the variant is rejected in one line.
            first = (str(exc).strip().splitlines() or [""])[0]
            report = VariantReport(**base, kept=False, reason=f"could not build or run it ({type(exc).__name__}: {first})")
            return _keep_or_delete(pending, out_path, report, report_path)
        kept, reason = _judge_variant(precision, figures, threshold)
        figures.pop("n_clips")
        report = VariantReport(**{**base, **figures}, kept=kept, reason=reason)
        return _keep_or_delete(pending, out_path, report, report_path)
    finally:
        pending.unlink(missing_ok=True)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    *,
    labels: list[str | None] | None = None,
    mode: Int8Mode = DEFAULT_INT8_MODE,
    min_agreement: float = INT8_MIN_AGREEMENT,
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
) -> VariantReport:
    """Static QDQ INT8 (per-channel weights, MinMax calibration on `calibration` clips) -> `out_path`, judged.

    `calibration` and `evaluation`: float32 (n, channels, n_mels, frames) features, ideally disjoint.
    Kept only when top-1 agreement with the fp32 model on `evaluation` is >= `min_agreement`; otherwise the file
    is deleted and `VariantRejectedError` raised. The report (JSON at `report_path`) is written either way.
    """
    progress = progress or NullProgress()
    if len(calibration) == 0:
        raise VariantRejectedError("no calibration clips for INT8: pass real audio with --parity-data")
    activation, weight, reduce_range = _quant_types(Int8Mode(mode))

    def build(pending: Path) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quant_pre_process, quantize_static

        prepared = _temp_path(pending, ".pre.onnx")
        try:
            progress.start("preprocess", "INT8: shape inference + graph optimization", None)
            quant_pre_process(str(fp32_path), str(prepared))
            progress.finish("preprocess")
            progress.start("calibrate", "INT8: calibrating", len(calibration))
            quantize_static(
                str(prepared), str(pending), _FeatureReader(calibration, progress),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=activation, weight_type=weight, calibrate_method=CalibrationMethod.MinMax,
            )
            progress.finish("calibrate")
        finally:
            prepared.unlink(missing_ok=True)

    settings = {"format": "QDQ", "per_channel": True, "mode": Int8Mode(mode).value, "reduce_range": reduce_range,
                "calibration": "MinMax", "calibration_clips": len(calibration)}
    progress.start("int8", "INT8: evaluating against fp32", None)
    try:
        return _build_and_judge("int8", Path(fp32_path), Path(out_path), build, evaluation, labels, CPU,
                                min_agreement, settings, Path(report_path) if report_path else None)
    finally:
        progress.finish("int8")


def convert_fp16(
    fp32_path: str | Path,
    out_path: str | Path,
    evaluation: np.ndarray,
    *,
    labels: list[str | None] | None = None,
    min_agreement: float = FP16_MIN_AGREEMENT,
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
) -> VariantReport:
    """Float16 weights and compute with float32 I/O (`features`/`logits` unchanged) -> `out_path`, judged.

    Meant for the CUDA EP; evaluated there when a CUDA device is usable, otherwise on the CPU EP (where ORT runs
    it, but its throughput says nothing about a GPU). Same keep/delete rule as INT8.
    """
    progress = progress or NullProgress()
    provider = CUDA if CUDA in candidate_providers() else CPU

    def build(pending: Path) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save_model(model, str(pending), save_as_external_data=False)

    settings = {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True}
    progress.start("fp16", f"FP16: converting and evaluating on {provider.removesuffix('ExecutionProvider')}", None)
    try:
        return _build_and_judge("fp16", Path(fp32_path), Path(out_path), build, evaluation, labels, provider,
                                min_agreement, settings, Path(report_path) if report_path else None)
    finally:
        progress.finish("fp16")
