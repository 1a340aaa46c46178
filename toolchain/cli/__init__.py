"""`toolchain` command line: thin Typer shells over the library.

Each command module owns a Typer app; this package composes their commands into one `toolchain` app (no module
imports this one). A `ToolchainError` becomes a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer
import typer.rich_utils

from toolchain.cli import bench, demo, export, flow, health, ledger, models, score, train

# Piped or logged, rich lays help out in 80 columns and cuts long option names ("--bn-recalibra…"); a terminal
# keeps its own width. TERMINAL_WIDTH, when set, still wins.
if typer.rich_utils.MAX_WIDTH is None and not sys.stdout.isatty():
    typer.rich_utils.MAX_WIDTH = 130

app = typer.Typer(
    name="toolchain",
    help="Train, export and deploy ResNet audio classifiers on log-mel spectrograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _module in (train, demo, export, bench, score, flow, health, ledger, models):
    app.registered_commands.extend(_module.app.registered_commands)
    app.registered_groups.extend(_module.app.registered_groups)
