"""model.audio.onnx: the feature contract in standard ONNX ops, and its gate. FSDD: CC BY-SA 4.0."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from toolchain.audio.config import FeatureConfig
from toolchain.audio.features import fix_length_fast, log_mel_fast, padded_clip
from toolchain.errors import VariantRejectedError
from toolchain.export.audio_graph import frontend_graph
from toolchain.export.audio_parity import AudioThresholds, check_audio_model
from toolchain.export.clips import Clip
from toolchain.inference.contract import read_metadata, report_path, variant_path
from toolchain.training.checkpoint import load_checkpoint

CONFIG = FeatureConfig(clip_seconds=1.0)


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    path = tmp_path_factory.mktemp("frontend") / "frontend.onnx"
    onnx.save(frontend_graph(CONFIG, 18, 10), str(path))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, rows, trim=True):
    width = max(len(r) for r in rows)
    batch = np.zeros((len(rows), width), dtype=np.float32)
    for k, r in enumerate(rows):
        batch[k, :len(r)] = r
    feeds = {"waveform": batch, "lengths": np.array([len(r) for r in rows]), "trim": np.array(trim)}
    return session.run(["features"], feeds)[0]


def test_graph_features_equal_the_library_on_hard_rows(frontend):
    rng = np.random.default_rng(0)
    sr = CONFIG.sample_rate
    t = np.arange(int(0.6 * sr)) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    quiet = rng.normal(0, 1e-5, sr // 2).astype(np.float32)
    rows = [
        np.concatenate([quiet, tone, quiet]),  # Silence to trim on both sides.
        rng.normal(0, 0.3, 3 * sr).astype(np.float32),  # Longer than a clip: cut.
        np.zeros(1000, dtype=np.float32),  # Silent: all-zero image.
        tone[:700],  # Shorter than one trim frame.
        np.float32(1e-3) * tone,  # Quiet but not silent.
    ]
    features = _run(frontend, rows)
    assert features.shape == (len(rows), CONFIG.channels, CONFIG.n_mels, CONFIG.num_frames)
    for k, y in enumerate(rows):
        reference = log_mel_fast(fix_length_fast(y, CONFIG), CONFIG)
        assert np.abs(features[k, 0] - reference).max() < 1e-3, k
        assert np.array_equal(features[k, 0], features[k, 2])
        alone = _run(frontend, [y])[0, 0]  # Batch of one: the padding of the others never leaks in.
        assert np.abs(alone - features[k, 0]).max() < 1e-5
    assert not features[2].any()
    untrimmed = _run(frontend, rows[:2], trim=False)
    for k in range(2):
        assert np.abs(untrimmed[k, 0] - log_mel_fast(padded_clip(rows[k], CONFIG), CONFIG)).max() < 1e-3


def test_export_writes_a_certified_audio_model(exported_model, onnx_model):
    audio = variant_path(onnx_model, "audio")
    report = json.loads(report_path(onnx_model, "audio").read_text())
    assert exported_model.audio is not None and report["passed"] and report["model_path"] == str(audio)
    assert report["n_clips"] >= 80 and report["batch_sizes"] == [1, 2, 3]
    assert max(report["max_feature_diff"].values()) <= 1e-3 and min(report["label_agreement"].values()) == 1.0
    meta = read_metadata(audio)
    assert meta.classes == read_metadata(onnx_model).classes
    contract = {p.key: p.value for p in onnx.load(str(audio), load_external_data=False).metadata_props}
    assert json.loads(contract["toolchain.input_contract"])["sample_rate"] == meta.feature_config.sample_rate
    graph = onnx.load(str(audio))
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # Standard ops only.


def test_the_gate_fails_loudly_and_keeps_nothing(exported_model, onnx_model, tmp_path):
    ckpt = load_checkpoint(exported_model.parity.checkpoint_path)
    clips = [Clip(p) for p in ckpt.val_files[:6]]
    with pytest.raises(VariantRejectedError, match="features differ"):
        check_audio_model(variant_path(onnx_model, "audio"), ckpt, clips, report_path=tmp_path / "r.json",
                          thresholds=AudioThresholds(max_feature_diff=1e-12))
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_a_broken_front_end_is_deleted_and_model_onnx_kept(exported_model, onnx_model, tmp_path, monkeypatch):
    from toolchain.export import audio_graph
    from toolchain.export.certify import ExportOptions, export_and_certify

    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint = shutil.copy(exported_model.parity.checkpoint_path, folder)
    export_and_certify(checkpoint, ExportOptions(parity_samples=3, variant_samples=6))
    assert (folder / "model.audio.onnx").is_file()
    monkeypatch.setattr(audio_graph, "TOP_DB", 20.0)  # Sabotage: a front end that clips 60 dB too early.
    with pytest.raises(VariantRejectedError, match="audio model deleted") as caught:
        export_and_certify(checkpoint, ExportOptions(parity_samples=3, variant_samples=6))
    assert not (folder / "model.audio.onnx").exists() and (folder / "model.onnx").is_file()
    assert caught.value.result is not None and caught.value.result.model_path == folder / "model.onnx"
    assert json.loads((folder / "parity.audio.json").read_text())["passed"] is False
