"""Reduced-precision variants of a certified fp32 model: INT8 (static QDQ, for CPU) and FP16 (for CUDA).

Each variant gets its own report (top-1 agreement with the fp32 ONNX model, probability drift, accuracy when
labels are known, throughput on the evaluation clips) and is kept only when the report passes its threshold;
otherwise the file is deleted and `VariantRejectedError` says why (machinery in `toolchain.export.variants`).

Which recipes `auto` tries depends on the CPU (`auto_order`, from `toolchain.io.cpu_isa`); the report records the
CPU's features and that order. INT8 on CPUs without VNNI (AVX2 only): ORT's fast kernel multiplies u8 activations by s8 weights and sums pairs of
products in 16 bits (vpmaddubsw), which saturates when two large activations meet two large weights. 7-bit
weights (`reduce_range`) rule that out but cost precision; full 8-bit weights saturate only where activations are
dense, and in a ResNet that is the first conv, fed the raw [0, 1] features. So the default recipe keeps 8-bit
weights on the fast kernel and leaves the first conv and the classifier in float (see AUTO_ORDER for figures).
The report's `settings` record the mode, what stayed float and how the ranges were calibrated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolchain.errors import VariantRejectedError
from toolchain.inference.contract import INPUT_NAME
from toolchain.inference.providers import CPU_EP, CUDA_EP
from toolchain.inference.session import candidate_providers
from toolchain.io import cpu_isa, write_json
from toolchain.progress import NullProgress, ProgressReporter

if TYPE_CHECKING:
    from toolchain.export.variants import VariantReport

INT8_MIN_AGREEMENT = 0.99  # An INT8 model must agree with fp32 on >= 99 % of clips.
FP16_MIN_AGREEMENT = 0.99  # Same bar for fp16: it must be a drop-in for fp32 on CUDA.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class Int8Mode(str, Enum):
    """Activation/weight integer types for ORT static quantization, or `auto` (see AUTO_ORDER)."""

    auto = "auto"  # The first recipe of AUTO_ORDER that passes the agreement rule.
    u8s8 = "u8s8"  # 8-bit signed weights on the fast kernel; saturation-prone on dense inputs (first conv: float).
    u8s8_reduce = "u8s8-reduce"  # ORT's advice without VNNI: 7-bit weights, fast kernel, never saturates.
    u8u8 = "u8u8"  # 8-bit weights, no saturation, but a slower kernel (ResNet152 1.3x fp32).
    s8s8_reduce = "s8s8-reduce"  # Signed activations: ORT runs a third of the convs in float here (1.2x).
    s8s8 = "s8s8"  # ORT's QDQ default; slow and saturating without VNNI (kept for measurement only).


DEFAULT_INT8_MODE = Int8Mode.auto
# Layers every mode leaves in float: the first conv (~1 % of ResNet152's FLOPs; the only layer fed dense inputs,
# where 8-bit weights saturate the fast kernel) and the classifier (a 2048 x classes Gemm, free in float).
FLOAT_ENDS = ("conv1", "fc")


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


DESCRIBED_LAYERS = 6  # Float layers a recipe's one-line description names; the rest are counted.


@dataclass(frozen=True)
class Int8Recipe:
    """How one INT8 model is built; `settings()` spells it out for the report.

    `keep_float` names layers by their PyTorch module ("conv1", "fc", "layer4.2.conv3": the name of the weight
    initializer without ".weight") or a prefix of it ("layer4.2": the whole block), so one recipe fits every
    ResNet depth. `op_types` () quantizes every op ORT can (Conv, Gemm, Add, MaxPool, ...); ("Conv", "Gemm")
    leaves the residual Adds in float. The defaults are the recipe `auto` tries first.
    """

    mode: Int8Mode = Int8Mode.u8s8
    calibrate: str = "minmax"  # A CALIBRATION_METHODS key; percentile clipped too much here, entropy = minmax.
    percentile: float = 99.999  # Percentile calibration only: the share of |values| the range must cover.
    keep_float: tuple[str, ...] = FLOAT_ENDS
    op_types: tuple[str, ...] = ()
    # Activation ranges centred on 0 (ORT's ActivationSymmetric; Intel Neural Compressor's choice for s8
    # activations). With u8 activations after a ReLU it halves the resolution, so it is off unless asked.
    symmetric_activations: bool = False
    # The residual skip path in float (`float_skip_paths`): where a tensor is read by a quantized Conv and by a float
    # node (a residual Add), the float node reads the tensor itself instead of its 8-bit copy, so the stream is not
    # rounded again at every block; the convs still read 8 bits. Needs the Adds in float (op_types without "Add").
    float_skips: bool = False

    def __post_init__(self) -> None:
        if self.mode is Int8Mode.auto:
            raise VariantRejectedError("an Int8Recipe needs a concrete mode: auto is a list of recipes (AUTO_ORDER)")
        if self.float_skips and (not self.op_types or "Add" in self.op_types):
            raise VariantRejectedError("float_skips needs the residual Adds in float: set op_types=('Conv', 'Gemm')")
        if self.calibrate not in CALIBRATION_METHODS:
            raise VariantRejectedError(
                f"calibration method {self.calibrate!r}: use one of {', '.join(CALIBRATION_METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise VariantRejectedError(f"percentile {self.percentile}: use a value in (50, 100], e.g. 99.999")

    def describe(self) -> str:
        """One line for messages: `u8s8 (conv1, fc in float)`; long lists are cut: `(conv1, fc, ... +52 in float)`."""
        shown = ", ".join(self.keep_float[:DESCRIBED_LAYERS])
        if len(self.keep_float) > DESCRIBED_LAYERS:
            shown += f", ... +{len(self.keep_float) - DESCRIBED_LAYERS}"
        floats = f" ({shown} in float)" if self.keep_float else ""
        ops = f", only {'+'.join(self.op_types)} quantized" if self.op_types else ""
        skips = ", float skip paths" if self.float_skips else ""
        return f"{self.mode.value}{floats}{ops}{skips}"

    def settings(self) -> dict[str, Any]:
        activation, weight, reduce_range = _quant_types(self.mode)
        settings: dict[str, Any] = {
            "format": "QDQ", "per_channel": True, "mode": self.mode.value, "reduce_range": reduce_range,
            "calibration": CALIBRATION_METHODS[self.calibrate], "keep_float": list(self.keep_float),
            "op_types": list(self.op_types) or "all",
        }
        if self.calibrate == "percentile":
            settings["percentile"] = self.percentile
        if self.symmetric_activations:
            settings["symmetric_activations"] = True
        if self.float_skips:
            settings["float_skips"] = True
        return settings


# What `--int8-mode MODE` builds.
MODE_RECIPES = {mode: Int8Recipe(mode, keep_float=FLOAT_ENDS) for mode in Int8Mode if mode is not Int8Mode.auto}
# Measured with benchmarks/int8_modes.py (its default sweep): top-1 agreement with fp32 on 2,520 held-out FSDD
# clips, mean of 3 calibration sets, for a resnet18 trained on 480 clips (86 % accurate, so it has borderline
# clips to flip); speed-up over ORT fp32 for ResNet152 at 3x128x216, batch 16, timed round-robin in one process:
#   u8s8 + FLOAT_ENDS          99.64 % (worst set 99.60 %)  1.86x   <- meets both targets (>= 99 %, >= 1.8x)
#   u8s8, all quantized        97.66 %                      1.91x   (the first conv saturates the kernel)
#   u8s8-reduce + FLOAT_ENDS   99.35 %                      1.86x   (plain u8s8-reduce: 99.27 %, 1.91x)
#   u8u8 + FLOAT_ENDS          99.54 %                      1.29x
# Calibration (Percentile, Entropy, 128 clips), leaving the residual Adds in float, or more float blocks bought no
# agreement beyond noise; each float block costs 0.03-0.14x. The first recipe that passes is kept: accurate and
# fast, then saturation-free and fast, then saturation-free.
AUTO_ORDER = (MODE_RECIPES[Int8Mode.u8s8], MODE_RECIPES[Int8Mode.u8s8_reduce], MODE_RECIPES[Int8Mode.u8u8])
# With VNNI (AVX-512 VNNI or AVX-VNNI; AMX implies it) ORT's u8 x s8 kernel accumulates in 32 bits (vpdpbusd), so
# the u8s8 recipes get faster still, while u8u8 falls back to a kernel no faster than fp32. Measured, ResNet152 at
# 3x128x216, batch 16, round-robin: VNNI Xeon u8s8 + FLOAT_ENDS 2.77x, u8s8-reduce 2.9x, u8u8 1.06x, s8s8 1.0x;
# this AMD EPYC with AVX-512 VNNI: see docs/performance.md. A variant that is not faster is not worth shipping.
VNNI_AUTO_ORDER = (MODE_RECIPES[Int8Mode.u8s8], MODE_RECIPES[Int8Mode.u8s8_reduce])


def auto_order(isa: dict[str, Any] | None = None) -> tuple[Int8Recipe, ...]:
    """The recipes `--int8-mode auto` tries on this CPU (`toolchain.io.cpu_isa`), in order."""
    isa = isa if isa is not None else cpu_isa()
    return VNNI_AUTO_ORDER if isa.get("vnni") or isa.get("amx") else AUTO_ORDER


def recipes_for(mode: Int8Mode, calibrate: str | None = None) -> tuple[Int8Recipe, ...]:
    """What `mode` builds, in order (`auto_order()` for auto); `calibrate`, when given, replaces the method."""
    chosen = auto_order() if mode is Int8Mode.auto else (MODE_RECIPES[mode],)
    return tuple(dataclasses.replace(r, calibrate=calibrate) for r in chosen) if calibrate else chosen


def _quant_types(mode: Int8Mode) -> tuple[Any, Any, bool]:
    from onnxruntime.quantization import QuantType

    return {
        Int8Mode.u8s8: (QuantType.QUInt8, QuantType.QInt8, False),
        Int8Mode.s8s8_reduce: (QuantType.QInt8, QuantType.QInt8, True),
        Int8Mode.u8s8_reduce: (QuantType.QUInt8, QuantType.QInt8, True),
        Int8Mode.u8u8: (QuantType.QUInt8, QuantType.QUInt8, False),
        Int8Mode.s8s8: (QuantType.QInt8, QuantType.QInt8, False),
    }[mode]


def layer_nodes(model_path: str | Path) -> dict[str, str]:
    """Module name -> node name for every Conv/Gemm/MatMul whose weight is an initializer named `<module>.weight`."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    layers = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            layers[node.input[1].removesuffix(".weight")] = node.name
    return layers


