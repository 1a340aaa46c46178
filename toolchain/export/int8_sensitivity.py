"""Which layers INT8 hurts: the signal-to-quantization-noise ratio each Conv/Gemm loses, measured on the
calibration clips, so the gate's fallback can keep the most sensitive layers in float, fewest first; and, when that
is not enough, the residual stream's skip paths in float, then the stream itself.

Why the later stages: in a deep ResNet the error is not in a few layers. QDQ gives the residual stream (the tensor
a block's skip connection carries) one 8-bit copy shared by all its readers, so the stream is rounded again at every
block's Add and the rounding accumulates over the blocks. A ResNet152 trained on FSDD (5-s clips) agreed 86.0 %
with fp32 on its validation clips under the default recipe and did not move with its 16 most sensitive convs in
float; with the skip paths in float (`quantize.float_skip_paths`; every conv still INT8) it agreed 99.3 %, and
with the Adds and every stream-reading conv in float 99.5 % at a lower speed (docs/performance.md).

Both models (the prepared fp32 graph and its QDQ INT8 build) get every layer's input and output tensor as extra
graph outputs (QDQ keeps the float tensor names) and run on the same clips. A layer's SQNR is
10 log10(sum x^2 / sum (x - x_int8)^2) over the clips; the error accumulates through the net, so what ranks a layer
is what it adds: the SQNR of its input minus the SQNR of its output, in dB (what ORT's `qdq_loss_debug`
activation matching measures, one layer at a time).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolchain.errors import VariantRejectedError
from toolchain.export.quantize import (
    Int8Recipe,
    build_int8,
    graph_links,
    layer_nodes,
    match_layers,
    prepare_for_int8,
    quantize_one,
)
from toolchain.inference.contract import INPUT_NAME
from toolchain.inference.providers import CPU_EP
from toolchain.inference.session import open_session
from toolchain.io import write_json
from toolchain.progress import ProgressReporter

if TYPE_CHECKING:
    from toolchain.export.variants import VariantReport

_TINY = 1e-30
# When every recipe misses the gate: keep this many of the most sensitive layers in float, attempt by attempt,
# until the gate passes or the variant is no longer this much faster than fp32 (not worth shipping).
FALLBACK_STEPS = (1, 2, 4, 8, 16)
MIN_FALLBACK_SPEEDUP = 1.5
SENSITIVITY_CLIPS = 8  # Calibration clips the per-layer error is measured on (ranks settle within a few).


def _with_outputs(model_path: Path, names: list[str], out_path: Path) -> Path:
    """A copy of the model that also outputs the tensors `names` (float32, shape left to the runtime)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return out_path


