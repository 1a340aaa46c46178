"""The parity gate: does a saved `.onnx` compute what its checkpoint computes, on real clips?

Separate from export on purpose (like Optimum's `validate_model_outputs`), but stricter: every failure is
collected, written to the report and raised; nothing is downgraded to a warning. Order of checks: the model's
description (metadata, names, shapes) first, values second, because values are meaningless for a model that
describes different labels or features.

Values: the checkpoint's PyTorch model in eval mode on CPU_EP is the reference. For every execution provider and
batch size we record the max abs and max relative logit difference, the max abs softmax-probability difference
and top-1 agreement. Logits get a relative bound because a random-init ResNet152 emits logits near 1e7 (its
BatchNorm running stats are 0/1), where an absolute 1e-4 is below float32 resolution; probabilities, bounded
to [0, 1], get an absolute one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from toolchain.errors import (
    ModelMetadataError,
    ParityDataError,
    ParityDescriptionError,
    ParityError,
    ParityToleranceError,
    one_line,
)
from toolchain.export.clips import Clip, featurize_clips
from toolchain.export.versions import library_versions
from toolchain.inference.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelMetadata,
    metadata_from_session,
    model_file_problem,
)
from toolchain.inference.providers import CPU_EP
from toolchain.inference.session import (
    candidate_providers,
    open_session,
    run_batches,
    softmax,
)
from toolchain.io import file_sha256, write_json
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.training.checkpoint import Checkpoint, load_checkpoint

DEFAULT_BATCH_SIZES = (1, 2, 3)  # 1 and 2 catch a batch axis frozen at export; an odd size catches pairing bugs.
REFERENCE_BATCH = 8  # PyTorch reference batch; results do not depend on it beyond float32 rounding.


# Below this logit scale the relative bound turns absolute: on a trained ResNet152's O(1) logits ORT and PyTorch
# fp32 legitimately differ by float32 rounding that a relative bound would magnify (figures: docs/performance.md).
LOGIT_SCALE_FLOOR = 10.0


@dataclass(frozen=True)
class ParityThresholds:
    """Pass criteria; defaults are for fp32, ORT CPU against eager PyTorch (measured margins: docs/performance.md)."""

    prob_atol: float = 1e-4  # Max |p_onnx - p_torch| over every softmax probability.
    top1_agreement: float = 1.0  # Fraction of clips whose argmax agrees: fp32 must agree on every clip.
    # Max over clips of max|l_onnx - l_torch| / max(max|l_torch|, LOGIT_SCALE_FLOOR): relative for large logits
    # (random-init ResNet152 reaches 1e7), absolute (1e-3) for trained models whose logits are O(1).
    logit_rtol: float = 1e-4


@dataclass(frozen=True)
class ParityResult:
    """One provider at one batch size, over all clips."""

    provider: str
    batch_size: int
    n_clips: int
    max_abs_logit_diff: float
    max_rel_logit_diff: float
    max_abs_prob_diff: float
    top1_agreement: float
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class ParityReport:
    model_path: str
    checkpoint_path: str
    model_sha256: str
    checkpoint_sha256: str
    precision: str
    opset: int | None
    feature_fingerprint: str
    thresholds: ParityThresholds
    results: tuple[ParityResult, ...]
    clips: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    failures: tuple[str, ...]
    notes: tuple[str, ...] = ()
    clip_source: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = "passed" if self.passed else "failed"
        data["results"] = [{**dataclasses.asdict(r), "passed": r.passed} for r in self.results]
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return data


def run_torch(model: torch.nn.Module, features: np.ndarray, batch_size: int = REFERENCE_BATCH) -> np.ndarray:
    """Eval-mode PyTorch logits (n, n_classes) float32 on CPU."""
    model.eval()
    with torch.inference_mode():
        outputs = [model(torch.from_numpy(features[i : i + batch_size])) for i in range(0, len(features), batch_size)]
    return torch.cat(outputs).numpy().astype(np.float32, copy=False)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Figures for (n, n_classes) logits: abs/rel logit diff, abs probability diff, top-1 agreement."""
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    scale = np.maximum(np.abs(reference.astype(np.float64)).max(axis=1), LOGIT_SCALE_FLOOR)
    return {
        "max_abs_logit_diff": float(diff.max()),
        "max_rel_logit_diff": float((diff.max(axis=1) / scale).max()),
        "max_abs_prob_diff": float(np.abs(softmax(candidate) - softmax(reference)).max()),
        "top1_agreement": float(np.mean(candidate.argmax(axis=1) == reference.argmax(axis=1))),
    }


