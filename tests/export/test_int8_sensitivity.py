"""The INT8 fallback: per-layer sensitivity on real clips, then the most sensitive layers in float, fewest first.
FSDD: CC BY-SA 4.0."""

from __future__ import annotations

import json

import pytest

from toolchain.errors import VariantRejectedError
from toolchain.export import int8_sensitivity
from toolchain.export.int8_sensitivity import STREAM_OP_TYPES, layer_sensitivity, stream_layers
from toolchain.export.quantize import (
    FLOAT_ENDS,
    MODE_RECIPES,
    Int8Mode,
    build_int8,
    layer_nodes,
    prepare_for_int8,
    quantize_int8,
)


def test_sensitivity_ranks_every_layer_by_the_noise_it_adds(exported_model, clip_features, tmp_path):
    _, _, calibration = clip_features
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    everything = MODE_RECIPES[Int8Mode.u8s8].__class__(Int8Mode.u8s8, keep_float=("fc",))
    int8 = build_int8(prepared, tmp_path / "q.onnx", calibration, everything)
    layers = layer_nodes(prepared)
    ranking = layer_sensitivity(prepared, int8, calibration, layers, tmp_path)
    assert {name for name, _ in ranking} <= set(layers) and len(ranking) > 15  # The convs of a resnet18, and fc.
    losses = dict(ranking)
    assert [loss for _, loss in ranking] == sorted(losses.values(), reverse=True)
    assert "conv1" in losses and all(abs(v) < 200 for v in losses.values())  # Finite dB, the first conv measured.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.onnx", "q.onnx"]  # Probes removed.


@pytest.mark.parametrize("speed_floor", [0.0, 1000.0])  # Every step is tried; the first step is too slow.
def test_fallback_keeps_sensitive_layers_float_then_gives_up_loudly(exported_model, clip_features, tmp_path,
                                                                   monkeypatch, speed_floor):
    monkeypatch.setattr(int8_sensitivity, "MIN_FALLBACK_SPEEDUP", speed_floor)  # Else the path depends on timing.
    features, labels, calibration = clip_features
    out, report_path = tmp_path / "model.int8.onnx", tmp_path / "parity.int8.json"
    with pytest.raises(VariantRejectedError, match="fallback: 1 most sensitive layer.s. in float") as info:
        quantize_int8(exported_model.model_path, out, calibration, features, labels=labels, min_agreement=1.01,
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
    assert all(t["op_types"] == list(STREAM_OP_TYPES) and set(t["float"]) <= set(record["stream_layers"])
               for t in stream)
    # The skip paths in float (every conv INT8), then the deeper half of the stream, then all of it.
    assert [(len(t["float"]), t["float_skips"]) for t in stream] == [(0, True), (6, False), (11, False)]


def test_the_residual_stream_is_what_each_block_reads_and_its_skip_carries(exported_model, tmp_path):
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    stream = stream_layers(prepared, layer_nodes(prepared))
    blocks = [f"layer{stage}.{block}" for stage in range(1, 5) for block in range(2)]  # resnet18: 4 x 2 blocks.
    assert stream == [name for block in blocks for name in (f"{block}.conv1", f"{block}.downsample.0")
                      if name in stream]  # Graph order.
    assert set(stream) == {f"{b}.conv1" for b in blocks} | {f"layer{s}.0.downsample.0" for s in (2, 3, 4)}
