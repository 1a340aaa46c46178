"""Arrival run: N folder drops into a watched inbox, with a watcher restart and a kill -9 of serve in the middle.

    .venv/bin/python benchmarks/arrival_run.py --model artifacts/demo/run/model.onnx --drops 200

Starts a real `prefect server`, `toolchain serve --inbox` and `toolchain watch` on loopback (own PREFECT_HOME), then
drops folders of 1-3 FSDD clips: a third written at once with a `_READY` marker, a third written at once without,
a third written slowly (one file every 0.5-2 s). At a third of the drops the watcher is restarted; at two thirds
serve is killed with SIGKILL (process group) and started again. When every drop is done it waits until the
inbox is quiet and reports, from the predictions CSVs: files lost (never got a row), files scored twice, and the
latency from a folder's completion (its last file, or `_READY`) to the start of the run that scored it (ledger),
p50/p95/max, for folders with and without the marker. Prints the figures and writes them as JSON (--out).
Not part of the test suite: 200 drops take ~15-25 minutes on 2 cores.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from toolchain.io import write_json
from toolchain.scoring.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("TOOLCHAIN_FSDD", REPO.parent / "shared" / "data" / "fsdd"))
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    sys.exit(f"error: timed out waiting for {what}")


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def _rows(out: Path) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for csv_path in out.glob("*/predictions_*.csv"):
        with csv_path.open(newline="") as f:
            rows.setdefault(csv_path.parent.name, []).extend(r["file"] for r in csv.DictReader(f))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "arrival_run")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "arrival_run.json")
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    inbox, out, logs = args.work / "inbox", args.work / "out", args.work / "logs"
    for folder in (inbox, out, logs):
        folder.mkdir(parents=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(args.work / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="1")
    common = ["--model", str(args.model.resolve()), "--output-dir", str(out), "--inbox", str(inbox),
              "--settle-seconds", str(args.settle_seconds)]
    server = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                    logs / "server.log")

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=2):
                return True
        except OSError:
            return False

    serve_cmd = [str(BIN / "toolchain"), "serve", *common, "--interval", "86400", "--workers", "1"]
    watch_cmd = [str(BIN / "toolchain"), "watch", *common, "--reconcile-seconds", "30"]
    serve = watch = None
    rng = random.Random(0)
    clips = sorted((FSDD / "recordings").glob("*.wav"))
    completed: dict[str, tuple[float, bool]] = {}  # folder -> (completion time, had _READY)
    expected: dict[str, list[str]] = {}
    try:
        _wait(healthy, 240, "prefect server")
        serve = _start(serve_cmd, env, logs / "serve.log")
        _wait(lambda: subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "score-inbox/on-arrival"],
                                     env=env, capture_output=True).returncode == 0, 240, "the deployments")
        watch = _start(watch_cmd, env, logs / "watch.log")
        for i in range(args.drops):
            if i == args.drops // 3:
                _kill(watch)
                watch = _start(watch_cmd, env, logs / "watch.log")
                print(f"drop {i}: watcher restarted", flush=True)
            if i == 2 * args.drops // 3:
                _kill(serve, signal.SIGKILL)
                serve = _start(serve_cmd, env, logs / "serve.log")
                print(f"drop {i}: serve killed with SIGKILL and restarted", flush=True)
            name, kind = f"drop-{i:04d}", i % 3
            files = [clips[rng.randrange(len(clips))] for _ in range(rng.randint(1, 3))]
            folder = inbox / name
            folder.mkdir()
            expected[name] = sorted({f.name for f in files})
            for f in files:
                shutil.copy(f, folder / f.name)
                if kind == 2:
                    time.sleep(rng.uniform(0.5, 2.0))
            if kind == 0:
                (folder / "_READY").touch()
            completed[name] = (time.time(), kind == 0)
            time.sleep(rng.uniform(0.0, 1.0))
        print(f"{args.drops} drops written; waiting for the inbox to be scored", flush=True)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            rows = _rows(out)
            if all(set(rows.get(n, [])) >= set(files) for n, files in expected.items()):
                break
            time.sleep(5)
        time.sleep(3 * args.settle_seconds + 30)  # Let any duplicate show itself.
    finally:
        for proc in (watch, serve, server):
            if proc is not None:
                _kill(proc)
    rows = _rows(out)
    lost = sum(len(set(files) - set(rows.get(n, []))) for n, files in expected.items())
    twice = sum(sum(1 for f in set(found) if found.count(f) > 1) for found in rows.values())
    starts: dict[str, float] = {}
    for r in Ledger.in_dir(out).folder_runs():
        name = Path(r.folder).name
        started = dt.datetime.fromisoformat(r.started_at).timestamp()
        if r.state == "completed" and r.files_ok + r.files_error and name in completed:
            starts[name] = min(starts.get(name, started), started)
    latency: dict[str, list[float]] = {"ready_marker": [], "settle": []}
    folders = {}
    for name, (done, marked) in completed.items():
        if name in starts:
            latency["ready_marker" if marked else "settle"].append(max(0.0, starts[name] - done))
        folders[name] = {"completed_at": done, "run_started_at": starts.get(name), "ready_marker": marked}

    def stats(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50_s": float(np.percentile(values, 50)), "p95_s": float(np.percentile(values, 95)),
                "max_s": max(values)} if values else {"n": 0}

    report = {"drops": args.drops, "files": sum(map(len, expected.values())), "files_lost": lost,
              "files_scored_twice": twice, "settle_seconds": args.settle_seconds,
              "latency_completion_to_run_start": {k: stats(v) for k, v in latency.items()},
              "latency_all": stats(latency["ready_marker"] + latency["settle"]),
              "note": "ledger start times have 1-s resolution; serve was killed with SIGKILL once, the watcher "
                      "restarted once",
              "folders": folders}
    write_json(report, args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "folders"}, indent=2))


if __name__ == "__main__":
    main()
