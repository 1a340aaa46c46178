"""Arrival-driven scoring end to end: `prefect server start` -> `toolchain serve --inbox` -> `toolchain watch`,
audio written file by file into the inbox, each batch marked ready by its producer: every file is scored, exactly
once, with no scan triggered by hand.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from support import copy_clips, published_csvs, read_rows, stop, wait_until

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 240


def _rows_by_file(out: Path, folder: str) -> Counter:
    return Counter(r["file"] for csv_path in published_csvs(out / folder) for r in read_rows(csv_path))


def test_watched_inbox_scores_every_arriving_file_exactly_once(prefect_env, onnx_model, fsdd_dir, tmp_path):
    env, inbox, out = prefect_env, tmp_path / "inbox", tmp_path / "out"
    before = copy_clips(fsdd_dir, inbox / "before-watch", 0, 2)  # There before the watcher starts.
    (inbox / "before-watch" / "_READY").touch()
    toolchain = str(BIN / "toolchain")
    common = ["--model", str(onnx_model), "--output-dir", str(out), "--inbox", str(inbox), "--settle-seconds", "600"]
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("serve", "watch")}
    serve = subprocess.Popen([toolchain, "serve", *common, "--interval", "86400", "--workers", "1", "--threads", "1"],
                             env=env, stdout=logs["serve"], stderr=subprocess.STDOUT, start_new_session=True)
    watch = None
    try:
        def deployed() -> bool:
            return subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "score-inbox/on-arrival"],
                                  env=env, capture_output=True).returncode == 0

        wait_until(deployed, STARTUP_TIMEOUT_S, "the on-arrival deployment", serve, tmp_path / "serve.log")
        watch = subprocess.Popen([toolchain, "watch", *common, "--reconcile-seconds", "5"], env=env,
                                 stdout=logs["watch"], stderr=subprocess.STDOUT, start_new_session=True)
        # A producer that writes file by file, then says the batch is complete: never half-scored, however long
        # the writes take (every folder waits for its _READY: nothing here is quiet for the 600-s settle).
        slow_source = tmp_path / "source"
        slow = copy_clips(fsdd_dir, slow_source, 10, 4)
        (inbox / "slow").mkdir()
        for name in slow:
            shutil.copy(slow_source / name, inbox / "slow" / name)
        (inbox / "slow" / "_READY").touch()

        def complete() -> bool:
            return set(_rows_by_file(out, "before-watch")) == set(before) and \
                set(_rows_by_file(out, "slow")) == set(slow)

        wait_until(complete, STARTUP_TIMEOUT_S, "every arrived file scored", watch, tmp_path / "serve.log")
        # A late file for a folder already scored: a follow-up CSV with just its row.
        late = copy_clips(fsdd_dir, tmp_path / "late", 20, 1)
        shutil.copy(tmp_path / "late" / late[0], inbox / "slow" / late[0])
        (inbox / "slow" / "_READY").touch()  # The producer's second batch in a folder that has a marker.
        wait_until(lambda: late[0] in _rows_by_file(out, "slow"), STARTUP_TIMEOUT_S, "the late file scored", watch,
                   tmp_path / "serve.log")
        # Twenty folders dropped at once, each marked ready by its producer.
        burst = {}
        for i in range(20):
            burst[f"burst-{i:02d}"] = copy_clips(fsdd_dir, inbox / f"burst-{i:02d}", 30 + 2 * i, 2)
            (inbox / f"burst-{i:02d}" / "_READY").touch()
        wait_until(lambda: all(set(_rows_by_file(out, name)) == set(files) for name, files in burst.items()),
                   STARTUP_TIMEOUT_S, "every burst folder scored", watch, tmp_path / "serve.log")
        # One more full scan, after every file is scored: it must find nothing to score again.
        again = subprocess.run([toolchain, "flow", *common], env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0 and "predictions:" not in again.stdout, again.stdout + again.stderr[-3000:]
        assert _rows_by_file(out, "before-watch") == Counter(before)
        assert _rows_by_file(out, "slow") == Counter(slow + late)
        assert [len(read_rows(p)) for p in published_csvs(out / "slow")] == [len(slow), 1]
        assert all(_rows_by_file(out, name) == Counter(files) for name, files in burst.items())
    finally:
        if watch is not None:
            stop(watch)
        stop(serve)
        for sink in logs.values():
            sink.close()
