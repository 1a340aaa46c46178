"""Reading and rewiring ONNX graphs for INT8: who produces and reads each tensor, which node is which PyTorch layer,
the residual stream, the float skip paths, and extra outputs to probe a graph with. onnx only: no torch, no ORT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from toolchain.errors import VariantRejectedError


def graph_links(graph) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(the node that produces each tensor, the nodes that read each tensor) of an ONNX graph."""
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return producer, readers


def layer_nodes(model_path: str | Path) -> dict[str, str]:
    """Module name -> node name for every Conv/Gemm/MatMul whose weight is an initializer named `<module>.weight`."""
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


def stream_layers(model_path: str | Path, layers: dict[str, str]) -> list[str]:
    """The layers (module names, in graph order) whose Conv reads a tensor that fans out: a residual block's input,
    which its skip connection (an Add or a downsample conv) reads too. Plain chains (the stem, a block's second and
    third conv, the classifier) are not listed."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    _, readers = graph_links(graph)
    by_node = {node: layer for layer, node in layers.items()}
    return [by_node[n.name] for n in graph.node
            if n.name in by_node and n.op_type == "Conv" and len(readers.get(n.input[0], ())) > 1]


def float_skip_paths(prepared_path: str | Path, int8_path: str | Path) -> None:
    """Rewire the QDQ model at `int8_path` (in place) so that float nodes read a tensor, not its 8-bit copy, where
    a quantized Conv/Gemm reads that copy too: in a ResNet, the residual Add reads the stream in float while the
    block's convs read it in 8 bits.

    Why: QDQ gives a tensor one Q/DQ pair shared by all its readers, so with the Adds in float the skip path still
    carried the 8-bit stream, rounded again at every block; ORT's optimizer even fuses DQ -> Add -> Q back into an
    8-bit QLinearAdd. Over the 50 blocks of a ResNet152 that rounding, not the convs, was the error (a torch
    simulation of the same quantization with a float skip path showed it: docs/performance.md). A rewired edge
    computes exactly what the fp32 model computes there. Skipped where the quantizer folded an activation into its Q (the tensor's
    producer differs from the prepared graph's, e.g. a removed Relu): the raw tensor would be wrong.
    """
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


def with_outputs(model_path: Path, names: list[str], out_path: Path) -> Path:
    """A copy of the model that also outputs the tensors `names` (float32, shape left to the runtime)."""
    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return out_path


def _tensor_names(model_path: Path) -> set[str]:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return {name for node in graph.node for name in node.output} | {i.name for i in graph.input}


def layer_tensors(prepared_path: Path, int8_path: Path, layers: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Layer -> (input tensor, output tensor) in the prepared fp32 graph, for the layers whose two tensors the
    INT8 graph computes under the same names (the quantizer renames a few around fused nodes: those are skipped)."""
    graph = onnx.load(str(prepared_path), load_external_data=False).graph
    nodes = {n.name: n for n in graph.node}
    _, consumers = graph_links(graph)
    shared = _tensor_names(prepared_path) & _tensor_names(int8_path)

    def measured(tensor: str) -> str | None:
        """`tensor`, or, where the quantizer fused its only consumer (Conv + Relu), that consumer's output."""
        for _ in range(3):
            if tensor in shared:
                return tensor
            after = consumers.get(tensor, [])
            if len(after) != 1 or after[0].op_type not in ("Relu", "Clip", "Add"):
                return None
            tensor = after[0].output[0]
        return None

    pairs = {}
    for layer, node in layers.items():
        if node in nodes:
            source, result = measured(nodes[node].input[0]), measured(nodes[node].output[0])
            if source is not None and result is not None:
                pairs[layer] = (source, result)
    return pairs
