"""`toolchain ledger-copy`: an output folder's SQLite ledger moved into PostgreSQL, history included."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolchain.cli.common import console, user_errors
from toolchain.cli.options import LedgerUrlOption
from toolchain.errors import LedgerError

app = typer.Typer()


@app.command("ledger-copy")
@user_errors
def ledger_copy_command(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="The output folder whose ledger.sqlite holds "
                                             "the history.")],
    ledger_url: LedgerUrlOption = None,
) -> None:
    """Copy OUTPUT_DIR/ledger.sqlite into an empty PostgreSQL ledger (--ledger-url or TOOLCHAIN_LEDGER_URL), every
    run, folder run, file decision, listing and model change, so runs that record there next score only what is
    new; then rename the SQLite file aside (ledger.sqlite.copied-<UTC>). Stop the scoring processes of that output
    folder first."""
    from toolchain.scoring.ledger import copy_history
    from toolchain.scoring.ledger_db import check_ledger_url, describe

    if not ledger_url:
        raise LedgerError("pass --ledger-url postgresql://user@host/db (or set TOOLCHAIN_LEDGER_URL): the empty "
                          "database to copy into")
    aside = copy_history(output_dir, check_ledger_url(ledger_url),
                         log=lambda message: console.print(message, highlight=False))
    console.print(f"copied into {describe(ledger_url)}; the SQLite ledger is now {aside}", soft_wrap=True,
                  highlight=False)
