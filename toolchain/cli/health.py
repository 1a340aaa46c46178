"""`toolchain health`: the last folder runs' health verdicts from a ledger, as a table (and a PNG)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as a JSON array (one object per run, "
                                          "oldest first) instead of the table.")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="Also write the trend (expected accuracy and class-mix "
                                             "JS distance per run, with the thresholds) to this PNG.")] = None,
    ledger_url: LedgerUrlOption = None,
) -> None:
    """Print the latest scored folders with their health, to stdout: finish time (UTC), folder, files, verdict,
    JS distance, expected accuracy. Each row's full report is the health_<UTC>.json beside its predictions CSV.
    Exits 0 whatever the verdicts (`toolchain score --fail-on-drift` fails a run on drift)."""
    from toolchain.health.render import plot_trend
    from toolchain.scoring.ledger import health_history

    use_ledger_url(ledger_url)
    rows = health_history(output_dir.expanduser(), model.expanduser() if model else None, last)
    if not rows:
        raise ScoringError(f"{output_dir} has no completed folder runs{' of ' + str(model) if model else ''}: "
                           "score a folder into it first (`toolchain score --out` or a score-folder run)")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        table = Table("finished (UTC)", "folder", "files", "verdict", "JS distance", "expected accuracy")
        color = {"ok": "green", "warn": "yellow", "drift": "red"}
        for r in rows:
            verdict = r["verdict"] or "(none)"
            table.add_row(r["finished_at"] or "", Path(r["folder"]).name, str(r["files"]),
                          f"[{color.get(verdict, 'default')}]{verdict}[/]",
                          "" if r["js_distance"] is None else f"{r['js_distance']:.3f}",
                          "" if r["expected_accuracy"] is None else f"{r['expected_accuracy']:.1%}")
        # Piped, the table keeps its natural width (nothing cut); a terminal gets the terminal's.
        out = Console() if sys.stdout.isatty() else Console(width=400, no_color=True)
        out.print(table)
    if png is not None:
        console.print(f"trend: {plot_trend(rows, png)}")