def _judge(figures: dict[str, float], t: ParityThresholds, where: str) -> tuple[str, ...]:
    failures = []
    # `not (x <= bound)` also fails NaN figures.
    if not figures["max_rel_logit_diff"] <= t.logit_rtol:
        failures.append(f"{where}: max rel logit diff {figures['max_rel_logit_diff']:.3g} > {t.logit_rtol:g}")
    if not figures["max_abs_prob_diff"] <= t.prob_atol:
        failures.append(f"{where}: max abs prob diff {figures['max_abs_prob_diff']:.3g} > {t.prob_atol:g}")
    if not figures["top1_agreement"] >= t.top1_agreement:
        failures.append(f"{where}: top-1 agreement {figures['top1_agreement']:.2%} < {t.top1_agreement:.2%}")
    return tuple(failures)


def check_description(meta: ModelMetadata, session, ckpt: Checkpoint, ckpt_sha: str) -> list[str]:
    """Everything the model says about itself must match the checkpoint (before any value is compared)."""
    failures = []
    if meta.feature_fingerprint != ckpt.feature_config.fingerprint:
        failures.append(
            f"feature fingerprint {meta.feature_fingerprint} in the model != {ckpt.feature_config.fingerprint} "
            "in the checkpoint"
        )
    if tuple(meta.classes) != tuple(ckpt.classes):
        failures.append(f"class labels {list(meta.classes)} in the model != {list(ckpt.classes)} in the checkpoint")
    if meta.checkpoint_sha256 and meta.checkpoint_sha256 != ckpt_sha:
        failures.append(
            f"model was exported from checkpoint sha256 {meta.checkpoint_sha256[:12]}…, "
            f"not from {ckpt.path.name} ({ckpt_sha[:12]}…)"
        )
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        failures.append(
            f"model I/O {[i.name for i in inputs]} -> {[o.name for o in outputs]}, expected "
            f"[{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]"
        )
    elif list(inputs[0].shape[1:]) != list(ckpt.feature_config.input_shape) or outputs[0].shape[1] != ckpt.num_classes:
        failures.append(
            f"model shapes {inputs[0].shape} -> {outputs[0].shape}, expected "
            f"[batch, {', '.join(map(str, ckpt.feature_config.input_shape))}] -> [batch, {ckpt.num_classes}]"
        )
    return failures


