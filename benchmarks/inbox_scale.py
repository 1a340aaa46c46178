"""Inbox scans at scale: what a scan costs over an inbox that holds many already-scored files, what a model change
rescores, and a backfill resumed after kill -9.

    .venv/bin/python benchmarks/inbox_scale.py --files 100000          # scans only: ~2 minutes on 2 cores
    .venv/bin/python benchmarks/inbox_scale.py --files 1000000         # ~15 minutes, ~4 GB of inodes in /tmp
    .venv/bin/python benchmarks/inbox_scale.py --files 1000 --backfill-folders 1000 \\
        --model artifacts/demo/run/model.onnx                           # + a real backfill of 1,000 folders
    ... --ledger-url postgresql://user:pw@host/db                       # the same on a PostgreSQL ledger

Scans: builds an inbox of `--files` small `.wav` files in folders of `--per-folder` (only their names, sizes and
times matter to a scan), records every file as decided by model A in the ledger (what completed scoring runs
leave), waits until the folders are older than the listing's racy window, then times the first scan (it looks
into every folder and records their listings), three no-op scans (median; each also reconciles the default
number of folders file by file), a scan by model B after the model change (folders it would score: must be 0), and
a scan after a new folder arrives (must be exactly that folder).

Backfill (`--backfill-folders N`, needs `--model`): N folders of one FSDD clip each, scored by the model in an inbox
scan (as `score-inbox` runs do, in this process); then the same folders backfilled by a retrained copy (another
sha256) with `toolchain backfill` killed with SIGKILL once half the folders are done, and run again. Checks that every file has exactly one row
from each model. Prints every figure and writes them as JSON (--out).

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from toolchain.cpu import cpu_isa
from toolchain.io import file_sha256, write_json
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import stamp_files
from toolchain.scoring.folder import run_folder
from toolchain.scoring.inbox import DEFAULT_RECONCILE_FILES, folders_with_new_files, scan_inbox
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.ledger_db import LEDGER_URL_ENV, describe
from toolchain.scoring.listings import RACY_SECONDS
from toolchain.scoring.steps import LocalSteps

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("TOOLCHAIN_FSDD", REPO.parent / "shared" / "data" / "fsdd"))
A, B = "a" * 64, "b" * 64


def build_inbox(inbox: Path, files: int, per_folder: int) -> list[Path]:
    folders = []
    for i in range((files + per_folder - 1) // per_folder):
        folder = inbox / f"site-{i:05d}"
        folder.mkdir(parents=True)
        for j in range(min(per_folder, files - i * per_folder)):
            (folder / f"rec-{j:05d}.wav").write_bytes(b"RIFF")
        folders.append(folder)
    return folders


def record_scored(ledger: Ledger, folders: list[Path], sha: str) -> None:
    """What completed scoring runs of every folder by model `sha` leave in the ledger."""
    ledger.start_run("history", mode="inbox", target=str(folders[0].parent), model_path="/a.onnx", model_sha256=sha)
    for folder in folders:
        fid = ledger.start_folder("history", str(folder), f"/out/{folder.name}", sha)
        ledger.record_files(fid, stamp_files(folder, sorted(p.name for p in folder.iterdir())))
        ledger.finish_folder(fid, "completed")
    ledger.finish_run("history", "completed")


def timed_scan(inbox: Path, ledger: Ledger, sha: str) -> tuple[float, list[Path]]:
    start = time.perf_counter()
    found = folders_with_new_files(inbox, ledger, sha, settle_seconds=0)
    return time.perf_counter() - start, found


def scans(work: Path, files: int, per_folder: int) -> dict:
    inbox, ledger = work / "inbox", Ledger.in_dir(work / "out")
    t0 = time.perf_counter()
    folders = build_inbox(inbox, files, per_folder)
    record_scored(ledger, folders, A)
    print(f"built {files} files in {len(folders)} folders and their ledger rows in {time.perf_counter() - t0:.0f} s")
    time.sleep(RACY_SECONDS + 0.5)  # Folders this fresh are looked into on every scan (listing's racy window).
    first, found = timed_scan(inbox, ledger, A)
    assert not found, found
    noop = [timed_scan(inbox, ledger, A)[0] for _ in range(3)]
    changed, rescored = timed_scan(inbox, ledger, B)
    (inbox / "site-new").mkdir()
    for j in range(10):
        (inbox / "site-new" / f"rec-{j}.wav").write_bytes(b"RIFF")
    arrival, arrived = timed_scan(inbox, ledger, B)
    figures = {"files": files, "folders": len(folders), "per_folder": per_folder,
               "reconcile_files": DEFAULT_RECONCILE_FILES, "first_scan_s": round(first, 3),
               "noop_scan_s": [round(s, 3) for s in noop], "noop_scan_median_s": round(statistics.median(noop), 3),
               "after_model_change_scan_s": round(changed, 3), "folders_rescored_after_model_change": len(rescored),
               "arrival_scan_s": round(arrival, 3), "arrived_folders_found": [p.name for p in arrived]}
    print(f"first scan (looks into every folder, records listings): {first:.2f} s")
    print(f"no-op scan, median of 3: {statistics.median(noop):.3f} s ({', '.join(f'{s:.3f}' for s in noop)})")
    print(f"after the model changed: {len(rescored)} folder(s) to rescore ({changed:.3f} s)")
    print(f"after a folder arrived: {[p.name for p in arrived]} ({arrival:.3f} s)")
    return figures


def _rows(out: Path) -> dict[str, Counter]:
    rows: dict[str, Counter] = {}
    for path in out.glob("*/predictions_*.csv"):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["model_sha256"], Counter())[(path.parent.name, row["file"])] += 1
    return rows


def backfill(work: Path, model: Path, n: int) -> dict:
    inbox, out = work / "bf-inbox", work / "bf-out"
    clips = sorted((FSDD / "recordings").glob("*.wav"))
    for i in range(n):
        (inbox / f"day-{i:04d}").mkdir(parents=True)
        shutil.copy(clips[i % len(clips)], inbox / f"day-{i:04d}" / "clip.wav")
    successor = work / "retrained" / "model.onnx"
    successor.parent.mkdir()
    import onnx

    proto = onnx.load(model)
    proto.doc_string = (proto.doc_string or "") + " retrained"
    onnx.save(proto, successor)
    toolchain = str(Path(sys.executable).with_name("toolchain"))

    def command(m: Path) -> list[str]:
        return [toolchain, "backfill", "--model", str(m), "--inbox", str(inbox), "--output-dir", str(out),
                "--settle-seconds", "0", "--workers", "0", "--threads", "1"]

    t0 = time.perf_counter()
    config = EngineConfig(decode_workers=0, intra_op_threads=1)
    steps = LocalSteps(model, config)
    scan_inbox(model, inbox, out, steps, lambda sub, parent: run_folder(
        model, sub, out, steps, skip_scored=True, parent_run_id=parent, settle_seconds=0), settle_seconds=0)
    first_s = time.perf_counter() - t0
    print(f"model A scored {n} folders (an inbox scan) in {first_s:.0f} s ({n / first_s:.1f} folders/s)")
    ledger = Ledger.in_dir(out)
    proc = subprocess.Popen(command(successor), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    sha = file_sha256(successor)
    while proc.poll() is None and sum(r.model_sha256 == sha and r.state == "completed"
                                      for r in ledger.folder_runs()) < n // 2:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before_kill = sum(r.model_sha256 == sha and r.state == "completed" for r in ledger.folder_runs())
    t0 = time.perf_counter()
    subprocess.run(command(successor), check=True, capture_output=True)
    resume_s = time.perf_counter() - t0
    rows = _rows(out)
    one_each = {m: (len(rows.get(file_sha256(m), {})) == n and set(rows[file_sha256(m)].values()) == {1})
                for m in (model, successor)}
    print(f"backfill by model B killed (SIGKILL) after {done_before_kill} folders; the rerun finished the rest in "
          f"{resume_s:.0f} s; every file exactly one row from A: {one_each[model]}, from B: {one_each[successor]}")
    return {"folders": n, "first_model_s": round(first_s, 1), "killed_after_folders": done_before_kill,
            "resume_s": round(resume_s, 1), "one_row_per_file_model_a": one_each[model],
            "one_row_per_file_model_b": one_each[successor]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="Scored files in the inbox.")
    parser.add_argument("--per-folder", type=int, default=1000, help="Files per subfolder.")
    parser.add_argument("--backfill-folders", type=int, default=0, help="Also backfill this many folders.")
    parser.add_argument("--model", type=Path, help="The .onnx the backfill scores with (e.g. make demo's).")
    parser.add_argument("--ledger-url", help="A PostgreSQL ledger (an empty database) instead of SQLite.")
    parser.add_argument("--work", type=Path, help="Where the inbox is built (default: a temp dir, removed).")
    parser.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/inbox_scale.json"))
    args = parser.parse_args()
    if args.backfill_folders and not (args.model and args.model.is_file()):
        parser.error("--backfill-folders needs --model PATH.onnx (make demo writes artifacts/demo/run/model.onnx)")
    if args.ledger_url:
        os.environ[LEDGER_URL_ENV] = args.ledger_url
    work = args.work or Path(tempfile.mkdtemp(prefix="inbox-scale-"))
    machine = {"cpu": platform.processor() or platform.machine(), "isa": cpu_isa(), "cores": os.cpu_count()}
    print(f"machine: {machine}; ledger: {describe(args.ledger_url) if args.ledger_url else 'SQLite'}")
    try:
        figures = {"machine": machine, "ledger": "postgresql" if args.ledger_url else "sqlite",
                   "scans": scans(work, args.files, args.per_folder)}
        if args.backfill_folders:
            figures["backfill"] = backfill(work, args.model, args.backfill_folders)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(figures, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
