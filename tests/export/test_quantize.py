"""INT8 (static QDQ) and FP16 variants: built for real with ORT's tools, reported, kept or deleted by rule.

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from toolchain.errors import VariantRejectedError
from toolchain.export.quantize import (
    AUTO_ORDER,
    Int8Mode,
    Int8Recipe,
    auto_order,
    build_int8,
    convert_fp16,
    layer_nodes,
    prepare_for_int8,
    quantize_int8,
)
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME, read_metadata
from toolchain.inference.session import open_session
from toolchain.io import cpu_isa


def test_int8_kept_when_agreement_meets_threshold(exported_model, clip_features, tmp_path):
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    report = quantize_int8(exported_model.model_path, out, calibration, features, labels=labels,
                           min_agreement=0.0, report_path=report_path)
    assert report.kept and out.is_file() and report.model_path == str(out)
    assert 0.0 <= report.top1_agreement <= 1.0 and report.n_clips == len(features)
    assert report.accuracy_fp32 is not None and report.accuracy_variant is not None  # Labels were known.
    # `auto` keeps the first recipe that passes: with no bar, the first (8-bit weights, first conv and fc float).
    assert report.settings["mode"] == auto_order()[0].mode.value == "u8s8" and report.settings["per_channel"]
    assert report.settings["cpu"] == cpu_isa() and report.settings["auto_order"][0] == "u8s8 (conv1, fc in float)"
    assert report.settings["keep_float"] == ["conv1", "fc"] and "rejected" not in report.settings
    producers = _weight_producers(out)
    assert producers["conv1"] == producers["fc"] == "initializer"  # What the report says stayed float, did.
    assert {p for name, p in producers.items() if name not in ("conv1", "fc")} == {"DequantizeLinear"}

    data = json.loads(report_path.read_text())
    assert data["status"] == "kept" and data["top1_agreement"] == report.top1_agreement
    meta = read_metadata(out)
    assert meta.precision == "int8" and meta.classes == read_metadata(exported_model.model_path).classes
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # Really QDQ, not a renamed fp32 copy.
    (logits,) = open_session(out).run([OUTPUT_NAME], {INPUT_NAME: features[:3]})
    assert logits.shape == (3, len(meta.classes)) and np.all(np.isfinite(logits))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx", "parity.int8.json"]


def test_int8_deleted_when_agreement_below_threshold(exported_model, clip_features, tmp_path):
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    out.write_bytes(b"stale variant from an earlier export")
    # Agreement is a fraction: no model reaches 101 %, so the rule must reject whatever was measured.
    with pytest.raises(VariantRejectedError, match="int8 model deleted: top-1 agreement") as info:
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels,
                      min_agreement=1.01, report_path=report_path, fallback=False)
    assert not out.exists()
    assert "\n" not in str(info.value) and "also rejected: u8s8 (conv1, fc in float): " in str(info.value)
    data = json.loads(report_path.read_text())
    assert data["status"] == "deleted" and data["threshold"] == 1.01 and data["top1_agreement"] is not None
    # `auto` tried every recipe of this CPU's order; the report is the last attempt's and lists the earlier ones.
    assert data["settings"]["mode"] == auto_order()[-1].mode.value
    assert [r.split(":")[0] for r in data["settings"]["rejected"]] == [r.describe() for r in auto_order()[:-1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.int8.json"]


def test_auto_order_follows_the_cpu():
    avx2 = {"avx2": True, "avx512": False, "vnni": False, "amx": False}
    assert auto_order(avx2) == AUTO_ORDER and [r.mode.value for r in AUTO_ORDER] == ["u8s8", "u8s8-reduce", "u8u8"]
    for vnni in ({**avx2, "avx512": True, "vnni": True}, {**avx2, "amx": True}):
        assert [r.mode.value for r in auto_order(vnni)] == ["u8s8", "u8s8-reduce"]


def test_fp16_variant_keeps_float32_io_and_reports_honestly(exported_model, clip_features, tmp_path):
    features, labels, _ = clip_features
    out = tmp_path / "model.fp16.onnx"
    try:
        report = convert_fp16(exported_model.model_path, out, features, labels=labels,
                              report_path=tmp_path / "parity.fp16.json")
    except VariantRejectedError as exc:  # Allowed outcome, but then the file must be gone and the reason given.
        report = exc.report
        assert not out.exists() and report.reason
    else:
        assert report.kept and report.top1_agreement >= report.threshold
        model = onnx.load(str(out))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        assert read_metadata(out).precision == "fp16"
    assert json.loads((tmp_path / "parity.fp16.json").read_text())["provider"] == report.provider


def test_explicit_mode_is_used_alone(exported_model, clip_features, tmp_path):
    features, _, calibration = clip_features
    with pytest.raises(VariantRejectedError) as info:
        quantize_int8(exported_model.model_path, tmp_path / "q.onnx", calibration, features, mode=Int8Mode.u8u8,
                      min_agreement=1.01, report_path=tmp_path / "r.json")
    assert "also rejected" not in str(info.value)
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["mode"] == "u8u8"


def test_no_calibration_clips_is_refused(exported_model, clip_features, tmp_path):
    features, _, calibration = clip_features
    with pytest.raises(VariantRejectedError, match="calibration"):
        quantize_int8(exported_model.model_path, tmp_path / "q.onnx", calibration[:0], features)
    assert list(tmp_path.iterdir()) == []


def _weight_producers(model_path) -> dict[str, str]:
    """Module name -> what feeds that Conv/Gemm's weight: "initializer" (float) or "DequantizeLinear" (INT8)."""
    graph = onnx.load(str(model_path)).graph
    initializers = {i.name for i in graph.initializer}
    dequantized = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    producers = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            weight = node.input[1]
            if weight in initializers:
                producers[weight.removesuffix(".weight")] = "initializer"
            else:  # ORT names the stored INT8 weight `<module>.weight_quantized`.
                producers[dequantized[weight].split(".weight")[0]] = "DequantizeLinear"
    return producers