class _Gate:
    """Accumulates what the gate learns, so the report is complete whichever step fails."""

    def __init__(self, onnx_path: Path, ckpt: Checkpoint, thresholds: ParityThresholds, report_path: Path | None,
                 name: Path):
        self.onnx_path, self.ckpt, self.thresholds, self.report_path = onnx_path, ckpt, thresholds, report_path
        self.name = name  # The path users know the model by (not a temporary file being certified).
        self.model_sha = file_sha256(onnx_path)
        self.ckpt_sha = file_sha256(ckpt.path)
        self.meta: ModelMetadata | None = None
        self.results: list[ParityResult] = []
        self.clips: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.clip_source = ""

    def report(self, failures: Sequence[str]) -> ParityReport:
        meta = self.meta
        report = ParityReport(
            model_path=str(self.name),
            checkpoint_path=str(self.ckpt.path),
            model_sha256=self.model_sha,
            checkpoint_sha256=self.ckpt_sha,
            precision=meta.precision if meta else "unknown",
            opset=meta.opset if meta else None,
            feature_fingerprint=meta.feature_fingerprint if meta else "",
            thresholds=self.thresholds,
            results=tuple(self.results),
            clips=tuple(self.clips),
            skipped=tuple(self.skipped),
            failures=tuple(failures),
            notes=tuple(self.notes),
            clip_source=self.clip_source,
            versions=library_versions(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        if self.report_path is not None:
            write_json(report.to_dict(), self.report_path)
        return report

    def fail(self, error: type[ParityError], failures: Sequence[str]) -> NoReturn:
        report = self.report(failures)
        where = f" (details in {self.report_path})" if self.report_path else ""
        raise error(f"parity gate failed for {self.name} against {self.ckpt.path}: {'; '.join(failures)}{where}",
                    report=report)


def check_parity(
    onnx_path: str | Path,
    checkpoint_path: str | Path | Checkpoint,
    clips: Sequence[str | Path | Clip],
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    thresholds: ParityThresholds = ParityThresholds(),
    providers: Sequence[str] | None = None,
    report_path: str | Path | None = None,
    clip_source: str = "",
    progress: ProgressReporter | None = None,
    published_as: str | Path | None = None,
) -> ParityReport:
    """Certify the saved model at `onnx_path` against its checkpoint on real `clips`; return the passing report.

    `providers=None` means CPU plus CUDA when a CUDA device is really usable (a CUDA EP that silently fell back to
    CPU is noted and skipped; one named explicitly and unusable is a failure). Features are computed with the
    config from the model's metadata, which must match the checkpoint's fingerprint. Undecodable clips are skipped
    with a note. `report_path` (parity.json) is written whether the gate passes or not. `published_as`: the path
    the model will be published under, named in messages and the report instead of `onnx_path` (a temporary file).
    Raises `ParityDescriptionError`, `ParityDataError` or `ParityToleranceError` (all `ParityError`) listing
    every failure; the report is `exc.report`.
    """
    onnx_path = Path(onnx_path)
    problem = model_file_problem(onnx_path)
    if problem:
        raise ParityError(f"ONNX model {onnx_path} {problem}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ParityError(f"batch sizes {list(batch_sizes)} must be positive integers, e.g. 1 2 3")
    ckpt = checkpoint_path if isinstance(checkpoint_path, Checkpoint) else load_checkpoint(checkpoint_path)
    progress = progress or NullProgress()
    gate = _Gate(onnx_path, ckpt, thresholds, Path(report_path) if report_path else None,
                 Path(published_as) if published_as else onnx_path)
    gate.clip_source = clip_source

    try:
        session = open_session(onnx_path, CPU_EP)
    except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, ... for a damaged file.
        gate.fail(ParityDescriptionError, [f"ONNX Runtime cannot load the model ({one_line(exc)})"])
    try:
        gate.meta = metadata_from_session(session, str(onnx_path))
    except ModelMetadataError as exc:
        gate.fail(ParityDescriptionError, [str(exc)])
    described = check_description(gate.meta, session, ckpt, gate.ckpt_sha)
    if described:
        gate.fail(ParityDescriptionError, described)
    del session  # Each provider below gets a fresh session on the saved file.

    features, used, gate.skipped = featurize_clips(clips, gate.meta.feature_config, progress)
    gate.clips = [str(c.path) for c in used]
    if gate.skipped:
        gate.notes.append(f"skipped {len(gate.skipped)} undecodable clip(s), e.g. {gate.skipped[0][0]}")
    if not used:
        gate.fail(ParityDataError, [f"none of the {len(clips)} parity clips could be decoded: pass real audio with --parity-data"])

    progress.start("torch", "PyTorch reference", None)
    reference = run_torch(ckpt.build_model(), features)
    progress.finish("torch")

    failures: list[str] = []
    explicit = providers is not None
    for provider in providers if explicit else candidate_providers():
        session = open_session(onnx_path, provider)
        if session.get_providers()[0] != provider:
            message = f"{provider} is listed by onnxruntime but fell back to {session.get_providers()[0]}"
            (failures if explicit else gate.notes).append(message)
            continue
        progress.start("onnx", f"ONNX Runtime {provider.removesuffix('ExecutionProvider')}", len(batch_sizes))
        for batch in batch_sizes:
            figures = compare_logits(reference, run_batches(session, features, int(batch)))
            where = f"{provider.removesuffix('ExecutionProvider')} batch {batch}"
            result = ParityResult(provider, int(batch), len(used), **figures, failures=_judge(figures, thresholds, where))
            gate.results.append(result)
            failures.extend(result.failures)
            progress.advance("onnx")
        progress.finish("onnx")
    if not gate.results and not failures:
        failures.append("no execution provider could run the model")
    if failures:
        gate.fail(ParityToleranceError, failures)
    return gate.report([])
