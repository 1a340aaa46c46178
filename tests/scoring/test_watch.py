"""InboxWatcher: a folder is reported once it is ready and holds unscored files, once per change; sweeps find what
events missed; real filesystem events through watchdog."""

from __future__ import annotations

import os
import threading
import time

from support import copy_clips

from toolchain.scoring.files import stamp_files
from toolchain.scoring.inbox import folders_with_new_files
from toolchain.scoring.ledger import FileStamp, Ledger
from toolchain.scoring.watch import InboxWatcher


def _watcher(tiny_onnx, tmp_path, reported, **kw) -> InboxWatcher:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return InboxWatcher(tmp_path / "inbox", tmp_path / "out", tiny_onnx, reported.append, **kw)


def test_reported_once_ready_and_again_only_when_its_unscored_files_change(tiny_onnx, fsdd_dir, tmp_path):
    reported = []
    watcher = _watcher(tiny_onnx, tmp_path, reported, settle_seconds=30)
    day = tmp_path / "inbox" / "day1"
    copy_clips(fsdd_dir, day, 0, 2)
    watcher.sweep()  # Files that were there before the watcher started.
    assert watcher.check() == []  # Just written: not quiet for 30 s yet.
    later = time.time() + 60  # Change times cannot be set back: the watcher is asked "a minute from now".
    assert watcher.check(now=later) == [day] and reported == [day]
    watcher.touched(day / "0_george_0.wav")
    assert watcher.check(now=later) == []  # Same unscored files, already reported.

    copy_clips(fsdd_dir, tmp_path / "more", 2, 1)
    for name in os.listdir(tmp_path / "more"):
        (tmp_path / "more" / name).rename(day / name)
    watcher.touched(day / "x")
    assert watcher.check() == []  # A new file: not quiet yet.
    (day / "_READY").touch()  # The producer says it is done.
    assert watcher.check() == [day]

    # A run scores everything: nothing left to report, whatever the events say.
    ledger = Ledger.in_dir(tmp_path / "out")
    ledger.start_run("r", mode="folder", target=str(day), model_path=str(tiny_onnx), model_sha256=watcher._sha)
    fid = ledger.start_folder("r", str(day.resolve()), str(tmp_path / "out" / "day1"), watcher._sha)
    ledger.record_files(fid, [FileStamp(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in day.glob("*.wav")])
    ledger.finish_folder(fid, "completed")
    watcher.sweep()
    assert watcher.check() == [] and len(reported) == 2


class _Reports(list):
    """The folders reported so far; `first` is set by the first report (what a test waits on)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = threading.Event()

    def append(self, folder) -> None:
        super().append(folder)
        self.first.set()


def test_real_filesystem_events_report_a_new_folder(tiny_onnx, fsdd_dir, tmp_path):
    reported = _Reports()
    watcher = _watcher(tiny_onnx, tmp_path, reported, settle_seconds=1, reconcile_seconds=3600)
    stop = threading.Event()
    started = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop, started), daemon=True)
    thread.start()
    try:
        assert started.wait(60)  # The observer is up; no sweep will come for an hour: only events can tell.
        copy_clips(fsdd_dir, tmp_path / "inbox" / "arrived", 0, 2)
        reported.first.wait(30)
    finally:
        stop.set()
        thread.join(15)
    assert reported == [tmp_path / "inbox" / "arrived"]


def test_an_event_makes_the_next_scan_look_into_a_folder_its_listing_calls_unchanged(tiny_onnx, tmp_path):
    reported = []
    watcher = _watcher(tiny_onnx, tmp_path, reported, settle_seconds=0)
    day = tmp_path / "inbox" / "day1"
    day.mkdir()
    (day / "a.wav").write_bytes(b"RIFF first take")
    an_hour_ago = time.time() - 3600
    os.utime(day, (an_hour_ago, an_hour_ago))
    ledger = Ledger.in_dir(tmp_path / "out")
    ledger.start_run("r", mode="folder", target=str(day), model_path=str(tiny_onnx), model_sha256=watcher._sha)
    fid = ledger.start_folder("r", str(day.resolve()), str(tmp_path / "out" / "day1"), watcher._sha)
    ledger.record_files(fid, stamp_files(day, ["a.wav"], content=True))
    ledger.finish_folder(fid, "completed")
    watcher.sweep()
    assert watcher.check() == [] and set(ledger.listings([str(day.resolve())])) == {str(day.resolve())}

    (day / "a.wav").write_bytes(b"RIFF second take, written in place")  # The listing cannot tell.
    inbox = (tmp_path / "inbox").resolve()
    assert folders_with_new_files(inbox, ledger, watcher._sha, 0, reconcile_files=0) == []
    watcher.sweep()
    assert watcher.check() == []  # A sweep trusts the listing too...
    watcher.touched(day / "a.wav")  # ...an event does not.
    assert watcher.check() == [day]
    assert folders_with_new_files(inbox, ledger, watcher._sha, 0, reconcile_files=0) == [day.resolve()]


def test_a_registered_model_is_resolved_again_at_every_sweep(tiny_onnx, tiny_onnx_successor, tmp_path):
    from support import certified_bundle

    from toolchain.registry.registry import promote, register_bundle
    from toolchain.scoring.models import describe_model

    # The test's own local MLflow store (tests/conftest.py): registry without a server.
    register_bundle(certified_bundle(tiny_onnx, tmp_path / "v1"), "watched")
    register_bundle(certified_bundle(tiny_onnx_successor, tmp_path / "v2"), "watched")
    promote("watched", 1)
    (tmp_path / "inbox").mkdir()
    said: list[str] = []
    watcher = InboxWatcher(tmp_path / "inbox", tmp_path / "out", "models:/watched@champion", lambda p: None,
                           log=said.append)
    assert watcher._sha == describe_model(tiny_onnx).sha256
    assert any("models:/watched@champion is watched/1" in line for line in said)
    promote("watched", 2)
    watcher.sweep()
    assert watcher._sha == describe_model(tiny_onnx_successor).sha256
