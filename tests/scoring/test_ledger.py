"""The run ledger, in SQLite and in a real PostgreSQL: schema, 'scored' and forward-only semantics, listings,
crash reconciliation, concurrent writers (real processes)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import time

import pytest

from toolchain.errors import LedgerError
from toolchain.scoring.ledger import FileStamp, Ledger, copy_history
from toolchain.scoring.ledger_db import LEDGER_URL_ENV
from toolchain.scoring.ledger_schema import Listing, utc_now


def start(ledger: Ledger, run_id: str, **kw) -> None:
    ledger.start_run(run_id, mode=kw.pop("mode", "folder"), target="/in/day1", model_path="/m.onnx",
                     model_sha256=kw.pop("sha", "a" * 64), **kw)


def test_schema_is_wal_and_documented_tables_exist(tmp_path):
    ledger = Ledger.in_dir(tmp_path)
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "folder_runs", "folder_files"} <= tables
    columns = {r[1] for r in db.execute("PRAGMA table_info(folder_runs)")}
    assert {"run_id", "flow_run_id", "folder", "model_sha256", "started_at", "finished_at", "files_ok",
            "files_error", "task_retries", "state", "csv_path"} <= columns


def test_folder_counts_as_scored_only_once_completed(ledger_location, tmp_path):
    ledger = Ledger(ledger_location)
    start(ledger, "r1", flow_run_id="f-1")
    fid = ledger.start_folder("r1", "/in/day1", str(tmp_path / "day1"), "a" * 64, "f-1")
    assert ledger.scored_csv("/in/day1", "a" * 64) is None
    ledger.set_csv_path(fid, "/out/day1/predictions_x.csv")
    assert ledger.scored_csv("/in/day1", "a" * 64) is None  # Path noted, CSV not yet recorded complete.
    ledger.finish_folder(fid, "completed", files_ok=3, files_error=1, task_retries=2)
    assert ledger.scored_csv("/in/day1", "a" * 64) == "/out/day1/predictions_x.csv"
    assert ledger.scored_csv("/in/day1", "b" * 64) is None  # Another model has not scored it.
    run = ledger.finish_run("r1", "completed")
    assert (run.state, run.folders, run.files_ok, run.files_error, run.task_retries) == ("completed", 1, 3, 1, 2)
    assert run.flow_run_id == "f-1" and run.finished_at is not None


def test_inbox_run_totals_include_its_child_runs(ledger_location, tmp_path):
    ledger = Ledger(ledger_location)
    start(ledger, "parent", mode="inbox")
    for i in range(2):
        start(ledger, f"child{i}", parent_run_id="parent")
        fid = ledger.start_folder(f"child{i}", f"/in/d{i}", f"/out/d{i}", "a" * 64)
        ledger.finish_folder(fid, "completed", files_ok=5, files_error=i)
        ledger.finish_run(f"child{i}", "completed")
    parent = ledger.finish_run("parent", "completed")
    assert (parent.folders, parent.files_ok, parent.files_error) == (2, 10, 1)


def test_reconcile_settles_rows_left_by_killed_runs(ledger_location, tmp_path):
    ledger = Ledger(ledger_location)
    start(ledger, "dead")
    out = tmp_path / "day1"
    out.mkdir()
    published = out / "predictions_20240101T000000Z.csv"
    published.write_text("file,label,confidence,status,error\na.wav,x,0.9,ok,\nb.wav,,,error,bad\n")
    never_written = ledger.start_folder("dead", "/in/day1", str(out), "a" * 64)
    renamed = ledger.start_folder("dead", "/in/day1", str(out), "a" * 64)
    ledger.set_csv_path(renamed, str(published))  # Died after the rename, before recording.

    settled = {r.id: r for r in ledger.reconcile_folder(str(out))}
    assert settled[never_written].state == "crashed"
    assert settled[renamed].state == "completed" and "recovered" in settled[renamed].error
    assert (settled[renamed].files_ok, settled[renamed].files_error) == (1, 1)
    assert ledger.scored_csv("/in/day1", "a" * 64) == str(published)
    assert ledger.reconcile_folder(str(out)) == []


def test_runs_of_dead_processes_are_reaped(ledger_location):
    code = (
        "import sys; from toolchain.scoring.ledger import Ledger; "
        "Ledger(sys.argv[1]).start_run('ghost', mode='folder', target='/x', model_path='/m', model_sha256='s')"
    )
    subprocess.run([sys.executable, "-c", code, ledger_location], check=True)
    ledger = Ledger(ledger_location)
    start(ledger, "alive")
    assert [r.run_id for r in ledger.reap_dead_runs()] == ["ghost"]
    states = {r.run_id: r.state for r in ledger.runs()}
    assert states == {"ghost": "crashed", "alive": "running"}


def _writer(path: str, prefix: str, n: int) -> None:
    ledger = Ledger(path)
    for i in range(n):
        run_id = f"{prefix}-{i}"
        ledger.start_run(run_id, mode="folder", target=f"/in/{run_id}", model_path="/m", model_sha256="s")
        fid = ledger.start_folder(run_id, f"/in/{run_id}", f"/out/{run_id}", "s")
        ledger.finish_folder(fid, "completed", files_ok=1)
        ledger.finish_run(run_id, "completed")


def test_two_processes_writing_at_once_lose_nothing(ledger_location):
    path = ledger_location
    Ledger(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ledger = Ledger(path)
    runs = ledger.runs()
    assert len(runs) == 80 and all(r.state == "completed" and r.files_ok == 1 for r in runs)
    assert len(ledger.folder_runs()) == 80


def test_files_count_as_scored_only_as_they_were_and_once_their_run_completed(tmp_path):
    ledger = Ledger.in_dir(tmp_path)
    start(ledger, "r1")
    fid = ledger.start_folder("r1", "/in/day1", str(tmp_path / "day1"), "a" * 64)
    ledger.record_files(fid, [FileStamp("a.wav", 10, 111), FileStamp("sub/b.wav", 20, 222)])
    assert ledger.decided_files("/in/day1", "a" * 64) == {}  # Not before the run completed.
    ledger.finish_folder(fid, "completed", files_ok=2)
    scored = ledger.decided_files("/in/day1", "a" * 64)
    assert set(scored) == {"a.wav", "sub/b.wav"} and ledger.decided_files("/in/day1", "b" * 64) == {}
    assert scored["a.wav"].matches(FileStamp("a.wav", 10, 111))
    assert not scored["a.wav"].matches(FileStamp("a.wav", 11, 111))  # Changed since: not scored as it is now.
    # A crashed follow-up run scores nothing; a completed one updates the stamp.
    fid2 = ledger.start_folder("r1", "/in/day1", str(tmp_path / "day1"), "a" * 64)
    ledger.record_files(fid2, [FileStamp("a.wav", 11, 333)])
    ledger.finish_folder(fid2, "crashed")
    assert ledger.decided_files("/in/day1", "a" * 64)["a.wav"].size == 10


def test_runs_recorded_before_files_were_count_their_csv_rows(tmp_path):
    """An older ledger (no folder_files rows): the files of a completed run's CSV are scored, whatever their stamp."""
    csv_path = tmp_path / "day1" / "predictions_x.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("file,label,status\na.wav,dog,ok\nb.wav,,error\n")
    ledger = Ledger.in_dir(tmp_path)
    start(ledger, "r1")
    fid = ledger.start_folder("r1", "/in/day1", str(tmp_path / "day1"), "a" * 64)
    ledger.finish_folder(fid, "completed", files_ok=1, files_error=1, csv_path=str(csv_path))
    scored = ledger.decided_files("/in/day1", "a" * 64)
    assert set(scored) == {"a.wav", "b.wav"} and scored["a.wav"].matches(FileStamp("a.wav", 5, 5))


