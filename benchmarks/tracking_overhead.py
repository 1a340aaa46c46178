"""What MLflow tracking costs a training run: the time of the tracker's calls per epoch against the epoch itself,
on a local SQLite store (the default) and on a real `mlflow server` this script starts.

    .venv/bin/python benchmarks/tracking_overhead.py                    # resnet18, 300 FSDD clips, 3 epochs
    .venv/bin/python benchmarks/tracking_overhead.py --arch resnet152 --clips 200 --epochs 2

Trains the same run three times (no tracking, a local store, the server; 1-s clips, `--weights none`) after a
one-epoch warm-up that fills the feature cache, so every run reads the same cache, and prints, per store: mean epoch seconds, the
tracker's seconds per epoch (its `epoch` calls: the metrics of that epoch), the one-off seconds at the start
(connect, experiment, run, parameters) and at the end (plots, reports, summary, final metrics), and the per-epoch
share. Target: <= 2 % of an epoch.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from toolchain.audio.config import FeatureConfig
from toolchain.registry.tracking import Tracker
from toolchain.training.config import TrainConfig
from toolchain.training.train import train

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


class TimedTracker(Tracker):
    """A `Tracker` that keeps its call times apart: start, each epoch, finish."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phases: dict[str, list[float]] = {"start": [], "epoch": [], "finish": []}

    def _timed(self, phase: str, call, *args) -> None:
        before = self.seconds
        call(*args)
        self.phases[phase].append(self.seconds - before)

    def start(self, *args) -> None:
        self._timed("start", super().start, *args)

    def epoch(self, *args) -> None:
        self._timed("epoch", super().epoch, *args)

    def finish(self, *args) -> None:
        self._timed("finish", super().finish, *args)


def manifest(root: Path, clips: int) -> Path:
    with (FSDD / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[::max(1, len(rows) // clips)][:clips]  # Every class, every speaker.
    path = root / "train.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "group"])
        writer.writerows([str(FSDD / r["filename"]), r["label"], r["speaker"]] for r in rows)
    return path


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit("mlflow server did not start in 240 s")


def cpu() -> str:
    """The CPU's model name and its VNNI/AVX2 kind, as the figures must name it."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    kind = "AVX-512 VNNI" if "avx512_vnni" in info else "AVX2" if "avx2" in info else "no AVX2"
    return f"{name} ({kind}, {os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="Also write the figures as JSON here.")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tracking-overhead-"))
    data = manifest(root, args.clips)
    base = TrainConfig(data=str(data), arch=args.arch, weights="none", epochs=args.epochs, patience=args.epochs,
                       cache_dir=str(root / "cache"), feature_config=FeatureConfig(clip_seconds=1.0), device="cpu")
    server, url = start_server(root)
    figures: dict[str, dict[str, float]] = {}
    train(TrainConfig(**{**base.__dict__, "out": str(root / "warm-up"), "epochs": 1}))
    try:
        for name, tracker in (("none", None), ("local", TimedTracker(f"sqlite:///{root / 'local' / 'mlflow.db'}")),
                              ("server", TimedTracker(url))):
            (root / "local").mkdir(exist_ok=True)
            config = TrainConfig(**{**base.__dict__, "out": str(root / f"run-{name}")})
            result = train(config, tracker=tracker)
            epochs = [row["seconds"] for row in result.history]
            row = {"epoch_s": statistics.fmean(epochs)}
            if tracker is not None:
                assert tracker.enabled, f"tracking to {name} turned itself off"
                per_epoch = statistics.fmean(tracker.phases["epoch"])
                row.update(tracker_epoch_s=per_epoch, start_s=sum(tracker.phases["start"]),
                           finish_s=sum(tracker.phases["finish"]), share=per_epoch / row["epoch_s"])
            figures[name] = row
            print(f"{name:>6}: epoch {row['epoch_s']:.2f} s" + (
                f"; tracking {row['tracker_epoch_s'] * 1000:.1f} ms/epoch ({row['share']:.3%} of an epoch), "
                f"start {row['start_s']:.2f} s, finish {row['finish_s']:.2f} s" if tracker else ""), flush=True)
    finally:
        server.kill()
    print(f"{args.arch}, {args.clips} clips of 1 s, {args.epochs} epochs, {cpu()}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "figures": figures},
                                       indent=2))


if __name__ == "__main__":
    main()