def match_layers(layers: dict[str, str], names: tuple[str, ...], option: str) -> list[str]:
    """The layers `names` pick; a name also covers the layers under it ("layer4" -> layer4.*)."""
    picked = []
    for name in names:
        matches = [layer for layer in layers if layer == name or layer.startswith(name + ".")]
        if not matches:
            sample = ", ".join(list(layers)[:3])
            raise VariantRejectedError(f"{option} layer {name!r} is not in the model: use module names like {sample}")
        picked += matches
    return list(dict.fromkeys(picked))


def prepare_for_int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ORT's quantization pre-processing (shape inference + graph optimization) of the fp32 model -> `out_path`."""
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path))
    return Path(out_path)


def build_int8(
    prepared_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    recipe: Int8Recipe,
    progress: ProgressReporter | None = None,
) -> Path:
    """Static QDQ INT8 of a `prepare_for_int8` model per `recipe` -> `out_path` (unjudged: see `quantize_int8`).

    `calibration`: float32 (n, channels, n_mels, frames) features; the activation ranges are fitted on them.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    unknown = sorted(set(recipe.op_types) - set(QDQRegistry) - set(QLinearOpsRegistry))
    if unknown:
        raise VariantRejectedError(f"op type {unknown[0]!r} is not one ORT quantizes: use e.g. Conv, Gemm, Add")
    progress = progress or NullProgress()
    activation, weight, reduce_range = _quant_types(recipe.mode)
    layers = layer_nodes(prepared_path)
    excluded = [layers[layer] for layer in match_layers(layers, recipe.keep_float, "keep_float")]
    extra: dict[str, Any] = {}
    if recipe.calibrate == "percentile":
        extra["CalibPercentile"] = recipe.percentile
    if recipe.symmetric_activations:
        extra["ActivationSymmetric"] = True
    progress.start("calibrate", f"INT8 {recipe.describe()}: calibrating", len(calibration))
    # MinMax keeps running per-tensor extremes; Percentile and Entropy keep histograms (ORT augments the graph).
    quantize_static(
        str(prepared_path), str(out_path), _FeatureReader(calibration, progress),
        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
        activation_type=activation, weight_type=weight,
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[recipe.calibrate]),
        nodes_to_exclude=excluded, op_types_to_quantize=list(recipe.op_types) or None, extra_options=extra,
    )
    progress.finish("calibrate")
    if recipe.float_skips:
        float_skip_paths(prepared_path, out_path)
    return Path(out_path)


def graph_links(graph) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(the node that produces each tensor, the nodes that read each tensor) of an ONNX graph."""
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return producer, readers


