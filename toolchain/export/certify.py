"""Export + parity gate + optional variants as one step: what `toolchain export-onnx` runs.

The fp32 model is exported under a temporary name next to its destination, certified by `check_parity` on the
saved file, and only then renamed to `model.onnx`. On failure the temporary file is deleted and a `model.onnx`
from an earlier export stays as it was, with its parity.json (the last good model is never lost); the failed
report is written to parity.json when there was no earlier model, else to parity.failed.json, and the error is
raised. When the gate passes but the OS refuses the rename, its report goes too (no report may say "passed" about
a model that is not there) and `OutputPathError` names the file; model.audio.onnx and the variants follow the same
rule. Output folder and parity clips are checked before the export starts.
"""

from __future__ import annotations

import dataclasses
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ExportError, OutputPathError, ParityDataError, ParityError, VariantRejectedError
from toolchain.export.audio_graph import write_audio_model
from toolchain.export.audio_parity import AudioParityReport, check_audio_model
from toolchain.export.clips import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_PARITY_SAMPLES,
    DEFAULT_VARIANT_SAMPLES,
    ClipSelection,
    featurize_clips,
    select_clips,
)
from toolchain.export.exporter import export_onnx, publishing
from toolchain.export.int8 import quantize_int8
from toolchain.export.int8_recipes import DEFAULT_INT8_MODE, INT8_CRITERION, Int8Mode
from toolchain.export.parity import (
    DEFAULT_BATCH_SIZES,
    ParityReport,
    ParityThresholds,
    check_parity,
)
from toolchain.export.variant_gate import VariantCriterion, judge, label_indices
from toolchain.export.variants import FP16_CRITERION, VariantReport, convert_fp16, evaluate_variant
from toolchain.inference.contract import MODEL_NAME, read_metadata, report_path, variant_path
from toolchain.inference.providers import CPU_EP, CUDA_EP
from toolchain.inference.session import candidate_providers
from toolchain.io import check_output_file, write_json
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.training.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ExportOptions:
    """Everything `export-onnx` can be asked for; defaults are the CLI's."""

    out: Path | None = None  # Destination .onnx (or a folder for model.onnx); default: next to the checkpoint.
    parity_data: Path | None = None  # Folder or CSV of real clips; default: the checkpoint's val_files.
    parity_samples: int = DEFAULT_PARITY_SAMPLES
    opset: int | None = None  # None: torch's recommended opset (recorded in the metadata).
    int8: bool = False
    fp16: bool = False
    thresholds: ParityThresholds = ParityThresholds()
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    int8_mode: Int8Mode = DEFAULT_INT8_MODE
    int8_criterion: VariantCriterion = INT8_CRITERION  # With labelled clips: accuracy bound + confident agreement.
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    variant_samples: int = DEFAULT_VARIANT_SAMPLES  # Clips a variant is judged on (at most what the source holds).
    audio_model: bool = True  # Also model.audio.onnx (waveform in), behind its own gate.


@dataclass(frozen=True)
class ExportResult:
    model_path: Path
    parity_path: Path
    parity: ParityReport
    variants: tuple[VariantReport, ...] = ()
    audio: AudioParityReport | None = None  # model.audio.onnx's gate, when it was built and kept.


def destination(checkpoint_path: Path, out: Path | None) -> Path:
    """`--out` as given (a folder means `<folder>/model.onnx`), else `model.onnx` beside the checkpoint."""
    if out is None:
        return checkpoint_path.parent / MODEL_NAME
    out = Path(out).expanduser()
    if out.is_dir() or out.suffix.lower() != ".onnx":
        return out / MODEL_NAME
    return out


def _certify_fp32(ckpt, out: Path, selection: ClipSelection, options: ExportOptions, progress) -> ParityReport:
    """Export under a temporary name, gate it, and only then replace `out`. A failure leaves an earlier `out` (and
    its parity.json) untouched; the failed report goes to parity.json when there was no earlier model, else to
    parity.failed.json beside it. A gate that passes but whose rename the OS refuses leaves no report behind and
    raises `OutputPathError`."""
    parity_path = report_path(out)
    earlier = out.is_file()
    failed_path = parity_path.with_name("parity.failed.json") if earlier else parity_path
    # The gate writes its report before the rename; if the rename fails, that report (which says "passed") goes.
    left = f"; the earlier {out} and its {parity_path.name} are kept" if earlier else "; nothing was published"
    with publishing(out, unpublished=[failed_path], note=left) as pending:
        progress.start("export", f"Exporting {ckpt.arch.value} to ONNX", None)
        try:
            export_onnx(ckpt.path, pending, opset=options.opset)
        finally:
            progress.finish("export")
        try:
            report = check_parity(
                pending, ckpt, list(selection.parity), batch_sizes=options.batch_sizes,
                thresholds=options.thresholds, report_path=failed_path, clip_source=selection.source,
                progress=progress, published_as=out,
            )
        except ParityError as exc:
            kept = f"; the earlier {out} is kept" if earlier else ""
            raise type(exc)(f"{exc}{kept}", report=exc.report) from None
    if earlier:
        failed_path.unlink(missing_ok=True)  # The new model passed: no failed report of it may linger.
    write_json(report.to_dict(), parity_path)
    return report


