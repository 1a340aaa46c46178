"""`toolchain bench`: throughput of the reference notebook's loop against each stage of ours, in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toolchain.cli.common import console, rich_progress, user_errors
from toolchain.inference.contract import variant_path

app = typer.Typer()



def parse_batch_sizes(text: str | None, batch_size: int, clips: int) -> tuple[int, ...]:
    """`--batch-sizes 1,8,16,32` -> (1, 8, 16, 32); None -> (batch_size,)."""
    if text is None:
        return (batch_size,)
    try:
        sizes = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of positive integers, e.g. 1,8,16,32",
                                 param_hint="--batch-sizes")
    if max(sizes) > clips:
        raise typer.BadParameter(f"the largest size {max(sizes)} exceeds --clips {clips}: pass --clips "
                                 f"{max(sizes)} or more (several batches per size give steadier figures)",
                                 param_hint="--batch-sizes")
    return sizes


@app.command("bench")
@user_errors
def bench(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint (.pth) the ONNX model was exported from.")],
    model: Annotated[Path, typer.Option(help="fp32 ONNX model written by `toolchain export-onnx`.")],
    data: Annotated[
        list[Path], typer.Option(help="Clips like the audio you score: an audio folder or a CSV manifest; "
                                 "repeatable.")
    ],
    int8_model: Annotated[
        Path | None, typer.Option("--int8-model", help="INT8 model (default: model.int8.onnx beside --model).")
    ] = None,
    clips: Annotated[int, typer.Option(min=16, help="Clips used by every measurement (spread evenly).")] = 96,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size for every model run.")] = 16,
    batch_sizes: Annotated[
        str | None,
        typer.Option("--batch-sizes", help="Also time the engine's model-only path (CUDA when it runs) at each of "
                     "these sizes, e.g. 1,8,16,32, and report the fastest. Default: just --batch-size."),
    ] = None,
    long_file: Annotated[
        Path | None,
        typer.Option("--long-file", exists=True, dir_okay=False, help="Also score this long recording whole and "
                     "report the engine's windows/s against (c), ORT fp32 model-only (ratio f_over_c), and against the limit "
                     "the model and the front end sharing the cores could reach (f_over_limit)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the JSON figures.")] = Path("artifacts/bench.json"),
) -> None:
    """Measure clips/s of (a) the reference notebook's loop (librosa features per file, then eager PyTorch),
    (b) eager PyTorch, (c) ORT fp32, (d) ORT INT8, (e) our engine on the fp32 model and (h) on the variant
    `--precision auto` picks (certified INT8 on CPU, fp16 on CUDA).

    Also the compute ceiling: torch fp32 matmul GFLOP/s on the same cores against the model's GFLOP/s in (c).

    With --batch-sizes it also sweeps the engine's model-only throughput over those batch sizes on the provider
    scoring would use (CUDA when it runs) and reports the fastest: pass that to `toolchain score --batch-size`.
    """
    from toolchain.bench import BenchConfig, run_benchmark, select_clips, write_result

    sizes = parse_batch_sizes(batch_sizes, batch_size, clips)
    if int8_model is None and variant_path(model, "int8").is_file():
        int8_model = variant_path(model, "int8")
    selected = select_clips(data, clips)
    config = BenchConfig(checkpoint=checkpoint, model=model, clips=selected, int8_model=int8_model,
                         batch_size=batch_size, batch_sizes=sizes, long_file=long_file)
    with rich_progress() as progress:
        result = run_benchmark(config, progress)
    write_result(result, out)

    table = Table(title=f"{result.clips} real clips, batch {batch_size}, {result.machine['cores']} cores")
    table.add_column("measurement")
    table.add_column("clips/s", justify="right")
    for name, value in result.throughput.items():
        table.add_row(name, f"{value:.2f}")
    for name, value in result.ratios.items():
        table.add_row(f"ratio {name}", f"{value:.2f}x")
    for name, value in result.feature_ms_per_clip.items():
        table.add_row(f"{name} ms/clip (1 core)", f"{value:.2f}")
    compute = result.compute
    table.add_row("model GFLOP per clip", f"{compute['gflop_per_clip']:.2f}")
    table.add_row("torch fp32 matmul GFLOP/s", f"{compute['matmul_gflops']:.0f}")
    table.add_row("ORT fp32 model GFLOP/s (share of matmul)",
                  f"{compute['ort_fp32_gflops']:.0f} ({compute['ort_fp32_gflops'] / compute['matmul_gflops']:.0%})")
    if result.int8_top1_agreement is not None:
        table.add_row("INT8 top-1 agreement with fp32", f"{100 * result.int8_top1_agreement:.1f} %")
    table.add_row("engine provider", result.engine_provider)
    table.add_row("engine model file", Path(result.engine_model).name)
    for size, value in result.batch_sweep.items():
        table.add_row(f"engine model only, batch {size}", f"{value:.2f}")
    table.add_row("best batch size (engine model only)", str(result.best_batch_size))
    if result.long_file:
        lf = result.long_file
        table.add_row("long file: seconds of audio / windows", f"{lf['duration_s']:.0f} / {lf['windows']}")
        table.add_row("long file: model / front end (1 core), w/s",
                      f"{lf['model_only_windows_per_s']:.2f} / {lf['frontend_windows_per_s_one_core']:.2f}")
        table.add_row(f"long file: limit on {result.machine['cores']} cores, w/s",
                      f"{lf['limit_windows_per_s']:.2f} ({lf['limit_over_model_only']:.0%} of model only)")
        table.add_row("long file: engine, w/s (share of limit)",
                      f"{result.throughput['f_engine_long_file_windows']:.2f} ({result.ratios['f_over_limit']:.0%})")
    console.print(table)
    console.print(f"scoring (--precision auto) runs {result.engine_model}: {result.engine_model_reason}",
                  soft_wrap=True)
    console.print(f"figures written to {out}")