def float_skip_paths(prepared_path: str | Path, int8_path: str | Path) -> None:
    """Rewire the QDQ model at `int8_path` (in place) so that float nodes read a tensor, not its 8-bit copy, where
    a quantized Conv/Gemm reads that copy too: in a ResNet, the residual Add reads the stream in float while the
    block's convs read it in 8 bits.

    Why: QDQ gives a tensor one Q/DQ pair shared by all its readers, so with the Adds in float the skip path still
    carried the 8-bit stream, rounded again at every block; ORT's optimizer even fuses DQ -> Add -> Q back into an
    8-bit QLinearAdd. Over the 50 blocks of a ResNet152 that rounding, not the convs, was the error (a torch
    simulation of the same quantization with a float skip path agreed 99.3 %, ORT's QDQ model 86.0 %;
    docs/performance.md). A rewired edge computes exactly what the fp32 model computes there. Skipped where the
    quantizer folded an activation into its Q (the tensor's producer differs from the prepared graph's, e.g. a
    removed Relu): the raw tensor would be wrong.
    """
    import onnx

    model = onnx.load(str(int8_path))
    before, _ = graph_links(onnx.load(str(prepared_path), load_external_data=False).graph)
    producer, readers = graph_links(model.graph)
    quantized_readers = ("Conv", "Gemm", "MatMul")
    for node in model.graph.node:
        if node.op_type in (*quantized_readers, "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            source, made_by = q.input[0], producer.get(q.input[0])
            if made_by is None or source not in before or before[source].op_type != made_by.op_type:
                continue
            if any(r.op_type in quantized_readers for r in readers.get(name, ())):
                node.input[i] = source
    onnx.save_model(model, str(int8_path), save_as_external_data=False)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    *,
    labels: list[str | None] | None = None,
    mode: Int8Mode = DEFAULT_INT8_MODE,
    calibrate: str | None = None,
    recipes: Sequence[Int8Recipe] | None = None,
    min_agreement: float = INT8_MIN_AGREEMENT,
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
    fallback: bool = True,
) -> VariantReport:
    """Static QDQ INT8 (per-channel weights, calibrated on `calibration` clips) -> `out_path`, judged.

    `calibration` and `evaluation`: float32 (n, channels, n_mels, frames) features, ideally disjoint.
    Kept only when top-1 agreement with the fp32 model on `evaluation` is >= `min_agreement`; otherwise the file
    is deleted and `VariantRejectedError` raised (its `.report` says why). The report (JSON at `report_path`) is
    written either way. `recipes` (default: `recipes_for(mode, calibrate)`; `mode=auto` is AUTO_ORDER) are tried
    in order and the first that passes is kept; the report lists the rejected attempts under
    `settings["rejected"]`. When all fail, `fallback` and `mode` is auto, the first recipe is retried with its most sensitive
    layers in float (`float_fallback`); the report's `settings["float_fallback"]` says what was measured and tried.
    """
    if len(calibration) == 0:
        raise VariantRejectedError("no calibration clips for INT8: pass real audio with --parity-data")
    fallback = fallback and recipes is None and Int8Mode(mode) is Int8Mode.auto  # An explicit recipe is used alone.
    recipes = tuple(recipes or recipes_for(Int8Mode(mode), calibrate))
    rejected: list[str] = []
    for i, attempt in enumerate(recipes):
        try:
            report = quantize_one(Path(fp32_path), Path(out_path), calibration, evaluation, labels, attempt,
                                   min_agreement, report_path, progress or NullProgress())
        except VariantRejectedError as exc:
            if i == len(recipes) - 1:
                if not fallback or exc.report is None:
                    raise _with_attempts(exc, rejected, report_path) from None
                from toolchain.export.int8_sensitivity import float_fallback

                rejected.append(f"{attempt.describe()}: {exc.report.reason}")
                return float_fallback(Path(fp32_path), Path(out_path), calibration, evaluation, labels, recipes[0],
                                      min_agreement, report_path, progress or NullProgress(), rejected)
            rejected.append(f"{attempt.describe()}: {exc.report.reason if exc.report else exc}")
            continue
        if rejected:
            report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected})
            if report_path:
                write_json(report.to_dict(), Path(report_path))
        return report
    raise AssertionError("unreachable: there is always at least one recipe")


