"""`toolchain health`: the last folder runs' health verdicts from a ledger, as a table (and a PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toolchain.cli.common import console, user_errors
from toolchain.cli.options import LedgerUrlOption, use_ledger_url
from toolchain.errors import ScoringError

app = typer.Typer()


@app.command("health")
@user_errors
def health_command(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Output directory of scoring runs (holds "
                                             "ledger.sqlite).")],
    model: Annotated[Path | None, typer.Option("--model", help="Only runs of this .onnx model.")] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="How many of the latest folder runs to show.")] = 20,
    png: Annotated[Path | None, typer.Option("--png", help="Also write the trend (expected accuracy and class-mix "
                                             "JS distance per run) to this PNG.")] = None,
    ledger_url: LedgerUrlOption = None,
) -> None:
    """Print the latest scored folders with their health: date, folder, files, verdict, JS distance, expected
    accuracy. Each row's full report is the health_<UTC>.json beside its predictions CSV."""
    from toolchain.health.render import plot_trend
    from toolchain.scoring.ledger import health_history

    use_ledger_url(ledger_url)
    rows = health_history(output_dir.expanduser(), model.expanduser() if model else None, last)
    if not rows:
        raise ScoringError(f"{output_dir} has no completed folder runs{' of ' + str(model) if model else ''}: "
                           "score a folder into it first (`toolchain score --out` or a score-folder run)")
    table = Table("finished (UTC)", "folder", "files", "verdict", "JS distance", "expected accuracy")
    color = {"ok": "green", "warn": "yellow", "drift": "red"}
    for r in rows:
        verdict = r["verdict"] or "(none)"
        table.add_row((r["finished_at"] or "")[:19], Path(r["folder"]).name, str(r["files"]),
                      f"[{color.get(verdict, 'default')}]{verdict}[/]",
                      "" if r["js_distance"] is None else f"{r['js_distance']:.3f}",
                      "" if r["expected_accuracy"] is None else f"{r['expected_accuracy']:.1%}")
    console.print(table)
    if png is not None:
        typer.echo(plot_trend(rows, png))
