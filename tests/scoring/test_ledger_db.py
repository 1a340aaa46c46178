"""Where a ledger lives and how its failures read: the output folder's SQLite file unless a PostgreSQL URL is set;
a URL that is not PostgreSQL, or a server that does not answer, is one line naming the ledger (password hidden)."""

from __future__ import annotations

import pytest

from toolchain.errors import LedgerError
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.ledger_db import LEDGER_URL_ENV, check_ledger_url, describe, ledger_location, scrub


def test_the_output_folder_holds_the_ledger_unless_a_url_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv(LEDGER_URL_ENV, raising=False)
    assert ledger_location(tmp_path) == str(tmp_path / "ledger.sqlite")
    monkeypatch.setenv(LEDGER_URL_ENV, "postgresql://u:pw@db/ledger")
    assert ledger_location(tmp_path) == "postgresql://u:pw@db/ledger"


@pytest.mark.parametrize("url, secret", [
    ("postgresql://scorer:s3cret@db:5432/ledger", "s3cret"),
    ("postgresql://scorer:s3/cr@t@db/ledger", "s3/cr@t"),  # Unencoded '/' and '@' in the password.
    ("postgresql://scorer:sec%zzret@db/ledger", "sec%zzret"),  # Malformed percent-encoding.
    ("postgresql://scorer:p%40ss@db/ledger", "p@ss"),  # Its decoded form too.
    ("postgresql://db/ledger?password=hunter2&sslmode=require", "hunter2"),
    ("host=db password=hunter2 dbname=ledger", "hunter2"),
    ("mysql://scorer:s3cret@db/ledger", "s3cret"),
])
def test_a_password_never_reaches_a_message(url, secret):
    assert secret not in describe(url) and "***" in describe(url)
    if not url.startswith("postgresql://"):
        with pytest.raises(LedgerError) as refused:
            check_ledger_url(url)
        assert secret not in str(refused.value) and "is not a PostgreSQL URL" in str(refused.value)
    assert secret not in scrub(f'invalid token: "{secret}" in {url}', url)


def test_an_unreachable_server_is_one_line(tmp_path):
    url = f"postgresql://scorer:s3cret@/ledger?host={tmp_path}&port=1"  # No server behind this socket.
    with pytest.raises(LedgerError) as refused:
        Ledger(url)
    message = str(refused.value)
    assert "\n" not in message and "s3cret" not in message and "cannot connect" in message
    assert "--ledger-url" in message
