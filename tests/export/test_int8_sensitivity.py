"""Per-layer INT8 sensitivity on real clips: every layer ranked by the noise it adds. FSDD: CC BY-SA 4.0."""

from __future__ import annotations

from toolchain.export.int8_build import build_int8, prepare_for_int8
from toolchain.export.int8_recipes import Int8Mode, Int8Recipe
from toolchain.export.int8_sensitivity import layer_sensitivity
from toolchain.export.onnx_graph import layer_nodes


def test_sensitivity_ranks_every_layer_by_the_noise_it_adds(exported_model, clip_features, tmp_path):
    _, _, calibration = clip_features
    prepared = prepare_for_int8(exported_model.model_path, tmp_path / "pre.onnx")
    everything = Int8Recipe(Int8Mode.u8s8, keep_float=("fc",))
    int8 = build_int8(prepared, tmp_path / "q.onnx", calibration, everything)
    layers = layer_nodes(prepared)
    ranking = layer_sensitivity(prepared, int8, calibration, layers, tmp_path)
    assert {name for name, _ in ranking} <= set(layers) and len(ranking) > 15  # The convs of a resnet18, and fc.
    losses = dict(ranking)
    assert [loss for _, loss in ranking] == sorted(losses.values(), reverse=True)
    assert "conv1" in losses and all(abs(v) < 200 for v in losses.values())  # Finite dB, the first conv measured.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.onnx", "q.onnx"]  # Probes removed.
