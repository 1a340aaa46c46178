"""`toolchain` command line: thin Typer shells over the library.

Each command group lives in its own module and registers on `app`; a `ToolchainError` becomes a one-line
message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="toolchain",
    help="Train, export and deploy ResNet audio classifiers on log-mel spectrograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration imports: each module adds its commands to `app`.
from toolchain.cli import train  # noqa: E402,F401
from toolchain.cli import demo  # noqa: E402,F401
from toolchain.cli import export  # noqa: E402,F401
from toolchain.cli import bench  # noqa: E402,F401
from toolchain.cli import score  # noqa: E402,F401
