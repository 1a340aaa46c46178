"""Graph helpers on a real exported resnet18: the residual stream, and the skip paths rewired to read float.

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from toolchain.errors import VariantRejectedError
from toolchain.export.int8_build import build_int8, prepare_for_int8
from toolchain.export.int8_recipes import Int8Recipe
from toolchain.export.onnx_graph import layer_nodes, stream_layers
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME
from toolchain.inference.session import open_session


def test_float_skip_paths_give_the_residual_adds_the_float_stream(exported_model, clip_features, tmp_path):
    features, _, calibration = clip_features
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    plain = build_int8(prepared, tmp_path / "cg.onnx", calibration, Int8Recipe(op_types=("Conv", "Gemm")))
    skips = build_int8(prepared, tmp_path / "skips.onnx", calibration,
                       Int8Recipe(op_types=("Conv", "Gemm"), float_skips=True))
    before = onnx.load(str(prepared)).graph  # Each residual Add reads one tensor that a Conv reads too.
    conv_inputs = {n.input[0] for n in before.node if n.op_type == "Conv"}
    stream_reads = {(n.name, name) for n in before.node if n.op_type == "Add" for name in n.input
                    if name in conv_inputs}
    graph = onnx.load(str(skips)).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    assert stream_reads and {(n.name, name) for n in graph.node if n.op_type == "Add" for name in n.input
                             if made_by.get(name) != "DequantizeLinear"} == stream_reads
    first = layer_nodes(prepared)["conv1"]  # Float in the recipe; every other conv still reads 8 bits.
    assert all(made_by[n.input[0]] == "DequantizeLinear" for n in graph.node if n.op_type == "Conv" and n.name != first)
    reference = open_session(exported_model.model_path).run([OUTPUT_NAME], {INPUT_NAME: features})[0]

    def error(path) -> float:
        logits = open_session(path).run([OUTPUT_NAME], {INPUT_NAME: features})[0]
        return float(np.linalg.norm(logits - reference) / np.linalg.norm(reference))

    assert error(skips) < error(plain)  # The stream is no longer rounded at every block.
    assert Int8Recipe(op_types=("Conv", "Gemm"), float_skips=True).describe().endswith(", float skip paths")
    with pytest.raises(VariantRejectedError, match="float_skips needs the residual Adds in float"):
        Int8Recipe(float_skips=True)


def test_the_residual_stream_is_what_each_block_reads_and_its_skip_carries(exported_model, tmp_path):
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    stream = stream_layers(prepared, layer_nodes(prepared))
    blocks = [f"layer{stage}.{block}" for stage in range(1, 5) for block in range(2)]  # resnet18: 4 x 2 blocks.
    assert stream == [name for block in blocks for name in (f"{block}.conv1", f"{block}.downsample.0")
                      if name in stream]  # Graph order.
    assert set(stream) == {f"{b}.conv1" for b in blocks} | {f"layer{s}.0.downsample.0" for s in (2, 3, 4)}
