"""The INT8 variant: recipes tried in order, each built for real with ORT's tools, reported, kept or deleted by
rule; then the fallback (the most sensitive layers in float, then the residual stream).

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from toolchain.cpu import cpu_isa
from toolchain.errors import VariantRejectedError
from toolchain.export import int8
from toolchain.export.int8 import quantize_int8
from toolchain.export.int8_recipes import FLOAT_ENDS, SKIP_OP_TYPES, STREAM_OP_TYPES, Int8Mode, Int8Recipe, auto_order
from toolchain.export.variant_gate import VariantCriterion
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME, read_metadata
from toolchain.inference.session import open_session

KEEP_ANY = VariantCriterion(min_agreement=0.0, max_accuracy_drop=0.99, min_confident_agreement=0.0)
KEEP_NONE = VariantCriterion(min_agreement=1.01, min_confident_agreement=1.01)  # No share reaches 101 %.


def test_int8_kept_when_agreement_meets_threshold(exported_model, clip_features, tmp_path, weight_producers):
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    report = quantize_int8(exported_model.model_path, out, calibration, features, labels=labels,
                           criterion=KEEP_ANY, report_path=report_path)
    assert report.kept and out.is_file() and report.model_path == str(out)
    assert 0.0 <= report.top1_agreement <= 1.0 and report.n_clips == len(features)
    assert report.accuracy_fp32 is not None and report.accuracy_variant is not None  # Labels were known.
    # `auto` keeps the first recipe that passes: with no bar, the first (8-bit weights, first conv and fc float).
    assert report.settings["mode"] == auto_order()[0].mode.value == "u8s8" and report.settings["per_channel"]
    assert report.settings["cpu"] == cpu_isa() and report.settings["auto_order"][0] == "u8s8 (conv1, fc in float)"
    assert report.settings["keep_float"] == ["conv1", "fc"] and "rejected" not in report.settings
    producers = weight_producers(out)
    assert producers["conv1"] == producers["fc"] == "initializer"  # What the report says stayed float, did.
    assert {p for name, p in producers.items() if name not in ("conv1", "fc")} == {"DequantizeLinear"}

    data = json.loads(report_path.read_text())
    assert data["status"] == "kept" and data["top1_agreement"] == report.top1_agreement
    assert data["criterion"]["rule"] == "labelled" and set(data["decision"]) >= {
        "accuracy_drop_bound", "confident_agreement", "flips_by_fp32_confidence", "accuracy_fp32"}
    meta = read_metadata(out)
    assert meta.precision == "int8" and meta.classes == read_metadata(exported_model.model_path).classes
    assert meta.gate == data["criterion"]  # The model says which rule certified it.
    assert read_metadata(exported_model.model_path).gate is None
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
    # Labelled clips: the labelled rule, whose confident-clip agreement cannot reach 101 %.
    with pytest.raises(VariantRejectedError,
                       match=r"int8 model deleted: .*agreement on the \d clips fp32 is confident about") as info:
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels,
                      criterion=KEEP_NONE, report_path=report_path, fallback=False)
    assert not out.exists()
    assert "\n" not in str(info.value) and "also rejected: u8s8 (conv1, fc in float): " in str(info.value)
    data = json.loads(report_path.read_text())
    assert data["status"] == "deleted" and data["threshold"] == 1.01 and data["top1_agreement"] is not None
    assert data["criterion"]["rule"] == "labelled" and data["criterion"]["min_confident_agreement"] == 1.01
    assert data["decision"]["confident_agreement"] < 1.01 and "accuracy_drop_bound" in data["decision"]
    # `auto` tried every recipe of this CPU's order; the report is the last attempt's and lists the earlier ones.
    assert data["settings"]["mode"] == auto_order()[-1].mode.value
    assert [r.split(":")[0] for r in data["settings"]["rejected"]] == [r.describe() for r in auto_order()[:-1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.int8.json"]


def test_explicit_mode_is_used_alone(exported_model, clip_features, tmp_path):
    features, _, calibration = clip_features
    with pytest.raises(VariantRejectedError) as info:
        quantize_int8(exported_model.model_path, tmp_path / "q.onnx", calibration, features, mode=Int8Mode.u8u8,
                      criterion=KEEP_NONE, report_path=tmp_path / "r.json")
    assert "also rejected" not in str(info.value)
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["mode"] == "u8u8"


def test_no_calibration_clips_is_refused(exported_model, clip_features, tmp_path):
    features, _, calibration = clip_features
    with pytest.raises(VariantRejectedError, match="calibration"):
        quantize_int8(exported_model.model_path, tmp_path / "q.onnx", calibration[:0], features)
    assert list(tmp_path.iterdir()) == []


def test_unknown_keep_float_layer_is_refused_without_leaving_a_file(exported_model, clip_features, tmp_path):
    features, labels, calibration = clip_features
    out = tmp_path / "model.int8.onnx"
    with pytest.raises(VariantRejectedError, match="'layer9' is not in the model") as info:
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels,
                      recipes=(Int8Recipe(keep_float=("layer9",)),), criterion=KEEP_ANY,
                      report_path=tmp_path / "r.json")
    assert "\n" not in str(info.value) and not out.exists()
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "deleted"


def test_recipe_settings_are_recorded_and_a_failing_recipe_is_deleted(exported_model, clip_features, tmp_path):
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    recipe = Int8Recipe(Int8Mode.u8s8_reduce, calibrate="percentile", percentile=99.99, keep_float=("conv1", "fc"))
    with pytest.raises(VariantRejectedError, match="agreement"):
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels, recipes=(recipe,),
                      criterion=KEEP_NONE, report_path=report_path)
    assert not out.exists()
    settings = json.loads(report_path.read_text())["settings"]
    assert settings["keep_float"] == ["conv1", "fc"] and settings["calibration"] == "Percentile"
    assert settings["percentile"] == 99.99 and settings["calibration_clips"] == len(calibration)


@pytest.mark.parametrize("speed_floor", [0.0, 1000.0])  # Every step is tried; the first step is too slow.
def test_fallback_keeps_sensitive_layers_float_then_gives_up_loudly(exported_model, clip_features, tmp_path,
                                                                   monkeypatch, speed_floor):
    monkeypatch.setattr(int8, "MIN_FALLBACK_SPEEDUP", speed_floor)  # Else the path depends on timing.
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    with pytest.raises(VariantRejectedError, match="fallback: 1 most sensitive layer.s. in float") as info:
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels, criterion=KEEP_NONE,
                      report_path=report_path)  # auto, and 101 %: no recipe passes, then the fallback runs.
    assert not out.exists() and "\n" not in str(info.value)
    record = json.loads(report_path.read_text())["settings"]["float_fallback"]
    assert record["recipe"] == "u8s8 (conv1, fc in float)" and record["sqnr_loss_db"]
    tried = [t["float"] for t in record["tried"]]
    sqnr = [t["float"] for t in record["tried"] if t["op_types"] == "all"]  # The first stage: 1, 2, 4, ... layers.
    assert sqnr and len(sqnr[0]) == 1 and all(len(a) < len(b) for a, b in zip(sqnr, sqnr[1:]))
    assert tried[:len(sqnr)] == sqnr  # The stream stage comes after it.
    assert not set(FLOAT_ENDS) & {layer for t in tried for layer in t}  # Only layers not already float.
    assert sqnr[0][0] == next(name for name, _ in record["sqnr_loss_db"] if name not in FLOAT_ENDS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.int8.json"]
    if speed_floor:
        assert len(tried) == 1 and "below 1000.0x: not worth shipping" in record["stopped"]
        return
    assert record["stopped"] == "every fallback step missed the gate"
    stream = [t for t in record["tried"] if t["op_types"] != "all"]
    assert all(t["op_types"] == list(SKIP_OP_TYPES if t["float_skips"] else STREAM_OP_TYPES)
               and set(t["float"]) <= set(record["stream_layers"]) for t in stream)
    # The skip paths in float (every conv INT8), then the deeper half of the stream, then all of it.
    assert [(len(t["float"]), t["float_skips"]) for t in stream] == [(0, True), (6, False), (11, False)]
