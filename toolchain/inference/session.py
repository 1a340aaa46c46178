"""ONNX Runtime sessions, opened one way everywhere (scoring, parity, variant reports, the benchmark), and batched
inference over feature arrays. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolchain.cpu import available_cores
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME
from toolchain.inference.providers import (
    CPU_EP,
    CUDA_EP,
    cuda_usable,
    execution_providers,
    preload_cuda_libraries,
)


def candidate_providers() -> list[str]:
    """CPU always; CUDA too when it is usable here (onnxruntime-gpu lists CUDA even on CPU-only machines)."""
    return [CPU_EP, CUDA_EP] if cuda_usable() else [CPU_EP]


def open_session(model_path: str | Path, provider: str = CPU_EP, *, threads: int | None = None, device_id: int = 0,
                 conv_algo_search: str = "EXHAUSTIVE") -> Any:
    """A fresh `onnxruntime.InferenceSession` on `provider` (CPU_EP or CUDA_EP), `threads` intra-op threads
    (None: every core). CUDA gets its EP options and keeps a CPU fallback for the ops it lacks.

    Check `session.get_providers()[0]`: ORT falls back to CPU silently when the CUDA EP cannot load. ORT's own
    exceptions (a damaged or foreign file) propagate; callers turn them into their one-line errors.
    """
    import onnxruntime as ort

    on_cuda = provider == CUDA_EP
    if on_cuda:
        preload_cuda_libraries()  # The CUDA 13 / cuDNN 9 libraries from pip packages, if ORT can't find its own.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    # Idle ORT threads busy-wait by default; on a small CPU that spinning steals the decode workers' cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # Errors only: fallback chatter is reported by us, in one line.
    providers = execution_providers(on_cuda, device_id, conv_algo_search)
    return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(batch, n_classes) logits -> probabilities, computed in float64 (logits of untrained nets reach 1e7)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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


def run_batches(session: Any, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits (n, n_classes) float32 for features (n, channels, n_mels, frames), fed `batch_size` at a time."""
    outputs = [run_logits(session, features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    return np.concatenate(outputs).astype(np.float32, copy=False)
