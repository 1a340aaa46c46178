"""Which ONNX Runtime execution provider runs a model, and with which CUDA options.

The decisions here are pure functions of their arguments (plus libraries on disk), so they are tested on machines
without a GPU; `toolchain.inference.session` and the scoring engine apply them. Nothing here imports torch.

- `execution_providers`: the provider list for a session (the CUDA EP with its options, then CPU).
- `preload_cuda_libraries` / `cuda_unavailable_message`: onnxruntime-gpu >= 1.27 needs the CUDA 13 and cuDNN 9
  libraries; torch's CUDA build and `onnxruntime-gpu[cuda,cudnn]` ship them as pip packages that
  `onnxruntime.preload_dlls()` loads. When CUDA still cannot run, the message says which part is missing.
- `cuda_usable`: the one answer to "can the CUDA EP run here" (ORT lists it even on CPU-only machines).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
from enum import Enum
from typing import Any

from toolchain.errors import ScoringError

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


class Provider(str, Enum):
    """Where a model runs: auto = the CUDA EP when it really starts, else CPU; cuda = fail unless CUDA runs."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ConvAlgoSearch(str, Enum):
    """cuDNN convolution algorithm choice: EXHAUSTIVE times every algorithm once per shape; HEURISTIC guesses."""

    EXHAUSTIVE = "EXHAUSTIVE"
    HEURISTIC = "HEURISTIC"
    DEFAULT = "DEFAULT"


PROVIDERS = tuple(p.value for p in Provider)
CONV_ALGO_SEARCHES = tuple(c.value for c in ConvAlgoSearch)
CUDA_FIX = (
    "pip install 'onnxruntime-gpu[cuda,cudnn]' (or torch's CUDA 13 build) and an NVIDIA driver for CUDA 13, "
    "or use --provider auto/cpu"
)

# Fixed CUDA EP options: no workload of ours has a reason to change them, so they are not EngineConfig fields.
# - Let cuDNN use as much scratch memory as its fastest convolution algorithm wants: a ResNet's weights and a
#   batch of spectrograms leave a GPU mostly empty, and a workspace cap can rule the fastest algorithm out.
# - Copy inputs on the compute stream: separate copy streams buy nothing for one model fed from the host, and
#   ORT documents data races for some models without it.
CUDA_FIXED_OPTIONS = {"cudnn_conv_use_max_workspace": "1", "do_copy_in_default_stream": "1"}


def cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads; without it the CUDA EP cannot start (and ORT logs an error)."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def cuda_usable() -> bool:
    """True when this onnxruntime has the CUDA EP and the NVIDIA driver loads (the EP may still fail to start:
    check `session.get_providers()` after opening a session)."""
    import onnxruntime as ort

    return CUDA_EP in ort.get_available_providers() and cuda_driver_present()


def cuda_provider_options(device_id: int = 0, conv_algo_search: str = "EXHAUSTIVE") -> dict[str, str]:
    """Options for ORT's CUDA EP (names as in ORT's CUDA Execution Provider documentation).

    EXHAUSTIVE times every cuDNN algorithm once per input shape and caches the winner: right for our fixed-shape
    batches (the engine pads the last batch of a run on CUDA so every call has the same shape).
    """
    if conv_algo_search not in CONV_ALGO_SEARCHES:
        raise ScoringError(f"conv_algo_search={conv_algo_search!r} is not one of {', '.join(CONV_ALGO_SEARCHES)}")
    return {"device_id": str(device_id), "cudnn_conv_algo_search": conv_algo_search, **CUDA_FIXED_OPTIONS}


def execution_providers(use_cuda: bool, device_id: int = 0, conv_algo_search: str = "EXHAUSTIVE") -> list[Any]:
    """The `providers=` argument of `onnxruntime.InferenceSession`: CPU alone, or CUDA (with options) then CPU,
    which takes the ops CUDA lacks."""
    if not use_cuda:
        return [CPU_EP]
    return [(CUDA_EP, cuda_provider_options(device_id, conv_algo_search)), CPU_EP]


@functools.cache
def preload_cuda_libraries() -> str:
    """Load the CUDA 13 / cuDNN 9 libraries onnxruntime-gpu needs from the nvidia-* pip packages, once.

    Returns "" when nothing was reported missing, else ORT's complaint in one line. `preload_dlls` prints its
    failures instead of raising, so they are captured here (a CLI's stdout carries results, not ORT's chatter).
    """
    import onnxruntime as ort

    if not hasattr(ort, "preload_dlls"):
        return ""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            ort.preload_dlls()
    except Exception as exc:  # Best effort: the session's real provider is checked afterwards either way.
        return f"onnxruntime.preload_dlls() failed: {type(exc).__name__}: {exc}"
    failures = [line.strip() for line in captured.getvalue().splitlines() if line.startswith("Failed to load")]
    return "; ".join(failures)[:400]


def cuda_unavailable_message(available: list[str], driver_found: bool, fell_back_to: str | None = None,
                             preload_report: str = "") -> str:
    """One line saying why provider 'cuda' cannot run here, and the fix."""
    head = "provider 'cuda' requested but "
    if CUDA_EP not in available:
        return (head + f"this onnxruntime has no CUDA execution provider (providers: {available}): "
                "pip install onnxruntime-gpu in place of onnxruntime, or use --provider auto/cpu")
    if not driver_found:
        return head + f"no NVIDIA driver was found (libcuda.so.1 does not load): {CUDA_FIX}"
    why = f"onnxruntime.preload_dlls() reported: {preload_report}" if preload_report else (
        "onnxruntime.preload_dlls() loaded the pip-installed libraries but the EP still did not start")
    return (head + f"ONNX Runtime fell back to {fell_back_to or CPU_EP}: it needs the CUDA 13 and cuDNN 9 "
            f"libraries ({why}): {CUDA_FIX}")
