"""ONNX Runtime sessions on real execution providers, and batched inference over feature arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolchain.onnx_metadata import INPUT_NAME, OUTPUT_NAME
from toolchain.providers import CPU_EP as CPU
from toolchain.providers import CUDA_EP as CUDA
from toolchain.providers import execution_providers, preload_cuda_libraries


def candidate_providers() -> list[str]:
    """CPU always; CUDA only when a CUDA device exists (onnxruntime-gpu lists CUDA even on CPU-only machines)."""
    import onnxruntime as ort
    import torch  # Here, not at the top: the scoring engine imports this module and never needs torch.

    providers = [CPU]
    if CUDA in ort.get_available_providers() and torch.cuda.is_available():
        providers.append(CUDA)
    return providers


def open_session(model_path: str | Path, provider: str = CPU):
    """A fresh ORT session on `provider` (CUDA gets the engine's CUDA EP options and keeps a CPU fallback).

    Check `session.get_providers()[0]`: ORT falls back to CPU silently when the CUDA EP cannot load.
    """
    import onnxruntime as ort

    if provider == CUDA:
        preload_cuda_libraries()  # The CUDA 13 / cuDNN 9 libraries from pip packages, if ORT can't find its own.
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Errors only: fallback chatter is reported by us, in one line.
    providers = execution_providers(use_cuda=True) if provider == CUDA else [provider]
    return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)


def run_logits(
    session: Any,
    batch: np.ndarray,
    *,
    io_binding: bool = False,
    device: str = "cpu",
    device_id: int = 0,
    pad_to: int | None = None,
) -> np.ndarray:
    """Logits (n, n_classes) float32 of one batch of features (n, channels, n_mels, frames) float32.

    `io_binding`: run through `session.io_binding()`, ORT's documented way to feed a non-CPU device: the input is
    bound from host memory and copied to the device once per run, the output is allocated by ORT on `device`
    ("cpu" or "cuda", `device_id`) from its arena and copied back once by `copy_outputs_to_cpu`. It works on
    every EP, so a CPU test proves it returns what `session.run` does. (Not timed on a GPU in this project.)
    `pad_to`: zero-pad a short batch to this many rows and drop their logits. Rows are independent (eval-mode
    BatchNorm), so results do not change; on CUDA it keeps every call at one shape, so cuDNN's algorithm search
    runs once per process instead of once per leftover batch size.
    """
    n = len(batch)
    if pad_to is not None and n < pad_to:
        batch = np.concatenate([batch, np.zeros((pad_to - n, *batch.shape[1:]), dtype=batch.dtype)])
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if io_binding:
        binding = session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, batch)
        binding.bind_output(OUTPUT_NAME, device, device_id)
        session.run_with_iobinding(binding)
        logits = binding.copy_outputs_to_cpu()[0]
    else:
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return np.asarray(logits[:n], dtype=np.float32)


def run_onnx(session, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits (n, n_classes) float32 for features (n, channels, n_mels, frames), fed `batch_size` at a time."""
    outputs = [run_logits(session, features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    return np.concatenate(outputs).astype(np.float32, copy=False)
