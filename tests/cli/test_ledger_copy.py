"""`toolchain ledger-copy`: an output folder's SQLite history moved into PostgreSQL in one command; without a URL,
one line, exit 2."""

from __future__ import annotations

from support import assert_user_error
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.ledger_db import LEDGER_URL_ENV

runner = CliRunner()


def test_the_history_moves_to_postgres_and_the_sqlite_file_is_set_aside(postgres_ledger_url, tmp_path,
                                                                         monkeypatch):
    monkeypatch.delenv(LEDGER_URL_ENV, raising=False)
    out = tmp_path / "out"
    local = Ledger.in_dir(out)
    local.start_run("r1", mode="folder", target="/in/day1", model_path="/m.onnx", model_sha256="a" * 64)
    local.finish_run("r1", "completed")
    assert_user_error(runner.invoke(app, ["ledger-copy", "--output-dir", str(out)]), "pass --ledger-url")

    result = runner.invoke(app, ["ledger-copy", "--output-dir", str(out), "--ledger-url", postgres_ledger_url])
    assert result.exit_code == 0, result.output
    assert "runs: 1 rows" in result.stderr and "ledger.sqlite.copied-" in result.stderr
    assert [r.run_id for r in Ledger(postgres_ledger_url).runs()] == ["r1"]
    assert not (out / "ledger.sqlite").exists()
