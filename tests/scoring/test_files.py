"""Which files of a folder an inbox run scores: undecided by the model (a new or changed file; the same bytes
re-copied or touched are not changed) and done being written (a `_READY` marker covers what is older than it; the
rest waits for quiet; a future mtime is logged and does not delay a file). Real files, real ledger.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import os
import shutil
import time

from support import after_change_time_of, copy_clips

from toolchain.scoring.files import READY_MARKER, files_to_score, new_files, ready_files, stamp_files
from toolchain.scoring.ledger import Ledger

MODEL = "a" * 64


def _scored(ledger: Ledger, folder, files: list[str]) -> None:
    """What a completed scoring run of `files` leaves in the ledger."""
    ledger.start_run("r", mode="folder", target=str(folder), model_path="m.onnx", model_sha256=MODEL)
    folder_run = ledger.start_folder("r", str(folder), str(folder) + "-out", MODEL)
    ledger.record_files(folder_run, stamp_files(folder, files, content=True))
    ledger.finish_folder(folder_run, "completed")


def test_a_touched_or_recopied_file_is_not_scored_again_but_changed_bytes_are(fsdd_dir, tmp_path):
    folder, ledger = tmp_path / "day1", Ledger.in_dir(tmp_path / "out")
    names = copy_clips(fsdd_dir, folder, 0, 3)
    _scored(ledger, folder, names)
    assert new_files(folder, ledger, MODEL) == []

    os.utime(folder / names[0], (1e9, 1e9))  # `touch -d`: another mtime, the same bytes.
    shutil.copy(fsdd_dir / "recordings" / names[1], folder / names[1])  # A re-copy: a new mtime, the same bytes.
    assert new_files(folder, ledger, MODEL) == []
    assert ledger.decided_files(str(folder), MODEL)[names[0]].mtime_ns == int(1e18)  # Restamped: not hashed again.

    data = bytearray((folder / names[2]).read_bytes())
    data[-1] ^= 0xFF  # One byte of audio changed, the size kept.
    (folder / names[2]).write_bytes(bytes(data))
    assert [s.file for s in new_files(folder, ledger, MODEL)] == [names[2]]


def test_files_newer_than_the_ready_marker_wait_for_quiet_or_a_newer_marker(fsdd_dir, tmp_path):
    folder, ledger = tmp_path / "day1", Ledger.in_dir(tmp_path / "out")
    first = copy_clips(fsdd_dir, folder, 0, 2)
    (folder / READY_MARKER).touch()
    assert [s.file for s in files_to_score(folder, ledger, MODEL, settle_seconds=600)] == first

    after_change_time_of(folder / READY_MARKER)
    shutil.copy(fsdd_dir / "recordings" / "9_yweweler_9.wav", folder / "late.wav")  # Written after the marker.
    assert [s.file for s in files_to_score(folder, ledger, MODEL, settle_seconds=600)] == first
    shutil.copy(fsdd_dir / "recordings" / "9_yweweler_8.wav", folder / "0_early_name.wav")  # Sorts first.
    later = time.time() + 601
    both = [s.file for s in files_to_score(folder, ledger, MODEL, 600, now=later)]
    assert both == ["0_early_name.wav", *first, "late.wav"]  # Sorted, whichever rule made each ready.
    (folder / "0_early_name.wav").unlink()

    after_change_time_of(folder / "late.wav")
    (folder / READY_MARKER).touch()  # The producer's second batch is complete.
    assert [s.file for s in files_to_score(folder, ledger, MODEL, settle_seconds=600)] == [*first, "late.wav"]


def test_a_future_mtime_does_not_hold_a_file_back_and_is_logged(fsdd_dir, tmp_path):
    folder, ledger = tmp_path / "day1", Ledger.in_dir(tmp_path / "out")
    names = copy_clips(fsdd_dir, folder, 0, 2)
    future = time.time() + 365 * 86400  # A producer whose clock is a year ahead.
    os.utime(folder / names[0], (future, future))
    stamps = new_files(folder, ledger, MODEL)
    assert ready_files(folder, stamps, settle_seconds=30) == []  # Just written: not quiet yet.
    lines: list[str] = []
    ready = ready_files(folder, stamps, settle_seconds=30, now=time.time() + 31, log=lines.append)
    assert [s.file for s in ready] == names
    assert len(lines) == 1 and "modification time in the future" in lines[0] and names[0] in lines[0]