def _audio_model(out: Path, ckpt, selection: ClipSelection, progress) -> AudioParityReport:
    """Build model.audio.onnx beside `out` and gate it; kept only if it passes and lands (a stale one is deleted)."""
    final, report_file = variant_path(out, "audio"), report_path(out, "audio")
    try:
        with publishing(final, unpublished=[report_file]) as pending:
            progress.start("audio-export", "Building model.audio.onnx (front end + network)", None)
            try:
                write_audio_model(out, pending)
            except ExportError as exc:
                raise VariantRejectedError(f"audio model not built: {exc}") from None
            finally:
                progress.finish("audio-export")
            report = check_audio_model(pending, ckpt, selection.evaluation or selection.parity,
                                       clip_source=selection.source, report_path=report_file, progress=progress,
                                       published_as=final)
    except (VariantRejectedError, OutputPathError):
        with suppress(OSError):  # An audio model of an earlier export must not look current.
            final.unlink(missing_ok=True)
        raise
    return report


def _check_clips_decode(selection: ClipSelection, ckpt) -> None:
    """Refuse parity clips that cannot be decoded before the (long) export runs."""
    _, used, skipped = featurize_clips(selection.parity, ckpt.feature_config)
    if not used:
        reason = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise ParityDataError(f"none of the {len(selection.parity)} parity clips from {selection.source} can be "
                              f"decoded{reason}: pass real audio with --parity-data")


def _variants(out: Path, ckpt, selection: ClipSelection, options: ExportOptions, progress) -> list[VariantReport]:
    """Build the asked-for variants; every one is attempted before a rejection is raised."""
    clips = selection.evaluation or selection.parity
    features, used, _ = featurize_clips(clips, ckpt.feature_config, progress, key="variant-features")
    labels = [c.label for c in used]
    reports: list[VariantReport] = []
    errors: list[str] = []
    if options.int8:
        calibration, _, _ = featurize_clips(selection.calibration, ckpt.feature_config, progress, key="calibration")
        try:
            reports.append(quantize_int8(
                out, variant_path(out, "int8"), calibration, features, labels=labels, mode=options.int8_mode,
                criterion=options.int8_criterion, report_path=report_path(out, "int8"),
                progress=progress,
            ))
        except VariantRejectedError as exc:
            reports.extend(exc.reports)
            errors.append(str(exc))
    if options.fp16:
        try:
            reports.append(convert_fp16(out, variant_path(out, "fp16"), features, labels=labels,
                                        report_path=report_path(out, "fp16"), progress=progress))
        except VariantRejectedError as exc:
            reports.extend(exc.reports)
            errors.append(str(exc))
    if errors:
        raise VariantRejectedError("; ".join(errors), reports=tuple(reports))
    return reports


def export_and_certify(
    checkpoint_path: str | Path,
    options: ExportOptions = ExportOptions(),
    progress: ProgressReporter | None = None,
) -> ExportResult:
    """Export, gate, publish `model.onnx` (+ parity.json), then the asked-for INT8/FP16 variants.

    Raises `CheckpointError`, `DatasetError`/`ParityError` (clips), `ExportError` (exporter), a `ParityError`
    subclass when the gate fails (an earlier model.onnx is kept), `OutputPathError` when a model that passed cannot
    be renamed into place (nothing claims it passed), or `VariantRejectedError` when a variant fails its
    threshold (model.onnx is kept; the variant is deleted; `exc.reports` holds the variant reports and
    `exc.result` the export's result).
    """
    progress = progress or NullProgress()
    ckpt = load_checkpoint(checkpoint_path)
    out = destination(ckpt.path, options.out)
    if out.exists() and not out.is_file():
        raise ExportError(f"output {out} exists and is not a file: pass --out with a .onnx file name")
    check_output_file(out, "--out")
    selection = select_clips(
        ckpt, options.parity_data, parity_samples=options.parity_samples,
        calibration_samples=options.calibration_samples if options.int8 else 0,
        variant_samples=options.variant_samples if options.int8 or options.fp16 or options.audio_model else 0,
    )
    _check_clips_decode(selection, ckpt)
    report = _certify_fp32(ckpt, out, selection, options, progress)
    result = ExportResult(out, report_path(out), report)
    failed: list[str] = []  # Every artifact is attempted; the failures are raised together at the end.
    if options.audio_model:
        try:
            result = dataclasses.replace(result, audio=_audio_model(out, ckpt, selection, progress))
        except VariantRejectedError as exc:
            failed.append(str(exc))
    if options.int8 or options.fp16:
        try:
            result = dataclasses.replace(result, variants=tuple(_variants(out, ckpt, selection, options, progress)))
        except VariantRejectedError as exc:
            result = dataclasses.replace(result, variants=exc.reports)
            failed.append(str(exc))
    if failed:
        raise VariantRejectedError("; ".join(failed), reports=result.variants, result=result)
    return result