def test_keep_float_layers_stay_float_in_the_saved_graph(exported_model, clip_features, tmp_path):
    features, _, calibration = clip_features
    recipe = Int8Recipe(Int8Mode.u8s8_reduce, keep_float=("conv1", "fc", "layer4.1"))
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    out = build_int8(prepared, tmp_path / "q.onnx", calibration, recipe)
    producers = _weight_producers(out)
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


def test_unknown_keep_float_layer_is_refused_without_leaving_a_file(exported_model, clip_features, tmp_path):
    features, labels, calibration = clip_features
    out = tmp_path / "model.int8.onnx"
    with pytest.raises(VariantRejectedError, match="'layer9' is not in the model") as info:
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels,
                      recipes=(Int8Recipe(keep_float=("layer9",)),), min_agreement=0.0,
                      report_path=tmp_path / "r.json")
    assert "\n" not in str(info.value) and not out.exists()
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "deleted"


def test_recipe_settings_are_recorded_and_a_failing_recipe_is_deleted(exported_model, clip_features, tmp_path):
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    recipe = Int8Recipe(Int8Mode.u8s8_reduce, calibrate="percentile", percentile=99.99, keep_float=("conv1", "fc"))
    with pytest.raises(VariantRejectedError, match="top-1 agreement"):
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels, recipes=(recipe,),
                      min_agreement=1.01, report_path=report_path)
    assert not out.exists()
    settings = json.loads(report_path.read_text())["settings"]
    assert settings["keep_float"] == ["conv1", "fc"] and settings["calibration"] == "Percentile"
    assert settings["percentile"] == 99.99 and settings["calibration_clips"] == len(calibration)


def test_recipe_rejects_bad_values():
    with pytest.raises(VariantRejectedError, match="calibration method 'kl'"):
        Int8Recipe(calibrate="kl")
    with pytest.raises(VariantRejectedError, match="percentile 101"):
        Int8Recipe(calibrate="percentile", percentile=101)
    with pytest.raises(VariantRejectedError, match="auto"):
        Int8Recipe(Int8Mode.auto)


def test_symmetric_activations_centre_every_activation_range_on_zero(exported_model, clip_features, tmp_path):
    import onnx
    from onnx import numpy_helper

    from toolchain.export.quantize import build_int8, prepare_for_int8

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


def test_a_recipe_describes_itself_in_one_short_line():
    assert Int8Recipe().describe() == "u8s8 (conv1, fc in float)"
    many = Int8Recipe(keep_float=tuple(f"layer3.{i}.conv1" for i in range(36)), op_types=("Conv", "Gemm"))
    assert many.describe() == ("u8s8 (layer3.0.conv1, layer3.1.conv1, layer3.2.conv1, layer3.3.conv1, layer3.4.conv1, "
                               "layer3.5.conv1, ... +30 in float), only Conv+Gemm quantized")
