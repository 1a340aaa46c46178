"""`toolchain export-onnx` and `toolchain verify-onnx`: thin shells over `toolchain.export.certify`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from toolchain.cli.common import console, rich_progress, user_errors
from toolchain.cli.models import TrackingUri, print_registered
from toolchain.cli.models import register as register_model
from toolchain.errors import ParityError, VariantRejectedError
from toolchain.export.clips import DEFAULT_PARITY_SAMPLES, DEFAULT_VARIANT_SAMPLES
from toolchain.export.int8_recipes import DEFAULT_INT8_MODE, INT8_CRITERION, Int8Mode

if TYPE_CHECKING:  # The export modules load torch: imported when a command runs, not when the CLI starts.
    from toolchain.export.parity import ParityReport
    from toolchain.export.variants import VariantReport

app = typer.Typer()

ParityData = Annotated[
    Path | None,
    typer.Option(
        "--parity-data",
        help="Folder (class subfolders, or a labels.csv) or CSV manifest of real clips; "
        "default: the checkpoint's validation files.",
    ),
]
ParitySamples = Annotated[int, typer.Option("--parity-samples", min=1, help="Clips the gate compares on.")]


def parity_table(report: ParityReport) -> Table:
    """One row per provider and batch size, with the thresholds in the header."""
    t = report.thresholds
    table = Table(
        title=f"Parity {report.precision} vs PyTorch on {len(report.clips)} clips "
        f"(opset {report.opset}; rel logit <= {t.logit_rtol:g}, prob <= {t.prob_atol:g}, top-1 >= {t.top1_agreement:.0%})"
    )
    for column in ("provider", "batch", "max abs logit", "max rel logit", "max abs prob", "top-1", "result"):
        table.add_column(column, justify="left" if column in ("provider", "result") else "right")
    for r in report.results:
        table.add_row(
            r.provider.removesuffix("ExecutionProvider"), str(r.batch_size), f"{r.max_abs_logit_diff:.2e}",
            f"{r.max_rel_logit_diff:.2e}", f"{r.max_abs_prob_diff:.2e}", f"{r.top1_agreement:.1%}",
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
        )
    return table


def variant_table(reports: tuple[VariantReport, ...], verdicts: tuple[str, str] = ("yes", "deleted")) -> Table:
    """One row per variant: agreement overall and on fp32's confident clips, accuracy and the bound on its drop
    (labelled clips only), speed; the rule each was judged by is printed under it (`print_rules`)."""
    table = Table(title="Reduced-precision variants vs the fp32 ONNX model")
    columns = ("variant", "EP", "top-1 agree (clips)", "confident agree (clips)", "accuracy fp32→var",
               "drop ≤ (95%)", "clips/s fp32→var", "kept")
    for column in columns:
        table.add_column(column, justify="left" if column in ("variant", "EP", "kept") else "right")

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in reports:
        d = r.decision
        confident = f"{fmt(d.get('confident_agreement'), '.1%')} ({d['confident_clips']})" \
            if "confident_clips" in d else "-"
        drop = d.get("accuracy_drop_bound")
        table.add_row(
            r.precision, r.provider.removesuffix("ExecutionProvider"),
            f"{fmt(r.top1_agreement, '.1%')} ({r.n_clips})", confident,
            f"{fmt(r.accuracy_fp32, '.1%')}→{fmt(r.accuracy_variant, '.1%')}",
            "-" if drop is None else f"{drop * 100:.1f} pt",
            f"{fmt(r.clips_per_s_fp32, '.1f')}→{fmt(r.clips_per_s_variant, '.1f')}",
            f"[green]{verdicts[0]}[/]" if r.kept else f"[red]{verdicts[1]}[/]",
        )
    return table


def print_rules(reports: tuple[VariantReport, ...]) -> None:
    """Each variant's rule in one line: what certified it (or would have)."""
    for r in reports:
        if r.criterion:
            console.print(f"{r.precision} gate: {r.criterion['description']}", soft_wrap=True, highlight=False)


def _print_notes(report: ParityReport) -> None:
    for note in report.notes:
        console.print(f"note: {note}")


