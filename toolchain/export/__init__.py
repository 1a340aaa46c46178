"""Export: a checkpoint -> a certified, self-describing `model.onnx` (+ INT8/FP16 variants). Never imports scoring.

The entry points are imported on first use: they load torch, which the CLI (for its option defaults) and scoring
processes must not pay for.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportOptions", "ExportResult", "export_and_certify", "verify_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from toolchain.export import certify  # Deferred: it loads torch (see above).

        return getattr(certify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
