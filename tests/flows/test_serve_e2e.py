"""Real end to end: `prefect server start` -> `toolchain serve` -> `prefect deployment run ... --watch`.

Everything is a real process on loopback with its own PREFECT_HOME; all of it is torn down (process groups
killed) even when an assertion fails. A refused run reads as one line (its state message, one log line). The inbox
is scanned as soon as serve starts, the backfill deployment runs, and the scheduled deployment keeps producing runs
from a second serve process after the first one stops.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

from support import copy_clips, published_csvs, stop, wait_until

from flows.recovery import NEVER_STARTED_SECONDS
from toolchain.scoring.ledger import Ledger

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 240  # Cold server start is ~20-26 s on an idle 2-core box; CI boxes are busier.


def test_server_serve_and_deployment_run(prefect_env, onnx_model, fsdd_dir, tmp_path):
    env, out = prefect_env, tmp_path / "out"
    on_demand = copy_clips(fsdd_dir, tmp_path / "requests" / "on-demand-day", 0, 3)
    copy_clips(fsdd_dir, tmp_path / "inbox" / "scheduled-day", 3, 2)
    log, second_log, second = tmp_path / "serve.log", tmp_path / "serve-2.log", None
    with log.open("w") as sink:
        serve = subprocess.Popen(
            [str(BIN / "toolchain"), "serve", "--model", str(onnx_model), "--output-dir", str(out), "--inbox",
             str(tmp_path / "inbox"), "--interval", "3600", "--limit", "2", "--workers", "1", "--threads", "1",
             "--allow-root", str(tmp_path / "requests")],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        prefect = str(BIN / "prefect")

        def deployed() -> bool:
            return subprocess.run([prefect, "deployment", "inspect", "score-folder/on-demand"], env=env,
                                  capture_output=True).returncode == 0

        wait_until(deployed, STARTUP_TIMEOUT_S, "the served deployments", serve, log)
        folder = tmp_path / "requests" / "on-demand-day"
        run = subprocess.run(
            [prefect, "deployment", "run", "score-folder/on-demand", "--param", f'folder="{folder}"', "--watch",
             "--watch-timeout", "400"],
            env=env, capture_output=True, text=True, timeout=450,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:] + log.read_text()[-3000:]
        assert "Completed" in run.stdout
        [csv_path] = published_csvs(out / "on-demand-day")
        with csv_path.open(newline="") as f:
            assert [r["file"] for r in csv.DictReader(f)] == on_demand

        # A run pointed outside the folders given to serve is refused and writes nothing.
        (tmp_path / "elsewhere").mkdir()
        copy_clips(fsdd_dir, tmp_path / "elsewhere" / "secret", 5, 1)
        refused = subprocess.run(
            [prefect, "deployment", "run", "score-folder/on-demand", "--param",
             f'folder="{tmp_path / "elsewhere" / "secret"}"', "--watch", "--watch-timeout", "300"],
            env=env, capture_output=True, text=True, timeout=350,
        )
        assert refused.returncode != 0 and "Failed" in refused.stdout, refused.stdout[-2000:]
        assert not (out / "secret").exists()
        # The operator's one line is the run's state message; its logs hold it once, and no traceback.
        [flow_run_id] = re.findall(r"UUID: ([0-9a-f-]{36})", refused.stdout)
        inspect = subprocess.run([prefect, "flow-run", "inspect", flow_run_id], env=env, capture_output=True,
                                 text=True, timeout=120)
        # Prefect pretty-prints the state and wraps its message at the terminal width, wherever the paths put it.
        assert "is outside the folders this server may touch" in " ".join(inspect.stdout.split()), \
            inspect.stdout[-3000:]
        logs = subprocess.run([prefect, "flow-run", "logs", flow_run_id], env=env, capture_output=True, text=True,
                              timeout=120).stdout
        said = [line for line in logs.splitlines()
                if "is outside the folders this server may touch" in line and "Finished in state" not in line]
        assert len(said) == 1, logs  # One line (the final state's own line repeats it).
        assert "Traceback" not in logs and "Traceback" not in log.read_text(), logs + log.read_text()[-3000:]

        # Nobody triggers the inbox scan, and its schedule's first run is an hour away: the scan serve starts at
        # once scores the folder that was there before it started.
        wait_until(lambda: bool(published_csvs(out / "scheduled-day")), STARTUP_TIMEOUT_S,
                   "the inbox scan at start", serve, log)
        wait_until(lambda: any(r.mode == "inbox" and r.state == "completed" for r in Ledger.in_dir(out).runs()),
                   120, "the inbox run's ledger record", serve, log)
        ledger = Ledger.in_dir(out)
        folders = {Path(r.folder).name: r for r in ledger.folder_runs()}
        assert folders["on-demand-day"].state == "completed" and folders["on-demand-day"].flow_run_id
        assert folders["scheduled-day"].state == "completed" and folders["scheduled-day"].flow_run_id
        assert len([r for r in ledger.folder_runs() if Path(r.folder).name == "scheduled-day"]) == 1
        # The backfill deployment runs with its defaults: the same model has scored the whole history already.
        backfill = subprocess.run([prefect, "deployment", "run", "score-inbox/backfill", "--watch",
                                   "--watch-timeout", "300"], env=env, capture_output=True, text=True, timeout=350)
        assert backfill.returncode == 0 and "Completed" in backfill.stdout, backfill.stdout[-2000:]
        assert [r.state for r in Ledger.in_dir(out).runs() if r.mode == "backfill"] == ["completed"]
        assert len([r for r in ledger.folder_runs() if Path(r.folder).name == "scheduled-day"]) == 1
        # A second serve process of the same deployments (the README's way to scale out); then the first stops.
        every_10_s = [("10" if arg == "3600" else arg) for arg in serve.args]
        with second_log.open("w") as sink:
            second = subprocess.Popen(every_10_s, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_until(lambda: "being served" in second_log.read_text(), STARTUP_TIMEOUT_S,
                   "the second serve process", second, second_log)
        stop(serve)
        # Stopping one serve process leaves the schedule to the others: the inbox scan is not paused...
        inspect = subprocess.run([prefect, "deployment", "inspect", "score-inbox/inbox-scan"], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert "'paused': False" in inspect.stdout, inspect.stdout[-3000:]
        # ...and the one still running keeps scanning: a folder dropped now is scored by its scheduled runs.
        late = copy_clips(fsdd_dir, tmp_path / "inbox" / "after-the-stop", 6, 2)
        # (A stop that falls mid-submission leaves that run Pending, holding the deployment's one slot, until the
        # automation crashes it after NEVER_STARTED_SECONDS: the wait allows for it.)
        wait_until(lambda: bool(published_csvs(out / "after-the-stop")), NEVER_STARTED_SECONDS + STARTUP_TIMEOUT_S,
                   "a scheduled scan by the serve process still running", second, second_log)
        [late_csv] = published_csvs(out / "after-the-stop")
        with late_csv.open(newline="") as f:
            assert [r["file"] for r in csv.DictReader(f)] == late
    finally:
        stop(serve)
        if second is not None:
            stop(second)
