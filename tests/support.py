"""Helpers shared by test modules (plain functions and constants, no fixtures: those live in conftest.py files).

Real audio comes from the Free Spoken Digit Dataset in ../shared/data/fsdd: Jakobovski/free-spoken-digit-dataset,
CC BY-SA 4.0 (attribution kept as its license requires).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

HOOKS = Path(__file__).resolve().parent / "hooks"  # sitecustomize.py: test-only hooks for subprocesses.


def held_env(rows: int, signal_file: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a subprocess whose scoring parks once `rows` prediction rows are on
    disk: it creates `signal_file` and waits until the file is removed (tests/hooks/sitecustomize.py)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), *filter(None, [env.get("PYTHONPATH")])])
    env["TOOLCHAIN_TEST_HOLD_AFTER_ROWS"] = f"{rows}:{signal_file}"
    return env


def after_change_time_of(path: Path) -> None:
    """Return once the clock has moved past `path`'s change time, so the next write is strictly newer: file times
    tick in steps of a few milliseconds (a clock granularity, not a wait for another process)."""
    while time.time() <= path.stat().st_ctime + 0.01:
        time.sleep(0.005)


def copy_clips(fsdd_dir: Path, dest: Path, start: int, n: int) -> list[str]:
    """Copy FSDD recordings [start, start + n) (sorted by name) into a new folder `dest`; returns their names."""
    dest.mkdir(parents=True)
    names = sorted(p.name for p in (fsdd_dir / "recordings").glob("*.wav"))[start:start + n]
    for name in names:
        shutil.copy(fsdd_dir / "recordings" / name, dest / name)
    return names


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """A CSV's rows as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fsdd_rows(fsdd: Path) -> list[dict[str, str]]:
    with (fsdd / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def write_fsdd_manifest(
    fsdd: Path, out_csv: Path, *, speakers: set[str] | None = None, takes: range | None = None
) -> Path:
    """A CSV manifest (absolute filename,label,group=speaker) over a subset of FSDD."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "group"])
        for row in fsdd_rows(fsdd):
            if speakers is not None and row["speaker"] not in speakers:
                continue
            if takes is not None and int(row["take"]) not in takes:
                continue
            writer.writerow([str(fsdd / row["filename"]), row["label"], row["speaker"]])
    return out_csv


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


# The trained_checkpoint fixture's data: every FSDD speaker, a few takes each; the split holds one speaker out.
TRAINED_TAKES = range(8)


TRAINED_TEST_TAKE = 49


# FSDD clips are 0.2-2.3 s (99 % under 1 s): 1-s clips keep the speech and make images 5x narrower than the 5-s
# default (128 x 44 instead of 128 x 216), so a from-scratch network learns in a few CPU epochs.
TRAINED_FEATURES = {"clip_seconds": 1.0}


def make_bad_input_folder(root: Path, fsdd_dir: Path) -> dict[str, str]:
    """Every kind of bad input, plus real clips in awkward places. Returns {relative path: expected status}."""
    root.mkdir(parents=True)
    real = fsdd_dir / "recordings" / "3_theo_30.wav"
    y, sr = sf.read(real, dtype="float32")
    (root / "empty.wav").write_bytes(b"")
    (root / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    sf.write(root / "header_only.wav", np.zeros(0, dtype=np.float32), 8000)
    sf.write(root / "full.wav", y, sr)
    data = (root / "full.wav").read_bytes()
    (root / "truncated.wav").write_bytes(data[: len(data) // 2])
    (root / "full.wav").unlink()
    sf.write(root / "silent.wav", np.zeros(8000, dtype=np.float32), 8000)
    t = np.arange(600 * 8000) / 8000  # 10 minutes at 8 kHz.
    sf.write(root / "very_long.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    (root / "not_audio.wav").write_text("this is a text file with an audio extension\n")
    (root / "notes.txt").write_text("ignored: not an audio extension\n")
    shutil.copy(real, root / "UPPER.WAV")
    (root / "nested" / "deeper").mkdir(parents=True)
    sf.write(root / "nested" / "deeper" / "clip.flac", y, sr)
    return {
        "UPPER.WAV": "ok", "empty.wav": "error", "garbage.wav": "error", "header_only.wav": "error",
        "nested/deeper/clip.flac": "ok", "not_audio.wav": "error", "silent.wav": "ok", "truncated.wav": "error",
        "very_long.wav": "ok",
    }


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (serve pauses its schedule on the way out), SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (kill -9, as a crash or the OOM killer would) and reap it; nothing if it ended."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def fsdd_files(fsdd: Path, label: str, n: int, speaker: str = "george") -> list[Path]:
    rows = [r for r in fsdd_rows(fsdd) if r["label"] == label and r["speaker"] == speaker]
    return [fsdd / r["filename"] for r in rows[:n]]


def published_csvs(out_folder: Path) -> list[Path]:
    """The complete `predictions_<UTC>.csv` files scoring published in an output folder, sorted."""
    return sorted(Path(out_folder).glob("predictions_*.csv"))


def assert_user_error(result, *fragments: str) -> None:
    """A CLI user error as `typer.testing.CliRunner` sees it: exit 2 through `SystemExit` (an uncaught exception
    would be `result.exception` itself), exactly one `error: ` line, naming every fragment."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def certified_bundle(model: Path, dest: Path) -> Path:
    """`model` copied into `dest` with a parity.json that says it passed, as `toolchain export-onnx` leaves a
    certified model (for tiny test models that have no checkpoint to run the gate against); returns the copy."""
    dest.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copy2(model, dest / "model.onnx"))
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    (dest / "parity.json").write_text(json.dumps({"status": "passed", "model_sha256": sha}))
    return copy