def _tensor_names(model_path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return {name for node in graph.node for name in node.output} | {i.name for i in graph.input}


def _layer_tensors(prepared_path: Path, int8_path: Path, layers: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Layer -> (input tensor, output tensor) in the prepared fp32 graph, for the layers whose two tensors the
    INT8 graph computes under the same names (the quantizer renames a few around fused nodes: those are skipped)."""
    import onnx

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


def _sqnr(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    signal = sum(float(np.square(r.astype(np.float64)).sum()) for r in reference)
    noise = sum(float(np.square(r.astype(np.float64) - c.astype(np.float64)).sum())
                for r, c in zip(reference, candidate))
    return 10.0 * np.log10(max(signal, _TINY) / max(noise, _TINY))


def layer_sensitivity(prepared_path: str | Path, int8_path: str | Path, clips: np.ndarray,
                      layers: dict[str, str], scratch: str | Path) -> list[tuple[str, float]]:
    """[(layer, dB of SQNR it loses)] for every layer in `layers` (module name -> node name of the prepared
    graph), most sensitive first. `clips`: float32 (n, channels, n_mels, frames); `scratch`: a folder for the
    two instrumented copies (removed after)."""
    prepared_path, int8_path, scratch = Path(prepared_path), Path(int8_path), Path(scratch)
    tensors = _layer_tensors(prepared_path, int8_path, layers)
    names = sorted({t for pair in tensors.values() for t in pair if t != INPUT_NAME})
    outputs: dict[str, dict[str, list[np.ndarray]]] = {}
    for tag, source in (("fp32", prepared_path), ("int8", int8_path)):
        probe = _with_outputs(source, names, scratch / f".sensitivity-{tag}.onnx")
        try:
            session = open_session(probe, CPU_EP)
            found = {name: [] for name in names}
            for clip in clips:
                for name, value in zip(names, session.run(names, {INPUT_NAME: clip[np.newaxis]})):
                    found[name].append(value)
            outputs[tag] = found
        finally:
            probe.unlink(missing_ok=True)
    losses = []
    for layer, (source, result) in tensors.items():
        before = 200.0 if source == INPUT_NAME else _sqnr(outputs["fp32"][source], outputs["int8"][source])
        after = _sqnr(outputs["fp32"][result], outputs["int8"][result])
        losses.append((layer, round(before - after, 3)))
    return sorted(losses, key=lambda item: -item[1])


def stream_layers(model_path: str | Path, layers: dict[str, str]) -> list[str]:
    """The layers (module names, in graph order) whose Conv reads a tensor that fans out: a residual block's input,
    which its skip connection (an Add or a downsample conv) reads too. Plain chains (the stem, a block's second and
    third conv, the classifier) are not listed."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    _, readers = graph_links(graph)
    by_node = {node: layer for layer, node in layers.items()}
    return [by_node[n.name] for n in graph.node
            if n.name in by_node and n.op_type == "Conv" and len(readers.get(n.input[0], ())) > 1]


STREAM_OP_TYPES = ("Conv", "Gemm")  # Quantized when the stream stays float: the residual Adds are not.


def _speedup(report: VariantReport | None) -> float | None:
    if report is None or not report.clips_per_s_fp32 or not report.clips_per_s_variant:
        return None
    return report.clips_per_s_variant / report.clips_per_s_fp32


def float_fallback(
    fp32_path: Path, out_path: Path, calibration: np.ndarray, evaluation: np.ndarray,
    labels: list[str | None] | None, recipe: Int8Recipe, min_agreement: float, report_path: str | Path | None,
    progress: ProgressReporter, rejected: list[str],
) -> VariantReport:
    """`recipe` again with its most sensitive layers (`int8_sensitivity.layer_sensitivity`) in float, 1, 2, 4, ...
    of them, then with the skip paths in float (`quantize.float_skip_paths`: every conv stays INT8), then with the
    residual stream in float (the Adds and the stream-reading convs of the deeper half, then of all blocks:
    `stream_layers`), until the gate passes or the speed-up over fp32 falls below MIN_FALLBACK_SPEEDUP."""
    scratch = out_path.parent
    prepared, probe = scratch / f".{out_path.name}.sens.pre.onnx", scratch / f".{out_path.name}.sens.onnx"
    progress.start("sensitivity", f"INT8 {recipe.describe()}: per-layer error on {SENSITIVITY_CLIPS} clips", None)
    try:
        prepare_for_int8(fp32_path, prepared)
        build_int8(prepared, probe, calibration, recipe)
        layers = layer_nodes(prepared)
        stream = stream_layers(prepared, layers)
        ranking = layer_sensitivity(prepared, probe, calibration[:SENSITIVITY_CLIPS], layers, scratch)
    finally:
        prepared.unlink(missing_ok=True)
        probe.unlink(missing_ok=True)
        progress.finish("sensitivity")
    already = set(match_layers(layers, recipe.keep_float, "keep_float"))
    candidates = [layer for layer, _ in ranking if layer not in already]
    stream = [layer for layer in stream if layer not in already]
    record: dict[str, Any] = {"recipe": recipe.describe(), "sqnr_loss_db": ranking[:16], "stream_layers": stream,
                              "tried": []}
    attempts = [(f"{k} most sensitive layer(s) in float", candidates[:k], recipe.op_types, False)
                for k in sorted({min(step, len(candidates)) for step in FALLBACK_STEPS} - {0})]
    if stream:
        attempts.append(("the skip paths in float (the Adds read the float stream, every conv stays INT8)", [],
                         STREAM_OP_TYPES, True))
    attempts += [(f"the residual stream in float (the Adds and {len(part)} of its {len(stream)} reader convs)", part,
                  STREAM_OP_TYPES, False)
                 for part in dict.fromkeys((tuple(stream[len(stream) // 2:]), tuple(stream))) if part]
    last: VariantRejectedError | None = None
    for what, floats, op_types, skips in attempts:
        attempt = dataclasses.replace(recipe, keep_float=(*recipe.keep_float, *floats), op_types=op_types,
                                      float_skips=skips)
        try:
            report = quantize_one(fp32_path, out_path, calibration, evaluation, labels, attempt, min_agreement,
                                  report_path, progress)
        except VariantRejectedError as exc:
            last = exc
            speedup = _speedup(exc.report)
            record["tried"].append({"what": what, "float": list(floats), "op_types": list(op_types) or "all",
                                    "float_skips": skips,
                                    "agreement": exc.report.top1_agreement if exc.report else None,
                                    "speedup": speedup})
            if speedup is not None and speedup < MIN_FALLBACK_SPEEDUP:
                record["stopped"] = f"{speedup:.2f}x over fp32 with {what}, below {MIN_FALLBACK_SPEEDUP}x: " \
                    "not worth shipping"
                break
            continue
        record["kept"] = f"{what}: {', '.join(floats)}" if floats else what
        report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected,
                                                       "float_fallback": record})
        if report_path:
            write_json(report.to_dict(), Path(report_path))
        return report
    record.setdefault("stopped", "every fallback step missed the gate")
    final = last.report if last is not None else None
    if final is not None:
        final = dataclasses.replace(final, settings={**final.settings, "rejected": rejected, "float_fallback": record})
        if report_path:
            write_json(final.to_dict(), Path(report_path))
    tried = "; ".join(f"{t['what']}: {t['agreement']:.2%}" for t in record["tried"] if t["agreement"] is not None)
    raise VariantRejectedError(f"int8 model deleted: no recipe reached {min_agreement:.2%} agreement (also "
                               f"rejected: {'; '.join(rejected)}); fallback: {tried or 'none tried'}"
                               f" ({record['stopped']})", report=final)
