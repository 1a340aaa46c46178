"""Reduced-precision variants of a certified fp32 model: INT8 (static QDQ, for CPU) and FP16 (for CUDA).

Each variant gets its own report (top-1 agreement with the fp32 ONNX model, probability drift, accuracy when
labels are known, throughput on the evaluation clips) and is kept only when the report passes its threshold;
otherwise the file is deleted and `VariantRejectedError` says why (machinery in `toolchain.variants`).

INT8 mode: without VNNI (this CPU: AVX2) the 8-bit kernels sum u8*s8 products in 16 bits, which can saturate;
ORT's docs advise 7-bit weights (`reduce_range=True`) or U8U8 there. Plain S8S8 measurably loses agreement here
(94 %), so it is never the default; see AUTO_ORDER for what `auto` does and why. The report records the mode.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.onnx_metadata import INPUT_NAME
from toolchain.onnx_session import CPU, CUDA, candidate_providers
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.report_io import write_json_atomic
from toolchain.variants import VariantRejectedError, VariantReport, build_and_judge, temp_path

INT8_MIN_AGREEMENT = 0.99  # Issue 3: an INT8 model must agree with fp32 on >= 99 % of clips.
FP16_MIN_AGREEMENT = 0.99  # Same bar for fp16: it must be a drop-in for fp32 on CUDA.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class Int8Mode(str, Enum):
    """Activation/weight integer types for ORT static quantization, or `auto` (see AUTO_ORDER)."""

    auto = "auto"  # Fastest mode that passes the agreement rule: u8s8-reduce, else u8u8.
    s8s8_reduce = "s8s8-reduce"  # Signed activations and 7-bit signed weights: no saturation without VNNI.
    u8s8_reduce = "u8s8-reduce"  # ORT's classic CPU pairing, 7-bit weights.
    u8u8 = "u8u8"  # Full 8-bit range on both, slower kernels on x86 but no saturation.
    s8s8 = "s8s8"  # ORT's QDQ default; can saturate on AVX2 without VNNI (kept for measurement only).


DEFAULT_INT8_MODE = Int8Mode.auto
# Measured on this AVX2 CPU with benchmarks/int8_modes.py: u8s8-reduce is the fast one (ResNet152
# 1.9x fp32) but agreed on 98.5 % of 600 clips with a weak resnet18; u8u8 agreed on 99.3 % but is barely faster
# on ResNet152. Trying the fast one first keeps speed where the model tolerates it and accuracy where not.
AUTO_ORDER = (Int8Mode.u8s8_reduce, Int8Mode.u8u8)


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


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    *,
    labels: list[str | None] | None = None,
    mode: Int8Mode = DEFAULT_INT8_MODE,
    calibrate: str = "minmax",
    min_agreement: float = INT8_MIN_AGREEMENT,
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
) -> VariantReport:
    """Static QDQ INT8 (per-channel weights, calibrated on `calibration` clips) -> `out_path`, judged.

    `calibration` and `evaluation`: float32 (n, channels, n_mels, frames) features, ideally disjoint.
    Kept only when top-1 agreement with the fp32 model on `evaluation` is >= `min_agreement`; otherwise the file
    is deleted and `VariantRejectedError` raised (its `.report` says why). The report (JSON at `report_path`) is
    written either way. `mode=auto` tries AUTO_ORDER and keeps the first that passes; the report lists the
    rejected attempts under `settings["rejected"]`.
    """
    if len(calibration) == 0:
        raise VariantRejectedError("no calibration clips for INT8: pass real audio with --parity-data")
    if calibrate not in CALIBRATION_METHODS:
        raise VariantRejectedError(f"calibration method {calibrate!r}: use one of {', '.join(CALIBRATION_METHODS)}")
    mode = Int8Mode(mode)
    modes = AUTO_ORDER if mode is Int8Mode.auto else (mode,)
    rejected: list[str] = []
    for attempt in modes:
        try:
            report = _quantize_one(Path(fp32_path), Path(out_path), calibration, evaluation, labels, attempt,
                                   calibrate, min_agreement, report_path, progress or NullProgress())
        except VariantRejectedError as exc:
            if attempt is modes[-1]:
                raise _with_attempts(exc, rejected, report_path) from None
            rejected.append(f"{attempt.value}: {exc.report.reason}")  # type: ignore[attr-defined]
            continue
        if rejected and report_path:
            report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected})
            write_json_atomic(report.to_dict(), Path(report_path))
        return report
    raise AssertionError("unreachable: AUTO_ORDER is not empty")


def _with_attempts(exc: VariantRejectedError, rejected: list[str], report_path) -> VariantRejectedError:
    """The last rejection, carrying the earlier ones in its report and message."""
    report = exc.report  # type: ignore[attr-defined]
    if not rejected:
        return exc
    report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected})
    if report_path:
        write_json_atomic(report.to_dict(), Path(report_path))
    error = VariantRejectedError(f"{exc} (also rejected: {'; '.join(rejected)})")
    error.report = report  # type: ignore[attr-defined]
    return error


def _quantize_one(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    labels: list[str | None] | None,
    mode: Int8Mode,
    calibrate: str,
    min_agreement: float,
    report_path: str | Path | None,
    progress: ProgressReporter,
) -> VariantReport:
    activation, weight, reduce_range = _quant_types(mode)

    def build(pending: Path) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quant_pre_process, quantize_static

        prepared = temp_path(pending, ".pre.onnx")
        try:
            progress.start("preprocess", f"INT8 {mode.value}: shape inference + graph optimization", None)
            quant_pre_process(str(fp32_path), str(prepared))
            progress.finish("preprocess")
            progress.start("calibrate", f"INT8 {mode.value}: calibrating", len(calibration))
            # MinMax keeps only per-tensor min/max per clip (ORT augments the graph with ReduceMin/ReduceMax).
            quantize_static(
                str(prepared), str(pending), _FeatureReader(calibration, progress),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=activation, weight_type=weight,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[calibrate]),
            )
            progress.finish("calibrate")
        finally:
            prepared.unlink(missing_ok=True)

    settings = {"format": "QDQ", "per_channel": True, "mode": mode.value, "reduce_range": reduce_range,
                "calibration": CALIBRATION_METHODS[calibrate], "calibration_clips": len(calibration)}
    progress.start("int8", f"INT8 {mode.value}: evaluating against fp32", None)
    try:
        return build_and_judge("int8", fp32_path, out_path, build, evaluation, labels, CPU, min_agreement, settings,
                               Path(report_path) if report_path else None)
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
    if provider == CPU:
        # ORT's CPU EP lacks float16 kernels for most ops and inserts casts to float32 around them: the figures
        # show the cost of rounding weights to float16, not CUDA's float16 arithmetic or speed.
        settings["note"] = "evaluated on the CPU EP (no CUDA device): weight rounding only, CPU float32 compute"
    progress.start("fp16", f"FP16: converting and evaluating on {provider.removesuffix('ExecutionProvider')}", None)
    try:
        return build_and_judge("fp16", Path(fp32_path), Path(out_path), build, evaluation, labels, provider,
                                min_agreement, settings, Path(report_path) if report_path else None)
    finally:
        progress.finish("fp16")
