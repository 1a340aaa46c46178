"""Where a ledger lives and how its failures read: the output folder's SQLite file unless a PostgreSQL URL is set;
a URL that is not PostgreSQL, or a server that does not answer, is one line naming the ledger (password hidden)."""

from __future__ import annotations

import pytest

from toolchain.errors import LedgerError
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.ledger_db import LEDGER_URL_ENV, check_ledger_url, describe, ledger_location


def test_the_output_folder_holds_the_ledger_unless_a_url_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv(LEDGER_URL_ENV, raising=False)
    assert ledger_location(tmp_path) == str(tmp_path / "ledger.sqlite")
    monkeypatch.setenv(LEDGER_URL_ENV, "postgresql://u:pw@db/ledger")
    assert ledger_location(tmp_path) == "postgresql://u:pw@db/ledger"


def test_a_password_never_reaches_a_message():
    assert describe("postgresql://scorer:s3cret@db:5432/ledger") == "postgresql://scorer:***@db:5432/ledger"
    with pytest.raises(LedgerError) as refused:
        check_ledger_url("mysql://scorer:s3cret@db/ledger")
    assert "s3cret" not in str(refused.value) and "is not a PostgreSQL URL" in str(refused.value)


def test_an_unreachable_server_is_one_line(tmp_path):
    url = f"postgresql://scorer:s3cret@/ledger?host={tmp_path}&port=1"  # No server behind this socket.
    with pytest.raises(LedgerError) as refused:
        Ledger(url)
    message = str(refused.value)
    assert "\n" not in message and "s3cret" not in message and "cannot connect" in message
    assert "--ledger-url" in message
