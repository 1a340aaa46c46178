"""Inbox scans cost what arrives: a subfolder whose listing is unchanged since all its files were decided is not
looked into (its files are not even listed), the deep reconcile still finds a file rewritten in place, and a new
serving model scores only what no model decided (forward-only) while a backfill takes the history. Real folders,
a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import toolchain.scoring.inbox as inbox_module
from toolchain.scoring.files import Backfill, look_into, stamp_files
from toolchain.scoring.inbox import folders_with_new_files
from toolchain.scoring.ledger import Ledger

A, B = "a" * 64, "b" * 64
AN_HOUR_AGO = time.time() - 3600


def _inbox(root: Path, folders: int, files: int) -> Path:
    """`folders` subfolders of `files` audio files each, settled (directory times an hour back)."""
    inbox = root / "inbox"
    for i in range(folders):
        day = inbox / f"day{i}"
        day.mkdir(parents=True)
        for j in range(files):
            (day / f"clip{j}.wav").write_bytes(b"RIFF" + bytes([i, j]))
        os.utime(day, (AN_HOUR_AGO, AN_HOUR_AGO))
    return inbox.resolve()


def _scored(ledger: Ledger, folder: Path, sha: str) -> None:
    """What a completed run of `folder` by model `sha` leaves in the ledger."""
    run_id = f"{folder.name}-{sha[0]}-{time.monotonic_ns()}"
    ledger.start_run(run_id, mode="folder", target=str(folder), model_path="/m.onnx", model_sha256=sha)
    fid = ledger.start_folder(run_id, str(folder), f"/out/{folder.name}", sha)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.wav"))
    ledger.record_files(fid, stamp_files(folder, files, content=True))
    ledger.finish_folder(fid, "completed")
    ledger.finish_run(run_id, "completed")


@pytest.fixture
def looked_into(monkeypatch) -> list[str]:
    """The folders a scan looks into file by file."""
    seen: list[str] = []
    real = inbox_module.look_into

    def spy(folder, *args, **kwargs):
        seen.append(Path(folder).name)
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(inbox_module, "look_into", spy)
    return seen


def _scan(inbox: Path, ledger: Ledger, sha: str = A, **kw) -> list[str]:
    return [p.name for p in folders_with_new_files(inbox, ledger, sha, settle_seconds=0, **kw)]


def test_unchanged_folders_are_skipped_and_the_deep_reconcile_finds_rewrites(ledger_location, tmp_path,
                                                                             looked_into):
    inbox, ledger = _inbox(tmp_path, 3, 4), Ledger(ledger_location)
    site = inbox / "day0" / "site-a"
    site.mkdir()
    (site / "x.wav").write_bytes(b"RIFF x")
    for d in (inbox / "day0", site):
        os.utime(d, (AN_HOUR_AGO, AN_HOUR_AGO))
    for day in sorted(inbox.iterdir()):
        _scored(ledger, day, A)
    assert _scan(inbox, ledger, reconcile_files=0) == [] and looked_into == ["day0", "day1", "day2"]
    looked_into.clear()
    assert _scan(inbox, ledger, reconcile_files=0) == [] and looked_into == []  # Listings unchanged.

    (inbox / "day1" / "clip2.wav").write_bytes(b"RIFF new bytes, same name")  # No listing shows this.
    assert _scan(inbox, ledger, reconcile_files=0) == []
    # The deep reconcile looks at a few files a scan (at least one folder), the longest unverified first.
    assert _scan(inbox, ledger, reconcile_files=1) == [] and looked_into == ["day0"]
    assert _scan(inbox, ledger, reconcile_files=1) == ["day1"] and looked_into == ["day0", "day1"]
    assert _scan(inbox, ledger, reconcile_files=0) == ["day1"]  # Its listing is dropped until it is scored.

    looked_into.clear()
    (inbox / "day2" / "late.wav").write_bytes(b"RIFF late")  # A new file changes the listing.
    assert _scan(inbox, ledger, reconcile_files=0) == ["day1", "day2"] and looked_into == ["day1", "day2"]
    (site / "y.wav").write_bytes(b"RIFF y")  # Deeper down: the subfolder's time tells.
    assert _scan(inbox, ledger, reconcile_files=0) == ["day0", "day1", "day2"]


def test_a_new_model_scores_only_what_arrives_and_a_backfill_takes_the_history(ledger_location, tmp_path):
    inbox, ledger = _inbox(tmp_path, 3, 2), Ledger(ledger_location)
    for day in sorted(inbox.iterdir()):
        _scored(ledger, day, A)
    assert _scan(inbox, ledger, B) == []  # The serving model changed: no folder is scored again.
    (inbox / "day3").mkdir()
    (inbox / "day3" / "new.wav").write_bytes(b"RIFF new")
    assert _scan(inbox, ledger, B) == ["day3"]
    _scored(ledger, inbox / "day3", B)

    (inbox / "day4").mkdir()
    (inbox / "day4" / "unscored.wav").write_bytes(b"RIFF nobody scored this yet")
    (inbox / "day0" / "late.wav").write_bytes(b"RIFF nor this")
    # A backfill takes the history only: what no model has scored is the inbox scans' (the serving model's).
    assert _scan(inbox, ledger, B, backfill=Backfill()) == ["day0", "day1", "day2"]
    assert [s.file for s in look_into(inbox / "day0", ledger, B, Backfill())[0]] == ["clip0.wav", "clip1.wav"]
    assert _scan(inbox, ledger, B, backfill=Backfill(folders="day[12]")) == ["day1", "day2"]
    assert _scan(inbox, ledger, B, backfill=Backfill(since="2999-01-01")) == []  # Nothing first seen since.
    _scored(ledger, inbox / "day1", B)
    assert _scan(inbox, ledger, B, backfill=Backfill()) == ["day0", "day2"]  # Resumes where it stopped.


def test_the_deep_reconcile_is_bounded_by_files_and_rotates(tmp_path, looked_into):
    inbox, ledger = _inbox(tmp_path, 3, 4), Ledger.in_dir(tmp_path / "out")
    for day in sorted(inbox.iterdir()):
        _scored(ledger, day, A)
    _scan(inbox, ledger, reconcile_files=0)
    looked_into.clear()
    _scan(inbox, ledger, reconcile_files=8)  # Two folders of 4 files fit.
    _scan(inbox, ledger, reconcile_files=8)  # Then the one left, and the longest unverified after it.
    _scan(inbox, ledger, reconcile_files=3)  # At least one folder, even above the bound.
    assert looked_into == ["day0", "day1", "day2", "day0", "day1"]
