"""`toolchain score` (one folder, no Prefect), `toolchain serve` (Prefect deployments of `score-folder`),
`toolchain watch` (arrival events that start the on-arrival deployment) and `toolchain backfill` (an inbox's
history rescored by a model, on request)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolchain.cli.common import console, rich_progress, user_errors
from toolchain.cli.options import LedgerUrlOption, ModelOption, SettleOption, scoring_options, use_ledger_url
from toolchain.errors import EXIT_DRIFT, EXIT_INTERRUPTED, ScoringError
from toolchain.registry.refs import is_registry_ref
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.watch import RECONCILE_SECONDS

app = typer.Typer()


def _say(message: str) -> None:
    """What `toolchain score` shows of the run's log: the registered version a models:/ reference resolved to,
    warnings and the shadow comparison."""
    if message.startswith(("models:/", "shadow", "the shadow", "the MLflow", "warning: ")):
        console.print(message, soft_wrap=True, highlight=False)


@app.command("score")
@user_errors
@scoring_options
def score_command(
    model: ModelOption,
    input: Annotated[Path, typer.Option("--input", help="Folder of audio files (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: CSVs go to OUT/<folder name>/.")] = Path(
        "predictions"
    ),
    engine: EngineConfig = EngineConfig(),
    options: ScoringOptions = ScoringOptions(),
    fail_on_drift: bool = False,
) -> None:
    """Score every audio file under INPUT with MODEL into OUT/<folder name>/predictions_<UTC>.csv.

    Every second of every file is scored: a file longer than the model's window is cut into windows every
    --hop-seconds, and its row (label, probabilities) aggregates them (--aggregation); detections_<UTC>.csv has
    one row per window with its start and end in the file, events_<UTC>.csv one row per event (windows of one
    label in a row, --merge-gap apart at most). Labels and feature settings come from the model file. Files that
    do not decode get status=error rows; files without an audio extension are ignored. The run is recorded in OUT/ledger.sqlite. Prints the CSV path.
    health_<UTC>.json beside it says whether the model still fits this audio (verdict ok, warn, drift,
    insufficient or no_reference); `toolchain health --output-dir OUT` shows the trend.
    On a GPU: pick --batch-size with `toolchain bench --batch-sizes 8,16,32,64`; the CSV and the ledger name the
    file that ran (model.fp16.onnx when --precision auto chose it).
    """
    from toolchain.scoring.folder import score_folder

    try:
        with rich_progress() as progress:
            summary = score_folder(model, input, out, engine, progress, options=options, say=_say)
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
    console.print(f"events: {summary.events_path}", soft_wrap=True)
    version = f"model {summary.model_version}, " if summary.model_version else "model "
    console.print(f"provider {summary.provider}; {version}sha256 {summary.model_sha256}; run {summary.run_id}",
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
@scoring_options
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
    settle_seconds: SettleOption = DEFAULT_SETTLE_SECONDS,
    allow_root: Annotated[
        list[Path] | None,
        typer.Option("--allow-root", help="Another folder runs may read or write (repeatable); by default runs are "
                     "confined to --inbox, --output-dir and the model's folder."),
    ] = None,
    engine: EngineConfig = EngineConfig(),
    options: ScoringOptions = ScoringOptions(),
    fail_on_drift: bool = False,
) -> None:
    """Serve the deployments `score-folder/on-demand` and (with --inbox) `score-inbox/inbox-scan`.

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
        model=model if is_registry_ref(model) else str(Path(model).expanduser().resolve()),
        output_dir=str(output_dir.expanduser().resolve()),
        inbox=str(inbox.expanduser().resolve()) if inbox else None,
        interval_seconds=None if cron else (interval or DEFAULT_INTERVAL_SECONDS),
        cron=cron,
        limit=limit,
        engine=engine,
        allow_roots=tuple(str(p.expanduser().resolve()) for p in allow_root or ()),
        settle_seconds=settle_seconds,
        scoring=options,
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
    settle_seconds: SettleOption = DEFAULT_SETTLE_SECONDS,
    reconcile_seconds: Annotated[
        float, typer.Option("--reconcile-seconds", min=1, help="Sweep every subfolder this often, whatever the "
                            "filesystem reported.")
    ] = RECONCILE_SECONDS,
    ledger_url: LedgerUrlOption = None,
) -> None:
    """Start `score-inbox/on-arrival` runs as audio arrives: one Prefect event per subfolder of INBOX that
    becomes ready (a _READY file, or quiet for --settle-seconds) with files MODEL has not scored.

    Needs PREFECT_API_URL and a `toolchain serve --inbox INBOX` on that server. Sweeps every subfolder at start
    and every --reconcile-seconds, so a missed filesystem event costs latency, never a file. Runs until Ctrl-C.
    """
    from flows.watch import watch_inbox

    use_ledger_url(ledger_url)
    try:
        watch_inbox(inbox.expanduser(), output_dir.expanduser(), model, settle_seconds,
                    reconcile_seconds, log=lambda message: console.print(message, soft_wrap=True))
    except KeyboardInterrupt:
        console.print("stopped watching")


