"""The model-file contract: names of the model, its variants and their reports, in one place."""

from __future__ import annotations

from toolchain.inference.contract import MODEL_NAME, report_path, variant_path


def test_variant_and_report_names(tmp_path):
    model = tmp_path / MODEL_NAME
    assert variant_path(model, "fp32") == model
    assert variant_path(model, "int8") == tmp_path / "model.int8.onnx"
    assert variant_path(model, "fp16") == tmp_path / "model.fp16.onnx"
    assert report_path(model) == tmp_path / "parity.json"
    assert report_path(model, "int8") == tmp_path / "parity.int8.json"
    assert report_path(tmp_path / "other.onnx", "fp16") == tmp_path / "parity.fp16.json"
