"""Which ONNX Runtime execution provider runs a model, with which CUDA options, and on which file.

The decisions here are pure functions of their arguments (plus files on disk), so they are tested on machines
without a GPU; `toolchain.engine` applies them. Nothing here imports torch.

- `execution_providers`: the provider list for a session (the CUDA EP with its options, then CPU).
- `preload_cuda_libraries` / `cuda_unavailable_message`: onnxruntime-gpu >= 1.27 needs the CUDA 13 and cuDNN 9
  libraries; torch's CUDA build and `onnxruntime-gpu[cuda,cudnn]` ship them as pip packages that
  `onnxruntime.preload_dlls()` loads. When CUDA still cannot run, the message says which part is missing.
- `choose_model_file`: on CUDA, the certified `model.fp16.onnx` beside `model.onnx` when there is one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import ModelMetadataError, ScoringError

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
PROVIDERS = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16")
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
FP16_REPORT = "parity.fp16.json"  # Written beside model.onnx by `toolchain export-onnx --fp16` (toolchain.certify).
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


@dataclass(frozen=True)
class ModelChoice:
    """The file a session should run, and why (one line, for the user)."""

    path: Path
    reason: str


def fp16_variant(model: Path) -> Path:
    """`model.onnx` -> `model.fp16.onnx` (the name `toolchain.certify.variant_path` gives it)."""
    return model.with_name(f"{model.stem}.fp16{model.suffix}")


def fp16_certificate(model: Path, judged_on_cuda: bool) -> str:
    """"" when `model`'s fp16 variant may stand in for it, else the one-line reason it may not.

    Certified means: `model.fp16.onnx` and `parity.fp16.json` sit beside `model`; the report is the fp16 report of
    that file and says "kept"; with `judged_on_cuda`, it was judged on the CUDA EP (a CPU judgement covers weight
    rounding only: ORT's CPU EP computes in float32, so it cannot see float16 overflow, which untrained or
    badly scaled ResNets reach); and the variant's metadata is `model`'s apart from precision (an fp32 re-export
    without --fp16 leaves a stale variant behind, with another export time).
    """
    from toolchain.onnx_metadata import read_metadata

    variant, report_path = fp16_variant(model), model.parent / FP16_REPORT
    fix = "run `toolchain export-onnx --fp16`" + (" on a GPU machine" if judged_on_cuda else "")
    if not variant.is_file():
        return f"no {variant.name} beside {model.name} ({fix} to make one)"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        return f"{report_path.name} is missing or unreadable ({type(exc).__name__}): {fix}"
    if not isinstance(report, dict) or report.get("precision") != "fp16" or \
            Path(str(report.get("model_path", ""))).name != variant.name:
        return f"{report_path.name} is not the fp16 report of {variant.name}: {fix}"
    if report.get("status") != "kept" or report.get("kept") is not True:
        return f"{report_path.name} says {variant.name} failed ({report.get('reason', 'no reason given')}): {fix}"
    if judged_on_cuda and report.get("provider") != CUDA_EP:
        return f"{variant.name} was judged on {report.get('provider')}, not CUDA: {fix}"
    try:
        base, candidate = read_metadata(model), read_metadata(variant)
    except ModelMetadataError as exc:
        return f"cannot compare {variant.name} with {model.name}: {exc}"
    if dataclasses.replace(candidate, precision=base.precision) != base:
        return f"{variant.name} was exported from another {model.name} (metadata differ): {fix}"
    return ""


def choose_model_file(model: Path, on_cuda: bool, precision: str = "auto") -> ModelChoice:
    """Which file to run for `model` (the fp32 `model.onnx` a user names).

    precision "fp32": `model` itself. "auto": on CUDA, its fp16 variant when certified on CUDA (faster there;
    see `fp16_certificate`), else `model`; on CPU always `model` (ORT's CPU EP lacks most float16 kernels, so
    fp16 is slower there). "fp16": the variant wherever it passed its report, on any provider (e.g. to check
    its results on a CPU); `ScoringError` when it has not.
    """
    if precision not in PRECISIONS:
        raise ScoringError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return ModelChoice(model, "precision fp32 requested")
    if precision == "auto" and not on_cuda:
        return ModelChoice(model, "on the CPU fp32 is faster than fp16")
    problem = fp16_certificate(model, judged_on_cuda=precision == "auto")
    if not problem:
        return ModelChoice(fp16_variant(model), f"{FP16_REPORT} certifies {fp16_variant(model).name}")
    if precision == "fp16":
        raise ScoringError(f"precision fp16 requested for {model} but {problem}")
    return ModelChoice(model, problem)