@app.command("backfill")
@user_errors
@scoring_options
def backfill_command(
    model: ModelOption,
    inbox: Annotated[Path, typer.Option("--inbox", help="The inbox whose history MODEL scores.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="The output dir the inbox is scored into (its "
                                             "ledger says what is scored).")],
    since: Annotated[str | None, typer.Option(
        "--since", help="Only files the ledger first saw at or after this date or UTC time (YYYY-MM-DD or "
        "ISO-8601); default: the whole history.")] = None,
    folders: Annotated[str, typer.Option(
        "--folders", help="Only subfolders whose name matches this pattern, e.g. '2026-05-*'.")] = "*",
    settle_seconds: SettleOption = DEFAULT_SETTLE_SECONDS,
    engine: EngineConfig = EngineConfig(),
    options: ScoringOptions = ScoringOptions(),
    fail_on_drift: bool = False,
) -> None:
    """Score the history of INBOX with MODEL: in every subfolder (matching --folders), the files another model
    scored and MODEL has not, into follow-up CSVs beside the earlier ones, so every file the backfill covers ends
    with exactly one row from MODEL.

    Inbox scans are forward-only: after the serving model changes they score only what no model scored yet, and
    the rows of older files stay with the model that scored them. Backfill is how a new model rescores the
    history, all of it or --since a date. Recorded in the ledger (inbox_history and a run with mode backfill).
    Killed at any point (Ctrl-C, kill -9), the same command resumes: finished folders are not scored again. Files no
    model has scored yet are left to the inbox scans. Exit 1 when a folder was left because another run was
    scoring it (run again later).
    """
    from toolchain.scoring.files import Backfill
    from toolchain.scoring.inbox import backfill_inbox, subfolders

    plan = Backfill(since=since, folders=folders)
    if folders != "*" and not subfolders(inbox, folders):
        raise ScoringError(f"no subfolder of {inbox} matches --folders {folders!r}: pass a pattern of their names, "
                           "e.g. '2026-05-*'")
    try:
        with rich_progress() as progress:
            scan = backfill_inbox(model, inbox, output_dir, plan, engine, progress, options=options,
                                  settle_seconds=settle_seconds,
                                  log=lambda message: console.print(message, soft_wrap=True, highlight=False))
    except KeyboardInterrupt:
        typer.echo("interrupted: the folders already backfilled keep their CSVs; run the same command again to "
                   "go on", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    scored = [o.summary for o in scan.outcomes if o.summary]
    busy = [o.folder for o in scan.outcomes if o.skipped == "busy"]
    console.print(f"backfill of {inbox}: {len(scored)} folder(s) scored, {sum(s.files_total for s in scored)} "
                  f"file(s) ({sum(s.files_error for s in scored)} error); run {scan.run_id}", soft_wrap=True)
    for summary in scored:
        typer.echo(summary.csv_path)
    if busy:
        console.print(f"[yellow]{len(busy)} folder(s) were being scored by another run[/] (e.g. {busy[0]}): run "
                      "the same command again later to finish them (exit 1)", soft_wrap=True)
        raise typer.Exit(1)
    if fail_on_drift and any(s.health.get("verdict") == "drift" for s in scored):
        raise typer.Exit(EXIT_DRIFT)
