"""Long-file run: one multi-hour recording scored whole by `toolchain score` on the grid (`--placement grid`:
every second scored), in a child process whose process tree's peak RSS is sampled; prints duration, windows,
coverage of the non-silent audio, windows/s and the model-only windows/s of the same model at the same batch size,
as JSON.

The recording (written in blocks, never whole in memory) is 44.1 kHz stereo 16-bit: a quiet noise floor with FSDD
digits every 7 s, and 1 s of digital silence at each end (so the non-silent duration is known: total - 2 s).

    .venv/bin/python benchmarks/long_file.py --model artifacts/demo/run/model.onnx --hours 2

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
RATE = 44_100


def write_recording(path: Path, seconds: float) -> float:
    """The test recording, block by block; returns its non-silent duration."""
    import librosa

    clips = [librosa.load(p, sr=RATE)[0] for p in sorted(FSDD.glob("*_theo_1*.wav"))[:10]]
    clips = [0.5 * c / np.abs(c).max() for c in clips]  # Speech peaks at -6 dBFS over a -54 dBFS noise floor.
    rng = np.random.default_rng(0)
    total = int(seconds * RATE)
    block = 60 * RATE
    with soundfile.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            y = rng.normal(0, 2e-3, (n, 2)).astype(np.float32)
            for at in range((start // (7 * RATE)) * 7 * RATE, start + n, 7 * RATE):
                clip = clips[(at // (7 * RATE)) % len(clips)]
                lo, hi = max(at, start), min(at + clip.size, start + n)
                if hi > lo:
                    y[lo - start:hi - start] += clip[lo - at:hi - at, None]
            y[:max(0, RATE - start)] = 0.0  # The first second is silence...
            tail = total - RATE - start  # ...and the last.
            if tail < n:
                y[max(0, tail):] = 0.0
            f.write(y)
    return (total - 2 * RATE) / RATE


def model_only_windows_per_second(model: Path, batch: int) -> float:
    """ORT fp32 on ready features at `batch`, all cores: the rate the engine can at best reach."""
    sys.path.insert(0, str(ROOT))
    from toolchain.inference.contract import read_metadata
    from toolchain.inference.providers import CPU_EP
    from toolchain.inference.session import open_session, run_logits

    shape = read_metadata(model).feature_config.input_shape
    session = open_session(model, CPU_EP, threads=psutil.cpu_count())
    features = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    run_logits(session, features)
    rounds = 0
    started = time.perf_counter()
    while time.perf_counter() - started < 20 or rounds < 5:
        run_logits(session, features)
        rounds += 1
    return rounds * batch / (time.perf_counter() - started)


def peak_tree_rss(process: subprocess.Popen, peak: list[int]) -> None:
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="Folder for the recording and outputs.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="long_file_"))
    folder = work / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    recording = folder / "long.wav"
    if recording.is_file() and soundfile.info(str(recording)).frames == int(args.hours * 3600 * RATE):
        non_silent = args.hours * 3600 - 2  # Written by an earlier run with the same --work and --hours.
    else:
        print(f"writing {args.hours:g} h at {RATE} Hz stereo to {recording}", file=sys.stderr)
        non_silent = write_recording(recording, args.hours * 3600)
    print("measuring the model-only rate", file=sys.stderr)
    model_only = model_only_windows_per_second(args.model, args.batch_size)

    peak = [0]
    shutil.rmtree(work / "out", ignore_errors=True)
    command = [str(Path(sys.executable).with_name("toolchain")), "score", "--model", str(args.model), "--input",
               str(folder), "--out", str(work / "out"), "--batch-size", str(args.batch_size),
               "--placement", "grid"]  # Every second of the recording scored: the pipeline's full load.
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    sampler = threading.Thread(target=peak_tree_rss, args=(process, peak), daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"toolchain score failed ({process.returncode}): {stderr[-2000:]}")
    predictions = Path(stdout.strip().splitlines()[-1])
    [row] = list(csv.DictReader(predictions.open(newline="")))
    detections = predictions.with_name(predictions.name.replace("predictions_", "detections_"))
    spans = sorted((float(r["start_s"]), float(r["end_s"])) for r in csv.DictReader(detections.open(newline="")))
    covered, reach = 0.0, 0.0
    for start, end in spans:  # Union of the windows.
        covered += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    seconds = float(next(line.split(" in ")[1].split(" s")[0] for line in stderr.splitlines() if " in " in line
                         and "files/s" in line))
    windows = int(row["windows"])
    print(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": psutil.cpu_count()},
        "recording": {"hours": args.hours, "sample_rate": RATE, "channels": 2, "bytes": recording.stat().st_size},
        "duration_s": float(row["duration_s"]), "scored_s": float(row["scored_s"]), "windows": windows,
        "coverage_of_non_silent": covered / non_silent,
        "peak_rss_process_tree_mb": peak[0] / 2**20,
        "scoring_seconds": seconds, "wall_seconds": wall,
        "windows_per_second": windows / seconds, "model_only_windows_per_second": model_only,
        "engine_over_model_only": windows / seconds / model_only, "batch_size": args.batch_size,
    }, indent=2))


if __name__ == "__main__":
    main()
