"""`toolchain` command line: thin Typer shells over the library.

Each command module owns a Typer app; this package composes their commands into one `toolchain` app (no module
imports this one). A `ToolchainError` becomes a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import typer

from toolchain.cli import bench, demo, export, flow, health, ledger, models, score, train

app = typer.Typer(
    name="toolchain",
    help="Train, export and deploy ResNet audio classifiers on log-mel spectrograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: option names are never cut (rich's table cuts them below ~130 columns), the text wraps
    # to the terminal (80 columns at most, also when piped), and a flag shows no `<bool>` metavar.
    rich_markup_mode=None,
)
for _module in (train, demo, export, bench, score, flow, health, ledger, models):
    app.registered_commands.extend(_module.app.registered_commands)
    app.registered_groups.extend(_module.app.registered_groups)
