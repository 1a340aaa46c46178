"""ONNX Runtime sessions on real execution providers, and batched inference over feature arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolchain.onnx_metadata import INPUT_NAME, OUTPUT_NAME

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def candidate_providers() -> list[str]:
    """CPU always; CUDA only when a CUDA device exists (onnxruntime-gpu lists CUDA even on CPU-only machines)."""
    import onnxruntime as ort

    providers = [CPU]
    if CUDA in ort.get_available_providers() and torch.cuda.is_available():
        providers.append(CUDA)
    return providers


def open_session(model_path: str | Path, provider: str = CPU):
    """A fresh ORT session on `provider` (CUDA keeps a CPU fallback for ops it lacks).

    Check `session.get_providers()[0]`: ORT falls back to CPU silently when the CUDA EP cannot load.
    """
    import onnxruntime as ort

    if provider == CUDA and hasattr(ort, "preload_dlls"):
        try:  # Load the CUDA 13 / cuDNN libraries shipped with torch's CUDA build, if ORT can't find its own.
            ort.preload_dlls()
        except Exception:  # Best effort: the fallback check below reports a CUDA EP that still cannot load.
            pass
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Errors only: fallback chatter is reported by us, in one line.
    providers = [provider] if provider == CPU else [provider, CPU]
    return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)


def run_onnx(session, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits (n, n_classes) float32 for features (n, channels, n_mels, frames), fed `batch_size` at a time."""
    outputs = [
        session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(features[i : i + batch_size])})[0]
        for i in range(0, len(features), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32, copy=False)
