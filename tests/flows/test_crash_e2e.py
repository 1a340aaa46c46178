"""A flow run killed with kill -9 is Crashed in Prefect within the zombie bound, `--watch` returns, and the ledger
says crashed at the same time, not at the next run. Real server, real serve, real SIGKILL.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import copy_clips, held_env, stop, wait_until

from flows.recovery import ZOMBIE_AFTER_SECONDS
from toolchain.scoring.ledger import Ledger

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 240


def _start_run(prefect: str, env: dict, folder: Path) -> subprocess.Popen:
    return subprocess.Popen([prefect, "deployment", "run", "score-folder/on-demand", "--param", f'folder="{folder}"',
                             "--watch", "--watch-timeout", "900"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_run(out: Path):
    if not (out / "ledger.sqlite").exists():
        return None
    return next((r for r in Ledger.in_dir(out).runs() if r.state == "running"), None)


def test_killed_runs_are_crashed_in_prefect_and_the_ledger(prefect_env, onnx_model, fsdd_dir, tmp_path):
    out, prefect, held = tmp_path / "out", str(BIN / "prefect"), tmp_path / "held"
    env = held_env(3, held, prefect_env)  # Each run parks mid-folder, after 3 rows, until it is killed.
    folders = [tmp_path / "requests" / name for name in ("day1", "day2")]
    for folder in folders:
        copy_clips(fsdd_dir, folder, 0, 10)
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        serve = subprocess.Popen([str(BIN / "toolchain"), "serve", "--model", str(onnx_model), "--output-dir",
                                  str(out), "--allow-root", str(tmp_path / "requests"), "--workers", "0",
                                  "--threads", "1", "--batch-size", "1"],
                                 env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    watches: list[subprocess.Popen] = []
    try:
        wait_until(lambda: subprocess.run([prefect, "deployment", "inspect", "score-folder/on-demand"], env=env,
                                          capture_output=True).returncode == 0, STARTUP_TIMEOUT_S,
                   "the served deployments", serve, log)

        # 1. The flow run's own process dies (OOM killer): serve sees it, the ledger follows within seconds.
        watches.append(_start_run(prefect, env, folders[0]))
        wait_until(held.exists, STARTUP_TIMEOUT_S, "the first run to be mid-folder", serve, log)
        run = _running_run(out)
        held.unlink()  # Not waited on any more: the process is killed at once.
        os.kill(run.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: Ledger.in_dir(out).run(run.run_id).state == "crashed", 60, "the ledger's crashed row",
                   serve, log)
        ledger_seconds = time.monotonic() - killed
        output, _ = watches[0].communicate(timeout=240)
        print(f"flow run process killed: Crashed in Prefect after {time.monotonic() - killed:.0f} s, "
              f"in the ledger after {ledger_seconds:.0f} s")
        assert watches[0].returncode != 0 and "Crashed" in output, output[-3000:]
        assert Ledger.in_dir(out).folder_runs()[0].state == "crashed"

        # 2. The whole machine's processes die (serve and its run): nobody is left to report; heartbeats stop and
        #    the zombie automation marks the run Crashed within its bound.
        watches.append(_start_run(prefect, env, folders[1]))
        wait_until(held.exists, STARTUP_TIMEOUT_S, "the second run to be mid-folder", serve, log)
        os.killpg(serve.pid, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = watches[1].communicate(timeout=ZOMBIE_AFTER_SECONDS + 240)
        print(f"serve and its run killed: Crashed in Prefect after {time.monotonic() - killed:.0f} s "
              f"(bound {ZOMBIE_AFTER_SECONDS} s without a heartbeat)")
        assert watches[1].returncode != 0 and "Crashed" in output, output[-3000:]
    finally:
        for watch in watches:
            if watch.poll() is None:
                watch.kill()
        stop(serve)
