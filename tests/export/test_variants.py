"""The FP16 variant: built with ORT's converter, float32 I/O kept, kept or deleted by rule and reported.

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import json

import onnx

from toolchain.errors import VariantRejectedError
from toolchain.export.variants import convert_fp16
from toolchain.inference.contract import read_metadata


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