@app.command("export-onnx")
@user_errors
def export_onnx_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint .pth written by `toolchain train`.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output .onnx (or folder); default: model.onnx beside the checkpoint.")
    ] = None,
    parity_data: ParityData = None,
    parity_samples: ParitySamples = DEFAULT_PARITY_SAMPLES,
    opset: Annotated[int | None, typer.Option("--opset", min=7, help="ONNX opset; default: torch's choice.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (static QDQ, for CPU).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx (for CUDA).")] = False,
    variant_samples: Annotated[
        int, typer.Option("--variant-samples", min=1, help="Clips the INT8/FP16 variants are judged on.")
    ] = DEFAULT_VARIANT_SAMPLES,
    int8_mode: Annotated[
        Int8Mode, typer.Option("--int8-mode", help="INT8 activation/weight types (u8u8 keeps accuracy without VNNI).")
    ] = DEFAULT_INT8_MODE,
    int8_confidence: Annotated[
        float, typer.Option("--int8-confidence", min=0.01, max=0.99,
                            help="With labelled clips, fp32 top probability from which a flip counts as a changed "
                            "decision (INT8 must keep 99.5 % of those, and accuracy within 1 point).")
    ] = INT8_CRITERION.confidence,
    audio_model: Annotated[
        bool, typer.Option("--audio-model/--no-audio-model", help="Also write model.audio.onnx (waveform in, labels "
                           "out: the front end in the graph, for use without Python), behind its own parity gate.")
    ] = True,
    register: Annotated[
        str | None, typer.Option("--register", help="Then register the certified bundle (model, kept variants, "
                                 "audio model, parity reports) as a new version of this MLflow registered model.")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Export a checkpoint to a self-describing ONNX model, certified by a parity gate on real clips.

    Writes model.onnx and parity.json only when ONNX Runtime reproduces the PyTorch outputs at batch 1, 2 and 3;
    otherwise exits non-zero and leaves no model.onnx. Then model.audio.onnx (waveform in) with parity.audio.json,
    kept only when its features match the library's and its labels the checkpoint's on up to --variant-samples clips.
    """
    from toolchain.export.certify import ExportOptions, export_and_certify
    if register:  # A bad name or an unreachable registry is refused before the export's work.
        from toolchain.registry.client import connect
        from toolchain.registry.refs import check_name

        check_name("name", register)
        connect(tracking_uri)

    options = ExportOptions(out=out, parity_data=parity_data, parity_samples=parity_samples, opset=opset,
                            int8=int8, fp16=fp16, int8_mode=int8_mode,
                            int8_criterion=dataclasses.replace(INT8_CRITERION, confidence=int8_confidence),
                            variant_samples=variant_samples, audio_model=audio_model)
    try:
        with rich_progress() as progress:
            result = export_and_certify(checkpoint, options, progress)
    except ParityError as exc:
        report = exc.report
        if report is not None and report.results:
            console.print(parity_table(report))
        raise
    except VariantRejectedError as exc:
        partial = exc.result
        if partial is not None:
            console.print(parity_table(partial.parity))
            console.print(variant_table(partial.variants))
            print_rules(partial.variants)
        raise
    console.print(parity_table(result.parity))
    _print_notes(result.parity)
    if result.variants:
        console.print(variant_table(result.variants))
        print_rules(result.variants)
    typer.echo(f"wrote {result.model_path} (parity report {result.parity_path})")
    if result.audio is not None:
        print_audio(result.audio, "wrote")
    for variant in result.variants:
        typer.echo(f"wrote {variant.model_path}")
    if register:
        print_registered(register_model(result.model_path, register, tracking_uri))


def print_audio(report, done: str) -> None:
    """The audio model's gate in one line (the figures are in parity.audio.json), then `<done> <its path>` on
    stdout: "wrote" only after an export wrote it."""
    console.print(f"audio model: {report.reason}", soft_wrap=True, highlight=False)
    typer.echo(f"{done} {report.model_path}")


@app.command("verify-onnx")
@user_errors
def verify_onnx_command(
    model: Annotated[Path, typer.Option("--model", help="The .onnx file to check.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The checkpoint it was exported from.")],
    parity_data: ParityData = None,
    parity_samples: ParitySamples = DEFAULT_PARITY_SAMPLES,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the parity report as JSON to this path.")
    ] = None,
) -> None:
    """Re-run the parity gate on an existing model/checkpoint pair, then the gates of model.audio.onnx and of the
    INT8/FP16 variants beside it (each under the rule it was certified by); exits non-zero when one fails."""
    try:
        with rich_progress() as progress:
            from toolchain.export.certify import verify_model

            result = verify_model(model, checkpoint, parity_data=parity_data, parity_samples=parity_samples,
                                  report_path=report, progress=progress)
    except ParityError as exc:
        failed = exc.report
        if failed is not None and failed.results:
            console.print(parity_table(failed))
        raise
    console.print(parity_table(result))
    _print_notes(result)
    typer.echo(f"parity passed: {model} computes what {checkpoint} computes")
    from toolchain.export.certify import verify_audio_model

    with rich_progress() as progress:
        audio = verify_audio_model(model, checkpoint, parity_data=parity_data, progress=progress)
    if audio is not None:
        print_audio(audio, "audio model verified:")
    from toolchain.export.certify import verify_variants

    with rich_progress() as progress:
        variants = verify_variants(model, checkpoint, parity_data=parity_data, progress=progress)
    if variants:
        console.print(variant_table(variants, verdicts=("passes", "FAILS")))
        print_rules(variants)
    failing = [v for v in variants if not v.kept]
    if failing:
        raise VariantRejectedError("; ".join(f"{v.model_path} no longer meets its gate: {v.reason}" for v in failing)
                                   + " (verifying deletes nothing)")