def _decided(ledger: Ledger, run_id: str, folder: str, sha: str, files: dict[str, int], mtime_ns: int = 1) -> None:
    """A completed run of `folder` by model `sha` that decided `files` (name -> size)."""
    ledger.start_run(run_id, mode="folder", target=folder, model_path="/m", model_sha256=sha)
    fid = ledger.start_folder(run_id, folder, f"/out/{run_id}", sha)
    ledger.record_files(fid, [FileStamp(f, size, mtime_ns) for f, size in files.items()])
    ledger.finish_folder(fid, "completed")
    ledger.finish_run(run_id, "completed")


def test_forward_only_counts_any_models_decisions_and_a_backfill_only_its_own(ledger_location):
    ledger = Ledger(ledger_location)
    _decided(ledger, "old", "/in/day1", "a" * 64, {"x.wav": 1, "y.wav": 2})
    since = _tick()
    _decided(ledger, "new", "/in/day1", "b" * 64, {"z.wav": 3})
    _decided(ledger, "other", "/in/day10", "a" * 64, {"w.wav": 4})
    assert set(ledger.decided_files("/in/day1")) == {"x.wav", "y.wav", "z.wav"}  # Forward-only: any model.
    assert set(ledger.decided_files("/in/day1", "b" * 64)) == {"z.wav"}  # A backfill of the whole history.
    assert set(ledger.decided_files("/in/day1", "b" * 64, since)) == {"x.wav", "y.wav", "z.wav"}
    assert set(ledger.decided_files("/in/day1", "c" * 64, since)) == {"x.wav", "y.wav"}  # z arrived since.


def _tick() -> str:
    """A ledger time strictly after every time recorded so far (the ledger's times have whole seconds)."""
    now = utc_now()
    while utc_now() == now:
        time.sleep(0.05)
    return utc_now()