def _with_attempts(exc: VariantRejectedError, rejected: list[str], report_path) -> VariantRejectedError:
    """The last rejection, carrying the earlier ones in its report and message."""
    report = exc.report
    if not rejected or report is None:
        return exc
    report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected})
    if report_path:
        write_json(report.to_dict(), Path(report_path))
    return VariantRejectedError(f"{exc} (also rejected: {'; '.join(rejected)})", report=report)


def quantize_one(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    labels: list[str | None] | None,
    recipe: Int8Recipe,
    min_agreement: float,
    report_path: str | Path | None,
    progress: ProgressReporter,
) -> VariantReport:
    def build(pending: Path) -> None:
        prepared = pending.with_name(pending.name + ".pre.onnx")  # Scratch: removed below.
        try:
            progress.start("preprocess", f"INT8 {recipe.describe()}: shape inference + graph optimization", None)
            prepare_for_int8(fp32_path, prepared)
            progress.finish("preprocess")
            build_int8(prepared, pending, calibration, recipe, progress)
        finally:
            prepared.unlink(missing_ok=True)

    isa = cpu_isa()
    settings = {**recipe.settings(), "calibration_clips": len(calibration), "cpu": isa,
                "auto_order": [r.describe() for r in auto_order(isa)]}
    progress.start("int8", f"INT8 {recipe.describe()}: evaluating against fp32", None)
    try:
        from toolchain.export.variants import build_and_judge  # torch: not for the CLI's option enums.

        return build_and_judge("int8", fp32_path, out_path, build, evaluation, labels, CPU_EP, min_agreement, settings,
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
    provider = CUDA_EP if CUDA_EP in candidate_providers() else CPU_EP

    def build(pending: Path) -> None:
        import onnx
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
        from toolchain.export.variants import build_and_judge

        return build_and_judge("fp16", Path(fp32_path), Path(out_path), build, evaluation, labels, provider,
                                min_agreement, settings, Path(report_path) if report_path else None)
    finally:
        progress.finish("fp16")
