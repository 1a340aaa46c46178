"""`toolchain backfill`: a new model rescores an inbox's history into follow-up CSVs, every file exactly one row
from it, resumed after kill -9 (the run parked at a deterministic hook, then killed), and two backfills at once on
one ledger (SQLite, and a real PostgreSQL through --ledger-url) still give each file one row. Bad input is one
line, exit 2, before any work.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support import assert_user_error, copy_clips, held_env, kill_group, read_rows, wait_until
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.io import file_sha256
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.ledger_db import LEDGER_URL_ENV

runner = CliRunner()
TOOLCHAIN = str(Path(sys.executable).with_name("toolchain"))  # The console script of this venv.
FAST = ["--workers", "0", "--threads", "1", "--batch-size", "4"]


@pytest.fixture
def models(tiny_onnx, tiny_onnx_successor) -> tuple[Path, Path]:
    return tiny_onnx, tiny_onnx_successor


def _inbox(fsdd_dir: Path, root: Path, folders: int = 3, files: int = 4) -> Path:
    for i in range(folders):
        copy_clips(fsdd_dir, root / "inbox" / f"day{i}", files * i, files)
    return root / "inbox"


def _rows_by_model(out: Path) -> dict[str, Counter]:
    """model sha256 -> Counter of (folder, file) over every published predictions CSV."""
    rows: dict[str, Counter] = {}
    for csv_path in sorted(out.glob("*/predictions_*.csv")):
        for row in read_rows(csv_path):
            rows.setdefault(row["model_sha256"], Counter())[(csv_path.parent.name, row["file"])] += 1
    return rows


def _score_history(model: Path, inbox: Path, out: Path, *extra: str) -> None:
    """Every folder of `inbox` scored by `model`, as the serving model's inbox runs leave them."""
    for folder in sorted(inbox.iterdir()):
        result = runner.invoke(app, ["score", "--model", str(model), "--input", str(folder), "--out", str(out),
                                     *FAST, *extra])
        assert result.exit_code == 0, result.output


def _backfill(model: Path, inbox: Path, out: Path, *extra: str) -> list[str]:
    return [TOOLCHAIN, "backfill", "--model", str(model), "--inbox", str(inbox), "--output-dir", str(out),
            "--settle-seconds", "0", *FAST, *extra]


@pytest.mark.parametrize("args, message", [
    (["--since", "last spring"], "since 'last spring' is not a date: pass YYYY-MM-DD"),
    (["--folders", "2026-*"], "matches --folders '2026-*'"),
    (["--ledger-url", "mysql://scorer:s3cret@db/ledger"], "is not a PostgreSQL URL"),
    (["--ledger-url", "postgresql://scorer:s3cret@/ledger?host={tmp}&port=1"], "cannot connect"),
    (["--inbox", "{tmp}/nowhere"], "--inbox {tmp}/nowhere does not exist"),
])
def test_bad_input_is_one_line_before_any_work(tiny_onnx, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    inbox = [] if "--inbox" in args else ["--inbox", str(tmp_path)]
    result = runner.invoke(app, ["backfill", "--model", str(tiny_onnx), "--output-dir", str(tmp_path / "out"),
                                 *inbox, *args])
    assert_user_error(result, message.format(tmp=tmp_path))
    assert "s3cret" not in result.stderr and not (tmp_path / "out" / "ledger.sqlite").exists()


def test_a_killed_backfill_resumes_and_every_file_gets_one_row_from_the_new_model(models, fsdd_dir, tmp_path):
    old, new = models
    inbox, out = _inbox(fsdd_dir, tmp_path), tmp_path / "out"
    _score_history(old, inbox, out)
    copy_clips(fsdd_dir, inbox / "day9", 30, 1)  # Arrived, not scored yet: the serving model's inbox scans' file.

    hold = tmp_path / "held"
    with (tmp_path / "backfill.log").open("w") as log:  # Parked mid-way through the second folder.
        proc = subprocess.Popen(_backfill(new, inbox, out), env=held_env(5, hold), stdout=log, stderr=log,
                                start_new_session=True)
    try:
        wait_until(hold.exists, 240, "the backfill to hold after 5 rows", proc, tmp_path / "backfill.log")
    finally:
        kill_group(proc)
    done = _rows_by_model(out).get(file_sha256(new), Counter())
    assert {folder for folder, _ in done} == {"day0"}  # One folder finished before the kill.

    rerun = subprocess.run(_backfill(new, inbox, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "2 folder(s) scored, 8 file(s)" in rerun.stderr  # day0 is not scored again.
    rows = _rows_by_model(out)
    every_file = {(f"day{i}", name) for i in range(3) for name in os.listdir(inbox / f"day{i}")}
    for model in (old, new):  # The old rows stay; the new model has exactly one row per file.
        assert set(rows[file_sha256(model)]) == every_file and set(rows[file_sha256(model)].values()) == {1}
    ledger = Ledger.in_dir(out)
    backfills = [r for r in ledger.runs() if r.mode == "backfill" and r.model_sha256 == file_sha256(new)]
    assert [r.state for r in backfills] == ["crashed", "completed"]
    assert [h["rule"] for h in ledger.history(str(inbox.resolve()))] == ["backfill", "backfill"]
    assert not (out / "day9").exists()  # No model scored it: not the backfill's to take.


def test_two_backfills_at_once_on_one_ledger_give_each_file_one_row(models, fsdd_dir, tmp_path, ledger_location,
                                                                   monkeypatch):
    old, new = models
    inbox, out = _inbox(fsdd_dir, tmp_path, folders=4, files=3), tmp_path / "out"
    url = [] if ledger_location.endswith(".sqlite") else ["--ledger-url", ledger_location]
    _score_history(old, inbox, out, *url)
    hold = tmp_path / "held"
    with (tmp_path / "first.log").open("w") as log:  # Parked inside day0, holding its lock.
        first = subprocess.Popen(_backfill(new, inbox, out, *url), env=held_env(1, hold), stdout=log, stderr=log,
                                 start_new_session=True)
    try:
        wait_until(hold.exists, 240, "the first backfill to hold in day0", first, tmp_path / "first.log")
        second = subprocess.run(_backfill(new, inbox, out, *url), capture_output=True, text=True, timeout=300)
        hold.unlink()  # The first one goes on: day0, then finds the others scored.
        first.wait(300)
    finally:
        kill_group(first)
    assert second.returncode == 1 and "1 folder(s) were being scored by another run" in second.stderr, \
        second.stderr[-2000:]
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-2000:]
    counts = _rows_by_model(out)[file_sha256(new)]
    assert len(counts) == 12 and set(counts.values()) == {1}
    if url:  # Recorded in PostgreSQL, not beside the outputs.
        assert not (out / "ledger.sqlite").exists()
        monkeypatch.setenv(LEDGER_URL_ENV, ledger_location)
    runs = [r for r in Ledger.in_dir(out).runs() if r.mode == "backfill"]
    assert [r.state for r in runs] == ["completed", "completed"]
