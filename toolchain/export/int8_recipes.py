"""INT8 recipes as typed, frozen data: the integer types, the layers left in float, the order `auto` tries them,
and the thresholds of the INT8 gate and its fallback. Imports neither torch nor onnx: the CLI builds its
`--int8-mode` option from here.

Which recipes `auto` tries depends on the CPU (`auto_order`, from `toolchain.cpu.cpu_isa`); the report records the
CPU's features and that order. INT8 on CPUs without VNNI (AVX2 only): ORT's fast kernel multiplies u8 activations by
s8 weights and sums pairs of products in 16 bits (vpmaddubsw), which saturates when two large activations meet two
large weights. 7-bit weights (`reduce_range`) rule that out but cost precision; full 8-bit weights saturate only
where activations are dense, and in a ResNet that is the first conv, fed the raw [0, 1] features. So the default
recipe keeps 8-bit weights on the fast kernel and leaves the first conv and the classifier in float. Each recipe's
measured agreement and speed-up: docs/performance.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

from toolchain.cpu import cpu_isa
from toolchain.errors import VariantRejectedError
from toolchain.export.variant_gate import VariantCriterion

# Without labels an INT8 model must agree with fp32 on >= 99 % of clips; with labels it may not lose more than
# 1 point of accuracy (95 % bound) nor flip more than 0.5 % of fp32's confident decisions
# (`toolchain.export.variant_gate`).
INT8_CRITERION = VariantCriterion()
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class Int8Mode(str, Enum):
    """Activation/weight integer types for ORT static quantization, or `auto` (see AUTO_ORDER)."""

    auto = "auto"  # The first recipe of AUTO_ORDER that passes the agreement rule.
    u8s8 = "u8s8"  # 8-bit signed weights on the fast kernel; saturation-prone on dense inputs (first conv: float).
    u8s8_reduce = "u8s8-reduce"  # ORT's advice without VNNI: 7-bit weights, fast kernel, never saturates.
    u8u8 = "u8u8"  # 8-bit weights, no saturation, but a slower kernel.
    s8s8_reduce = "s8s8-reduce"  # Signed activations: ORT runs part of the convs in float here (slow).
    s8s8 = "s8s8"  # ORT's QDQ default; slow and saturating without VNNI (kept for measurement only).


DEFAULT_INT8_MODE = Int8Mode.auto
# Mode -> (activation type, weight type, reduce_range), the types as names of ORT's `QuantType` members so that
# this module needs no onnxruntime (`toolchain.export.int8_build` resolves them).
QUANT_TYPES: dict[Int8Mode, tuple[str, str, bool]] = {
    Int8Mode.u8s8: ("QUInt8", "QInt8", False),
    Int8Mode.s8s8_reduce: ("QInt8", "QInt8", True),
    Int8Mode.u8s8_reduce: ("QUInt8", "QInt8", True),
    Int8Mode.u8u8: ("QUInt8", "QUInt8", False),
    Int8Mode.s8s8: ("QInt8", "QInt8", False),
}
# Layers every mode leaves in float: the first conv (~1 % of ResNet152's FLOPs; the only layer fed dense inputs,
# where 8-bit weights saturate the fast kernel) and the classifier (a 2048 x classes Gemm, free in float).
FLOAT_ENDS = ("conv1", "fc")
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
    calibrate: str = "minmax"  # A CALIBRATION_METHODS key; the others passed no gate MinMax missed.
    percentile: float = 99.999  # Percentile calibration only: the share of |values| the range must cover.
    keep_float: tuple[str, ...] = FLOAT_ENDS
    op_types: tuple[str, ...] = ()
    # Activation ranges centred on 0 (ORT's ActivationSymmetric; Intel Neural Compressor's choice for s8
    # activations). With u8 activations after a ReLU it halves the resolution, so it is off unless asked.
    symmetric_activations: bool = False
    # The residual skip path in float (`onnx_graph.float_skip_paths`): where a tensor is read by a quantized Conv
    # and by a float node (a residual Add), the float node reads the tensor itself instead of its 8-bit copy, so the
    # stream is not rounded again at every block; the convs still read 8 bits. Needs the Adds in float (op_types
    # without "Add").
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
        _, _, reduce_range = QUANT_TYPES[self.mode]
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
# The first recipe that passes is kept: accurate and fast, then saturation-free and fast, then saturation-free.
# Other calibrations are not in it: they passed no gate that MinMax missed (docs/performance.md).
AUTO_ORDER = (MODE_RECIPES[Int8Mode.u8s8], MODE_RECIPES[Int8Mode.u8s8_reduce], MODE_RECIPES[Int8Mode.u8u8])
# With VNNI (AVX-512 VNNI or AVX-VNNI; AMX implies it) ORT's u8 x s8 kernel accumulates in 32 bits (vpdpbusd), so
# the u8s8 recipes get faster still, while u8u8 falls back to a kernel no faster than fp32: a variant that is not
# faster is not worth shipping.
VNNI_AUTO_ORDER = (MODE_RECIPES[Int8Mode.u8s8], MODE_RECIPES[Int8Mode.u8s8_reduce])

# When every recipe misses the gate (`toolchain.export.int8.float_fallback`): keep this many of the most sensitive
# layers in float, attempt by attempt, until the gate passes or the variant is no longer this much faster than fp32
# (not worth shipping).
FALLBACK_STEPS = (1, 2, 4, 8, 16)
MIN_FALLBACK_SPEEDUP = 1.5
SENSITIVITY_CLIPS = 8  # Calibration clips the per-layer error is measured on (ranks settle within a few).
STREAM_OP_TYPES = ("Conv", "Gemm")  # Quantized when the stream stays float: the residual Adds are not.
# Quantized with the skip paths in float: the Relus too. A Relu the quantizer handles is folded into its conv's
# output range (u8 over [0, max]); one it does not handle sits between two Q/DQ pairs (DQ -> Relu -> Q), which ORT
# cannot fuse away, so every block requantized twice inside it: 154 DequantizeLinear and 150 QuantizeLinear left
# in the optimized ResNet152 graph, against 54 and 50 with the Relus quantized (the 50 left are the skip paths'
# own). The residual Adds, and the Relu after each (it reads the float Add), stay float either way.
SKIP_OP_TYPES = ("Conv", "Gemm", "Relu")


def auto_order(isa: dict[str, Any] | None = None) -> tuple[Int8Recipe, ...]:
    """The recipes `--int8-mode auto` tries on this CPU (`toolchain.cpu.cpu_isa`), in order."""
    isa = isa if isa is not None else cpu_isa()
    return VNNI_AUTO_ORDER if isa.get("vnni") or isa.get("amx") else AUTO_ORDER


def recipes_for(mode: Int8Mode, calibrate: str | None = None) -> tuple[Int8Recipe, ...]:
    """What `mode` builds, in order (`auto_order()` for auto); `calibrate`, when given, replaces the method."""
    chosen = auto_order() if mode is Int8Mode.auto else (MODE_RECIPES[mode],)
    return tuple(dataclasses.replace(r, calibrate=calibrate) for r in chosen) if calibrate else chosen
