"""Export: a checkpoint -> a certified, self-describing `model.onnx` (+ INT8/FP16 variants). Never imports scoring."""

from toolchain.export.certify import ExportOptions, ExportResult, export_and_certify, verify_model

__all__ = ["ExportOptions", "ExportResult", "export_and_certify", "verify_model"]
