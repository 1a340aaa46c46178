"""The parity gate on real FSDD clips (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).

It must pass an honest export at batch 1/2/odd, and fail, loudly and completely, on a tampered one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from toolchain.errors import ParityDataError, ParityDescriptionError, ParityError, ParityToleranceError
from toolchain.export.parity import ParityThresholds, check_parity, compare_logits
from toolchain.inference.contract import ModelMetadata, write_metadata
from toolchain.inference.providers import CPU_EP, CUDA_EP
from toolchain.inference.session import candidate_providers
from toolchain.training.checkpoint import load_checkpoint

N_CLIPS = 4  # Enough for batch 3 to include a ragged last batch.


def tampered_copy(model_path: Path, dest: Path, edit) -> Path:
    model = onnx.load(str(model_path))
    edit(model)
    onnx.save_model(model, str(dest), save_as_external_data=False)
    return dest


def scale_largest_conv_weight(model) -> None:
    """Multiply one 4-D weight initializer by 1.5: a plausible silent corruption."""
    init = max((t for t in model.graph.initializer if len(t.dims) == 4), key=lambda t: np.prod(t.dims))
    array = onnx.numpy_helper.to_array(init) * np.float32(1.5)
    init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))


def test_honest_export_passes_at_batch_1_2_and_odd(exported_model):
    report = exported_model.parity
    assert report.passed and report.precision == "fp32"
    cpu = [r for r in report.results if r.provider == CPU_EP]
    assert sorted(r.batch_size for r in cpu) == [1, 2, 3]
    for r in report.results:
        assert r.top1_agreement == 1.0
        assert r.max_abs_prob_diff <= report.thresholds.prob_atol
        assert r.max_rel_logit_diff <= report.thresholds.logit_rtol
        assert r.n_clips == len(report.clips) > 0
    if CUDA_EP in candidate_providers():
        assert any(r.provider == CUDA_EP for r in report.results)


def test_parity_json_records_every_figure(exported_model):
    data = json.loads(exported_model.parity_path.read_text())
    assert data["status"] == "passed" and data["model_path"] == str(exported_model.model_path)
    assert data["thresholds"] == dataclasses.asdict(ParityThresholds())
    assert set(data["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxscript", "toolchain"}
    assert data["opset"] == exported_model.parity.opset and data["feature_fingerprint"]
    for row in data["results"]:
        assert set(row) >= {"provider", "batch_size", "max_abs_logit_diff", "max_rel_logit_diff",
                            "max_abs_prob_diff", "top1_agreement", "passed"}


def test_corrupted_weight_fails_with_report(exported_model, clips, tmp_path):
    bad = tampered_copy(exported_model.model_path, tmp_path / "bad.onnx", scale_largest_conv_weight)
    report_path = tmp_path / "parity.json"
    with pytest.raises(ParityToleranceError) as info:
        check_parity(bad, exported_model.parity.checkpoint_path, clips, report_path=report_path)
    assert "\n" not in str(info.value)
    data = json.loads(report_path.read_text())
    assert data["status"] == "failed" and data["failures"]
    # Every batch size was still measured: failures are collected, not raised at the first one.
    assert sorted(r["batch_size"] for r in data["results"] if r["provider"] == CPU_EP) == [1, 2, 3]
    assert all(not r["passed"] for r in data["results"])


def test_description_mismatches_are_all_listed(exported_model, clips, tmp_path):
    ckpt = load_checkpoint(exported_model.parity.checkpoint_path)

    def relabel_and_rescale(model) -> None:
        meta = ModelMetadata(
            classes=tuple(reversed(ckpt.classes)),
            feature_config=dataclasses.replace(ckpt.feature_config, n_mels=64),
            arch=ckpt.arch.value,
            checkpoint_sha256="0" * 64,
        )
        write_metadata(model, meta)

    bad = tampered_copy(exported_model.model_path, tmp_path / "relabelled.onnx", relabel_and_rescale)
    with pytest.raises(ParityDescriptionError) as info:
        check_parity(bad, ckpt, clips)
    failures = info.value.report.failures
    assert any("fingerprint" in f for f in failures)
    assert any("class labels" in f for f in failures)
    assert any("sha256" in f for f in failures)
    assert len(failures) >= 3


def test_model_without_metadata_is_refused(exported_model, clips, tmp_path):
    bare = tampered_copy(exported_model.model_path, tmp_path / "bare.onnx", lambda m: m.ClearField("metadata_props"))
    with pytest.raises(ParityDescriptionError, match="export-onnx"):
        check_parity(bare, exported_model.parity.checkpoint_path, clips)


def test_undecodable_clips_are_skipped_and_none_usable_is_an_error(exported_model, clips, tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEnot really audio" * 10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    report = check_parity(exported_model.model_path, exported_model.parity.checkpoint_path,
                          [garbage, clips[0], empty], batch_sizes=(1, 2))
    assert report.passed and report.clips == (str(clips[0]),)
    assert {p for p, _ in report.skipped} == {str(garbage), str(empty)}
    assert any("skipped 2" in n for n in report.notes)

    with pytest.raises(ParityDataError, match="--parity-data"):
        check_parity(exported_model.model_path, exported_model.parity.checkpoint_path, [garbage, empty])


def test_damaged_file_is_a_parity_error(exported_model, clips, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported_model.model_path.read_bytes()[:4096])
    with pytest.raises(ParityDescriptionError, match="cannot load"):
        check_parity(broken, exported_model.parity.checkpoint_path, clips)


def test_missing_model_names_the_file(exported_model, clips, tmp_path):
    with pytest.raises(ParityError, match="nowhere.onnx"):
        check_parity(tmp_path / "nowhere.onnx", exported_model.parity.checkpoint_path, clips)


def test_explicit_cuda_that_falls_back_is_a_failure(exported_model, clips, tmp_path):
    """onnxruntime-gpu lists CUDA on CPU-only machines and silently runs on CPU; asking for it must not pass."""
    import onnxruntime as ort

    assert CUDA_EP in ort.get_available_providers(), "onnxruntime-gpu (pinned) always lists the CUDA EP"
    copy = tmp_path / "m.onnx"
    shutil.copy(exported_model.model_path, copy)
    if CUDA_EP in candidate_providers():
        report = check_parity(copy, exported_model.parity.checkpoint_path, clips[:2], providers=[CUDA_EP])
        assert [r.provider for r in report.results] == [CUDA_EP] * 3
    else:
        with pytest.raises(ParityToleranceError, match="fell back"):
            check_parity(copy, exported_model.parity.checkpoint_path, clips[:2], providers=[CUDA_EP])


def test_logits_are_judged_relatively_and_probabilities_absolutely():
    reference = np.array([[1.0e7, -2.0e7, 3.0e6], [4.0, 1.0, -2.0]], dtype=np.float32)
    candidate = reference * np.float32(1 + 2e-6)  # float32-level drift at a 1e7 scale: ~20 absolute.
    figures = compare_logits(reference, candidate)
    assert figures["max_abs_logit_diff"] > 1.0
    assert figures["max_rel_logit_diff"] < 1e-5
    assert figures["max_abs_prob_diff"] < 1e-4 and figures["top1_agreement"] == 1.0

    # O(1) logits of a trained model: 1.4e-4 absolute (measured ORT vs PyTorch on ResNet152) passes, 5e-3 fails.
    small = np.array([[0.3, -0.1, 0.05]], dtype=np.float32)
    assert compare_logits(small, small + np.float32(1.4e-4))["max_rel_logit_diff"] <= ParityThresholds().logit_rtol
    assert compare_logits(small, small + np.float32(5e-3))["max_rel_logit_diff"] > ParityThresholds().logit_rtol

    swapped = reference[:, [1, 0, 2]]
    figures = compare_logits(reference, swapped)
    assert figures["top1_agreement"] == 0.0 and figures["max_abs_prob_diff"] > 0.5


def test_default_resnet152_exports_and_passes_parity(tmp_path, fsdd_dir, clips):
    """The reference notebook's default arch, random init (logits ~1e7), through the real exporter and gate on CPU."""
    import torch

    from toolchain.audio.config import DEFAULT_CONFIG
    from toolchain.export.certify import ExportOptions, export_and_certify
    from toolchain.training.checkpoint import make_payload, save_checkpoint
    from toolchain.training.config import DEFAULT_ARCH
    from toolchain.training.model import build_model

    torch.manual_seed(0)
    classes = [str(d) for d in range(10)]
    payload = make_payload(build_model(DEFAULT_ARCH, 10, weights="none"), DEFAULT_ARCH, classes, DEFAULT_CONFIG,
                           val_files=[str(c) for c in clips[:3]])
    checkpoint = save_checkpoint(payload, tmp_path / "resnet_152_model.pth")
    result = export_and_certify(checkpoint, ExportOptions(parity_samples=3))
    assert result.model_path == tmp_path / "model.onnx" and result.parity.passed
    assert sorted(r.batch_size for r in result.parity.results if r.provider == CPU_EP) == [1, 2, 3]
    assert json.loads((tmp_path / "parity.json").read_text())["status"] == "passed"
