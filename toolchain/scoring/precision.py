"""Which model file a scoring session runs: the fp32 `model.onnx` the user named, or its certified fp16 variant.

Pure functions of their arguments and the files beside the model, so they are tested on machines without a GPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from toolchain.errors import ModelMetadataError, ScoringError
from toolchain.inference.contract import read_metadata, report_path, variant_path
from toolchain.inference.providers import CUDA_EP


class Precision(str, Enum):
    """auto = the certified fp16 variant on CUDA, the certified INT8 variant on CPU, else the named file; fp32 =
    the named file always; fp16 / int8 = that variant wherever it passed its report."""

    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


PRECISION_CHOICES = tuple(p.value for p in Precision)


@dataclass(frozen=True)
class ModelChoice:
    """The file a session should run, and why (one line, for the user)."""

    path: Path
    reason: str


def _certificate(model: Path, kind: str, fix: str, judge) -> str:
    """"" when `model.<kind>.onnx` beside `model` is certified by `parity.<kind>.json`, else why not, in one line.

    Every certificate needs: the file; its report, readable, a JSON object that `judge(report, file)` accepts
    (`judge` returns "" or the reason); and the file's metadata equal to `model`'s apart from precision and the gate
    it records (a re-export without the variant leaves a stale one behind, with another export time)."""
    variant, report = variant_path(model, kind), report_path(model, kind)
    if not variant.is_file():
        return f"no {variant.name} beside {model.name} ({fix})"
    try:
        verdict = json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        return f"{report.name} is missing or unreadable ({type(exc).__name__}): {fix}"
    if not isinstance(verdict, dict) or Path(str(verdict.get("model_path", ""))).name != variant.name:
        return f"{report.name} is not the {kind} report of {variant.name}: {fix}"
    problem = judge(verdict, variant)
    if problem:
        return f"{report.name} {problem}: {fix}"
    try:
        base, candidate = read_metadata(model), read_metadata(variant)
    except ModelMetadataError as exc:
        return f"cannot compare {variant.name} with {model.name}: {exc}"
    if dataclasses.replace(candidate, precision=base.precision, gate=base.gate) != base:
        return f"{variant.name} was exported from another {model.name} (metadata differ): {fix}"
    return ""


def audio_certificate(model: Path) -> str:
    """"" when `model.audio.onnx` beside `model` passed its gate (parity.audio.json), else why not."""
    def judge(verdict: dict, audio: Path) -> str:
        passed = verdict.get("passed") is True
        return "" if passed else f"does not certify {audio.name} ({verdict.get('reason', 'no reason given')})"

    return _certificate(model, "audio", "run `toolchain export-onnx` (it writes model.audio.onnx unless "
                        "--no-audio-model)", judge)


def variant_certificate(model: Path, precision: str, judged_on_cuda: bool = False) -> str:
    """"" when `model`'s `precision` variant (fp16 or int8) may stand in for it, else the one-line reason.

    Its report must be a `precision` report that says "kept"; with `judged_on_cuda`, judged on the CUDA EP (a CPU
    judgement of fp16 covers weight rounding only: ORT's CPU EP computes in float32, so it cannot see float16
    overflow, which untrained or badly scaled ResNets reach).
    """
    def judge(verdict: dict, variant: Path) -> str:
        if verdict.get("precision") != precision:
            return f"is not the {precision} report of {variant.name}"
        if verdict.get("status") != "kept" or verdict.get("kept") is not True:
            return f"says {variant.name} failed ({verdict.get('reason', 'no reason given')})"
        if judged_on_cuda and verdict.get("provider") != CUDA_EP:
            return f"says {variant.name} was judged on {verdict.get('provider')}, not CUDA"
        return ""

    fix = f"run `toolchain export-onnx --{precision}`" + (" on a GPU machine" if judged_on_cuda else "")
    return _certificate(model, precision, fix, judge)


def choose_model_file(model: Path, on_cuda: bool, precision: str = "auto") -> ModelChoice:
    """Which file to run for `model` (the fp32 `model.onnx` a user names).

    precision "fp32": `model` itself. "auto": on CUDA, its fp16 variant when certified on CUDA (faster there),
    on the CPU its INT8 variant when certified (ORT's CPU INT8 kernels are faster; fp16 is slower there, as
    the CPU EP lacks most float16 kernels), else `model`. "fp16" / "int8": that variant wherever it passed its
    report, on any provider; `ScoringError` when it has not.
    """
    if precision not in PRECISION_CHOICES:
        raise ScoringError(f"precision={precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    if precision == "fp32":
        return ModelChoice(model, "precision fp32 requested")
    wanted = precision if precision != "auto" else ("fp16" if on_cuda else "int8")
    problem = variant_certificate(model, wanted, judged_on_cuda=precision == "auto" and wanted == "fp16")
    if not problem:
        variant = variant_path(model, wanted)
        return ModelChoice(variant, f"{report_path(model, wanted).name} certifies {variant.name}")
    if precision != "auto":
        raise ScoringError(f"precision {precision} requested for {model} but {problem}")
    return ModelChoice(model, problem)
