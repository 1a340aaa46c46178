"""One INT8 model per recipe, built for real with ORT's quantizer: what stays float, what is quantized.

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from toolchain.export.int8_build import build_int8, prepare_for_int8
from toolchain.export.int8_recipes import Int8Mode, Int8Recipe
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME
from toolchain.inference.session import open_session


def test_keep_float_layers_stay_float_in_the_saved_graph(exported_model, clip_features, tmp_path, weight_producers):
    features, _, calibration = clip_features
    recipe = Int8Recipe(Int8Mode.u8s8_reduce, keep_float=("conv1", "fc", "layer4.1"))
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    out = build_int8(prepared, tmp_path / "q.onnx", calibration, recipe)
    producers = weight_producers(out)
    floats = {name for name, producer in producers.items() if producer == "initializer"}
    # A block name covers every layer under it; everything else is quantized.
    assert floats == {"conv1", "fc", "layer4.1.conv1", "layer4.1.conv2"}
    assert set(producers.values()) == {"initializer", "DequantizeLinear"} and len(producers) > len(floats)
    (logits,) = open_session(out).run([OUTPUT_NAME], {INPUT_NAME: features[:2]})
    assert np.all(np.isfinite(logits))


def test_conv_gemm_only_leaves_residual_adds_in_float(exported_model, clip_features, tmp_path):
    _, _, calibration = clip_features
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    everything = onnx.load(str(build_int8(prepared, tmp_path / "all.onnx", calibration, Int8Recipe()))).graph
    convs_only = onnx.load(str(build_int8(prepared, tmp_path / "cg.onnx", calibration,
                                          Int8Recipe(op_types=("Conv", "Gemm"))))).graph

    def quantized_add_outputs(graph) -> int:
        adds = {out for node in graph.node if node.op_type == "Add" for out in node.output}
        return sum(1 for node in graph.node if node.op_type == "QuantizeLinear" and node.input[0] in adds)

    assert quantized_add_outputs(everything) > 0 and quantized_add_outputs(convs_only) == 0


def test_symmetric_activations_centre_every_activation_range_on_zero(exported_model, clip_features, tmp_path):
    _, _, calibration = clip_features
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "prepared.onnx")

    def activation_zero_points(recipe: Int8Recipe) -> set[int]:
        graph = onnx.load(build_int8(prepared, tmp_path / "q.onnx", calibration[:4], recipe)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        return {int(inits[n.input[2]]) for n in graph.node  # Activations: QuantizeLinear of a non-initializer.
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits}

    assert activation_zero_points(Int8Recipe(Int8Mode.s8s8, symmetric_activations=True)) == {0}
    assert len(activation_zero_points(Int8Recipe(Int8Mode.s8s8))) > 1  # Asymmetric: fitted to each range.
    assert Int8Recipe(symmetric_activations=True).settings()["symmetric_activations"] is True