def verify_model(
    model_path: str | Path,
    checkpoint_path: str | Path,
    *,
    parity_data: str | Path | None = None,
    parity_samples: int = DEFAULT_PARITY_SAMPLES,
    thresholds: ParityThresholds = ParityThresholds(),
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
) -> ParityReport:
    """The same gate on an existing (model, checkpoint) pair, e.g. after copying between machines."""
    ckpt = load_checkpoint(checkpoint_path)
    selection = select_clips(ckpt, parity_data, parity_samples=parity_samples)
    return check_parity(model_path, ckpt, list(selection.parity), thresholds=thresholds, report_path=report_path,
                        clip_source=selection.source, progress=progress)


def verify_audio_model(model_path: str | Path, checkpoint_path: str | Path, *, parity_data: str | Path | None = None,
                       samples: int = DEFAULT_VARIANT_SAMPLES,
                       progress: ProgressReporter | None = None) -> AudioParityReport | None:
    """The audio model's gate on the `model.audio.onnx` beside `model_path`, if there is one (None otherwise); the
    report goes to its parity.audio.json. Raises `VariantRejectedError` when it fails (the file is left in place:
    verifying never deletes)."""
    audio = variant_path(Path(model_path), "audio")
    if not audio.is_file():
        return None
    ckpt = load_checkpoint(checkpoint_path)
    selection = select_clips(ckpt, parity_data, parity_samples=DEFAULT_PARITY_SAMPLES, variant_samples=samples)
    return check_audio_model(audio, ckpt, selection.evaluation or selection.parity, clip_source=selection.source,
                             report_path=report_path(Path(model_path), "audio"), progress=progress)


def verify_variants(model_path: str | Path, checkpoint_path: str | Path, *, parity_data: str | Path | None = None,
                    samples: int = DEFAULT_VARIANT_SAMPLES,
                    progress: ProgressReporter | None = None) -> tuple[VariantReport, ...]:
    """Judge again the INT8/FP16 variants beside `model_path` against it, each under the rule its metadata
    records (`variant_gate.VariantCriterion.from_record`), on up to `samples` clips; () when there are none.
    Verifying neither writes reports nor deletes files: a report's `kept` says whether the variant still passes."""
    model_path = Path(model_path)
    found = [(precision, variant_path(model_path, precision)) for precision in ("int8", "fp16")]
    found = [(precision, path) for precision, path in found if path.is_file()]
    if not found:
        return ()
    progress = progress or NullProgress()
    ckpt = load_checkpoint(checkpoint_path)
    selection = select_clips(ckpt, parity_data, parity_samples=DEFAULT_PARITY_SAMPLES, variant_samples=samples)
    features, used, _ = featurize_clips(selection.evaluation or selection.parity, ckpt.feature_config, progress,
                                        key="variant-features")
    labels = [c.label for c in used]
    truth = label_indices(labels, read_metadata(model_path).classes)
    reports = []
    for precision, path in found:
        meta = read_metadata(path)
        # Variants exported before the rule was recorded: the rule export applies today.
        criterion = VariantCriterion.from_record(meta.gate) if meta.gate is not None else (
            FP16_CRITERION if precision == "fp16" else INT8_CRITERION)
        provider = CUDA_EP if precision == "fp16" and CUDA_EP in candidate_providers() else CPU_EP
        progress.start("verify-variant", f"{precision}: judging again on {len(features)} clips", None)
        try:
            reference, logits, figures = evaluate_variant(model_path, path, features, labels, provider)
        finally:
            progress.finish("verify-variant")
        decision = judge(reference, logits, truth, criterion)
        reports.append(VariantReport(
            precision=precision, model_path=str(path), kept=decision.kept, reason=decision.reason,
            threshold=criterion.min_agreement, n_clips=len(features), criterion=criterion.record(truth is not None),
            decision=decision.figures, **figures))
    return tuple(reports)
