"""One INT8 model per recipe with ORT's static QDQ quantizer: pre-process the fp32 graph, fit the activation ranges
on real clips, quantize, and rewire the skip paths when the recipe asks. Unjudged: `toolchain.export.int8` decides
what is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import VariantRejectedError
from toolchain.export.int8_recipes import CALIBRATION_METHODS, QUANT_TYPES, Int8Recipe
from toolchain.export.onnx_graph import float_skip_paths, layer_nodes, match_layers
from toolchain.inference.contract import INPUT_NAME
from toolchain.progress import NullProgress, ProgressReporter


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


def prepare_for_int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ORT's quantization pre-processing (shape inference + graph optimization) of the fp32 model -> `out_path`."""
    # Deferred: onnxruntime.quantization takes seconds to import, and only an INT8 build needs it.
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
    # Deferred: onnxruntime.quantization takes seconds to import, and only an INT8 build needs it.
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    unknown = sorted(set(recipe.op_types) - set(QDQRegistry) - set(QLinearOpsRegistry))
    if unknown:
        raise VariantRejectedError(f"op type {unknown[0]!r} is not one ORT quantizes: use e.g. Conv, Gemm, Add")
    progress = progress or NullProgress()
    activation, weight, reduce_range = QUANT_TYPES[recipe.mode]
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
        activation_type=getattr(QuantType, activation), weight_type=getattr(QuantType, weight),
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[recipe.calibrate]),
        nodes_to_exclude=excluded, op_types_to_quantize=list(recipe.op_types) or None, extra_options=extra,
    )
    progress.finish("calibrate")
    if recipe.float_skips:
        float_skip_paths(prepared_path, out_path)
    return Path(out_path)
