"""The library versions every export report records (a parity figure means little without them)."""

from __future__ import annotations

import platform

import numpy

from toolchain import __version__


def library_versions() -> dict[str, str]:
    # Deferred: together these take seconds to import, and only a report asks for their versions.
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    return {
        "toolchain": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
