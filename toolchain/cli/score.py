"""`toolchain score` (one folder, no Prefect), `toolchain serve` (Prefect deployments of `score-folder`) and
`toolchain watch` (arrival events that start the on-arrival deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolchain.cli.common import config_defaults, console, rich_progress, user_errors
from toolchain.errors import EXIT_DRIFT, EXIT_INTERRUPTED, ScoringError
from toolchain.health.assess import HealthThresholds
from toolchain.inference.predictions import Aggregation
from toolchain.inference.providers import Provider
from toolchain.scoring.engine import EngineConfig, Frontend
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS
from toolchain.scoring.options import OutputFormat, ScoringOptions
from toolchain.scoring.precision import Precision
from toolchain.scoring.watch import RECONCILE_SECONDS

app = typer.Typer()
ENGINE = config_defaults(EngineConfig)

ModelOption = Annotated[Path, typer.Option("--model", help="ONNX model written by `toolchain export-onnx`.")]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Clips per ONNX Runtime call.")]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", min=0, help="Decode worker processes (0 = decode inline); default: one per four cores."),
]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads; default: all cores.")
]
ProviderOption = Annotated[
    Provider, typer.Option("--provider", help="auto = CUDA when it really starts, else CPU.")
]


PrecisionOption = Annotated[
    Precision,
    typer.Option("--precision", help="auto = on CUDA, MODEL's fp16 variant (model.fp16.onnx) when "
                 "parity.fp16.json certifies it on CUDA; on the CPU, its INT8 variant (model.int8.onnx) when "
                 "parity.int8.json certifies it; else MODEL. fp32 = always MODEL; fp16 / int8 = that variant "
                 "wherever it passed its report."),
]
DeviceOption = Annotated[int, typer.Option("--device-id", min=0, help="GPU index the CUDA provider uses.")]
FrontendOption = Annotated[
    Frontend, typer.Option("--frontend", help="python: log-mel computed by this library; graph: run "
                           "model.audio.onnx beside MODEL (log-mel inside the graph, certified by parity.audio.json).")
]
HopOption = Annotated[
    float | None, typer.Option("--hop-seconds", min=0.001, help="Seconds between windows of a file longer than "
                               "the model's window; default: half a window (2.5 s for 5-s models).")
]
AggregationOption = Annotated[
    Aggregation, typer.Option("--aggregation", help="A file's probabilities from its windows': mean (default) or "
                              "max (finds a short event in a long file).")
]
MinConfidenceOption = Annotated[
    float, typer.Option("--min-confidence", min=0.0, max=1.0, help="Leave detections (window rows) below this "
                        "confidence out of detections_<UTC>.csv; the predictions CSV keeps every file.")
]
FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="csv: predictions + detections CSVs; raven: also a Raven selection "
                               "table (raven_<UTC>.selections.txt).")
]
MaxDurationOption = Annotated[
    float | None, typer.Option("--max-duration", min=0.001, help="Score at most this many seconds of each file "
                               "(a safety limit); default: all of it.")
]
HealthOption = Annotated[
    str, typer.Option("--health-thresholds", help="Override health-report thresholds, e.g. "
                      "'js_distance=0.15,min_files=100' (names: alpha, js_distance, psi, ks_statistic, "
                      "accuracy_drop, low_confidence, failure_share, min_files; see docs/reference.md).")
]
FailOnDriftOption = Annotated[
    bool, typer.Option("--fail-on-drift", help="Exit 3 (a flow run: fail) when a folder's health verdict is drift, "
                       "after every output is written; by default drift is reported only.")
]


def scoring_options(hop_seconds: float | None, aggregation: Aggregation, min_confidence: float,
                    format: OutputFormat, max_duration: float | None, health: str) -> ScoringOptions:
    """The command-line flags as one `ScoringOptions` (checked: a bad value is a one-line error here)."""
    return ScoringOptions(hop_seconds=hop_seconds, aggregation=aggregation, min_confidence=min_confidence,
                          format=format, max_duration_s=max_duration, health=HealthThresholds.parse(health))


@app.command("score")
@user_errors
def score_command(
    model: ModelOption,
    input: Annotated[Path, typer.Option("--input", help="Folder of audio files (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: CSVs go to OUT/<folder name>/.")] = Path(
        "predictions"
    ),
    batch_size: BatchOption = ENGINE["batch_size"],
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    provider: ProviderOption = Provider(ENGINE["provider"]),
    precision: PrecisionOption = Precision(ENGINE["precision"]),
    device_id: DeviceOption = ENGINE["device_id"],
    frontend: FrontendOption = Frontend(ENGINE["frontend"]),
    hop_seconds: HopOption = None,
    aggregation: AggregationOption = Aggregation.mean,
    min_confidence: MinConfidenceOption = 0.0,
    format: FormatOption = OutputFormat.csv,
    max_duration: MaxDurationOption = None,
    health_thresholds: HealthOption = "",
    fail_on_drift: FailOnDriftOption = False,
) -> None:
    """Score every audio file under INPUT with MODEL into OUT/<folder name>/predictions_<UTC>.csv.

    Every second of every file is scored: a file longer than the model's window is cut into windows every
    --hop-seconds, and its row (label, probabilities) aggregates them (--aggregation); detections_<UTC>.csv has
    one row per window with its start and end in the file. Labels and feature settings come from the model file. Files that do not decode get status=error rows;
    files without an audio extension are ignored. The run is recorded in OUT/ledger.sqlite. Prints the CSV path.
    health_<UTC>.json beside it says whether the model still fits this audio (verdict ok, warn, drift,
    insufficient or no_reference); `toolchain health --output-dir OUT` shows the trend.
    On a GPU: pick --batch-size with `toolchain bench --batch-sizes 8,16,32,64`; the CSV and the ledger name the
    file that ran (model.fp16.onnx when --precision auto chose it).
    """
    from toolchain.scoring.folder import score_folder

    config = EngineConfig(batch_size=batch_size, provider=provider, decode_workers=workers,
                          intra_op_threads=threads, precision=precision, device_id=device_id, frontend=frontend)
    options = scoring_options(hop_seconds, aggregation, min_confidence, format, max_duration, health_thresholds)
    try:
        with rich_progress() as progress:
            summary = score_folder(model, input, out, config, progress, options=options)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: no CSV was published for {input} and this run's temporary files are removed; "
                   "run the same command again to score it", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(
        f"scored {summary.files_total} files ({summary.files_ok} ok, {summary.files_error} error) in "
        f"{summary.seconds:.1f} s = {summary.files_per_second:.1f} files/s; {summary.windows} windows, "
        f"{summary.audio_hours * 3600:.1f} s of audio ({summary.window_rule})", soft_wrap=True,
    )
    console.print(f"detections: {summary.detections_path}", soft_wrap=True)
    console.print(f"provider {summary.provider}; model sha256 {summary.model_sha256}; run {summary.run_id}",
                  soft_wrap=True)
    if summary.files_error:
        console.print(f"{summary.files_error} file(s) could not be decoded: see the 'error' column")
    if not summary.files_total:
        console.print(f"[yellow]warning:[/] {input} holds no audio files (extensions: .wav .flac .ogg .mp3 ...; "
                      "names starting with '.' are skipped): the CSV has a header and no rows", soft_wrap=True)
    health = summary.health
    color = {"ok": "green", "warn": "yellow", "drift": "red"}.get(health.get("verdict"), "default")
    console.print(f"health [{color}]{health.get('verdict')}[/]: {health.get('reason')} ({health.get('path')})",
                  soft_wrap=True, highlight=False)
    typer.echo(summary.csv_path)
    if fail_on_drift and health.get("verdict") == "drift":
        raise typer.Exit(EXIT_DRIFT)


@app.command("serve")
@user_errors
def serve_command(
    model: ModelOption,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where CSVs and ledger.sqlite go.")],
    inbox: Annotated[
        Path | None,
        typer.Option("--inbox", help="Folder whose new subfolders the scheduled deployment scores."),
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", min=1, help="Scan the inbox every N seconds (default 300).")
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", help="Scan the inbox on this cron schedule instead, e.g. '0 * * * *'.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Flow runs executed at once by this process.")] = 1,
    settle_seconds: Annotated[
        float, typer.Option("--settle-seconds", min=0, help="An inbox subfolder without a _READY file is scored "
                            "once nothing in it changed for this long.")
    ] = DEFAULT_SETTLE_SECONDS,
    allow_root: Annotated[
        list[Path] | None,
        typer.Option("--allow-root", help="Another folder runs may read or write (repeatable); by default runs are "
                     "confined to --inbox, --output-dir and the model's folder."),
    ] = None,
    batch_size: BatchOption = ENGINE["batch_size"],
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    provider: ProviderOption = Provider(ENGINE["provider"]),
    precision: PrecisionOption = Precision(ENGINE["precision"]),
    device_id: DeviceOption = ENGINE["device_id"],
    frontend: FrontendOption = Frontend(ENGINE["frontend"]),
    hop_seconds: HopOption = None,
    aggregation: AggregationOption = Aggregation.mean,
    min_confidence: MinConfidenceOption = 0.0,
    format: FormatOption = OutputFormat.csv,
    max_duration: MaxDurationOption = None,
    health_thresholds: HealthOption = "",
    fail_on_drift: FailOnDriftOption = False,
) -> None:
    """Serve the deployments `score-folder/on-demand` and (with --inbox) `score-folder/inbox-scan`.

    Needs a Prefect server: `prefect server start`, then PREFECT_API_URL=http://127.0.0.1:4200/api in this
    shell. Trigger an on-demand run with
    `prefect deployment run 'score-folder/on-demand' --param 'folder="/data/day1"'` (values are JSON). Runs until
    Ctrl-C (which leaves the schedules active for other serve processes); flow runs execute in this process's
    children, confined to the inbox, the output dir, the model's folder and any --allow-root.
    """
    if interval is not None and cron is not None:
        raise ScoringError("pass either --interval or --cron, not both")
    if (interval is not None or cron is not None) and inbox is None:
        raise ScoringError("--interval/--cron schedule the inbox scan: pass --inbox too")
    from flows.deploy import (  # Prefect: ~2 s to import.
        DEFAULT_INTERVAL_SECONDS,
        ServeOptions,
        serve_deployments,
    )
    options = ServeOptions(
        model=str(model.expanduser().resolve()),
        output_dir=str(output_dir.expanduser().resolve()),
        inbox=str(inbox.expanduser().resolve()) if inbox else None,
        interval_seconds=None if cron else (interval or DEFAULT_INTERVAL_SECONDS),
        cron=cron,
        limit=limit,
        engine=EngineConfig(batch_size=batch_size, provider=provider, decode_workers=workers,
                            intra_op_threads=threads, precision=precision, device_id=device_id, frontend=frontend),
        allow_roots=tuple(str(p.expanduser().resolve()) for p in allow_root or ()),
        settle_seconds=settle_seconds,
        scoring=scoring_options(hop_seconds, aggregation, min_confidence, format, max_duration, health_thresholds),
        fail_on_drift=fail_on_drift,
    )
    serve_deployments(options)


@app.command("watch")
@user_errors
def watch_command(
    model: ModelOption,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="The output dir `toolchain serve` writes to "
                                             "(its ledger says which files are scored).")],
    inbox: Annotated[Path, typer.Option("--inbox", help="Folder whose subfolders receive audio.")],
    settle_seconds: Annotated[
        float, typer.Option("--settle-seconds", min=0, help="A subfolder without a _READY file is ready once "
                            "nothing in it changed for this long.")
    ] = DEFAULT_SETTLE_SECONDS,
    reconcile_seconds: Annotated[
        float, typer.Option("--reconcile-seconds", min=1, help="Sweep every subfolder this often, whatever the "
                            "filesystem reported.")
    ] = RECONCILE_SECONDS,
) -> None:
    """Start `score-folder/on-arrival` runs as audio arrives: one Prefect event per subfolder of INBOX that
    becomes ready (a _READY file, or quiet for --settle-seconds) with files MODEL has not scored.

    Needs PREFECT_API_URL and a `toolchain serve --inbox INBOX` on that server. Sweeps every subfolder at start
    and every --reconcile-seconds, so a missed filesystem event costs latency, never a file. Runs until Ctrl-C.
    """
    from flows.watch import watch_inbox

    try:
        watch_inbox(inbox.expanduser(), output_dir.expanduser(), model.expanduser(), settle_seconds,
                    reconcile_seconds, log=lambda message: console.print(message, soft_wrap=True))
    except KeyboardInterrupt:
        console.print("stopped watching")