def test_a_backfill_since_a_date_goes_by_when_each_content_was_first_seen(ledger_location):
    ledger = Ledger(ledger_location)
    _decided(ledger, "c-v1", "/in/day1", "c" * 64, {"x.wav": 1, "y.wav": 1})
    _decided(ledger, "a-v2", "/in/day1", "a" * 64, {"x.wav": 2})  # x rewritten, then scored by the new model.
    since = _tick()
    _decided(ledger, "a-v3", "/in/day1", "a" * 64, {"y.wav": 3})  # y rewritten after `since`.
    decided = ledger.decided_files("/in/day1", "c" * 64, since)
    assert decided["x.wav"].size == 2  # Its current content predates `since`: outside the backfill.
    assert decided["y.wav"].size == 1  # Content first seen since then: C's stale stamp, so C scores it again.


def test_listings_are_looked_up_by_folder_many_at_a_time(ledger_location):
    ledger = Ledger(ledger_location)
    ledger.record_listing("/in/day1", Listing({"": 5, "sub": 6}, 10, 3))
    ledger.record_listing("/in/day1", Listing({"": 7}, 11, 4))  # Recorded again: replaced.
    ledger.record_listing("/in2/day1", Listing({"": 8}, 12, 1))  # Another inbox whose name starts the same way.
    ledger.record_listing("/in/day2", Listing({"": 9}, 13, 2 ** 40))
    many = ["/in/day1", "/in/day2", "/in/day3"] + [f"/in/other{i}" for i in range(1200)]  # Several queries.
    assert ledger.listings(many) == {"/in/day1": Listing({"": 7}, 11, 4), "/in/day2": Listing({"": 9}, 13, 2 ** 40)}
    ledger.forget_listings(["/in/day1"])
    assert set(ledger.listings(many)) == {"/in/day2"}


def test_a_new_serving_model_is_recorded_once(ledger_location):
    ledger = Ledger(ledger_location)
    assert ledger.adopt_model("/in", "a" * 64, "/a.onnx") is None  # The inbox's first model.
    assert ledger.adopt_model("/in", "a" * 64, "/a.onnx") is None  # Still serving: nothing new.
    assert ledger.adopt_model("/in", "b" * 64, "/b.onnx") == "a" * 64
    ledger.record_history("/in", "b" * 64, "/b.onnx", "backfill", since="2026-05-01T00:00:00+00:00", folders="d*")
    assert [(h["model_sha256"][0], h["rule"], h["folders"]) for h in ledger.history("/in")] == [
        ("a", "forward", None), ("b", "forward", None), ("b", "backfill", "d*")]


def test_sizes_and_times_beyond_32_bits_round_trip(ledger_location):
    ledger = Ledger(ledger_location)
    _decided(ledger, "big", "/in/day1", "a" * 64, {"huge.wav": 5 * 2**32}, mtime_ns=2**62)
    [stamp] = ledger.decided_files("/in/day1").values()
    assert (stamp.size, stamp.mtime_ns) == (5 * 2**32, 2**62)


def test_a_postgres_ledger_serves_one_output_folder_and_never_hides_a_local_history(postgres_ledger_url, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv(LEDGER_URL_ENV, postgres_ledger_url)
    Ledger.in_dir(tmp_path / "out-a")  # Claims the database for out-a.
    with pytest.raises(LedgerError, match="give each output folder its own database"):
        Ledger.in_dir(tmp_path / "out-b")
    monkeypatch.setenv(LEDGER_URL_ENV, "postgress://typo@db/ledger")
    with pytest.raises(LedgerError, match="TOOLCHAIN_LEDGER_URL .* is not a PostgreSQL URL"):
        Ledger.in_dir(tmp_path / "out-a")  # Never taken for an SQLite path.


def test_a_local_history_is_copied_into_postgres_ids_and_all(postgres_ledger_url, tmp_path, monkeypatch):
    out = tmp_path / "out"
    local = Ledger.in_dir(out)
    _decided(local, "r1", "/in/day1", "a" * 64, {"x.wav": 1, "y.wav": 2})
    _decided(local, "r2", "/in/day2", "a" * 64, {"z.wav": 3})
    local.record_listing("/in/day1", Listing({"": 5}, 6, 2))
    local.adopt_model("/in", "a" * 64, "/a.onnx")
    monkeypatch.setenv(LEDGER_URL_ENV, postgres_ledger_url)
    with pytest.raises(LedgerError, match="ledger-copy"):
        Ledger.in_dir(out)  # Recording there now would start from nothing: every folder scored again.

    aside = copy_history(out, postgres_ledger_url)
    assert aside.name.startswith("ledger.sqlite.copied-") and not (out / "ledger.sqlite").exists()
    shared = Ledger.in_dir(out)
    assert set(shared.decided_files("/in/day1")) == {"x.wav", "y.wav"} and shared.listings(["/in/day1"])
    assert [r.run_id for r in shared.runs()] == ["r1", "r2"] and len(shared.history("/in")) == 1
    _decided(shared, "r3", "/in/day3", "a" * 64, {"w.wav": 4})  # New rows take ids after the copied ones.
    assert [r.id for r in shared.folder_runs()] == [1, 2, 3]
    with pytest.raises(LedgerError, match="already holds runs"):
        (out / "ledger.sqlite").write_bytes(aside.read_bytes())
        copy_history(out, postgres_ledger_url)
