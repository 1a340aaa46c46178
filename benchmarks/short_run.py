"""A user's first run, measured: 400 FSDD clips (5 speakers x 10 digits x takes 0-7; the group-aware split holds
one speaker out), resnet18 from scratch, 3 epochs, seed 42; prints train and validation accuracy and validation
macro-F1 per epoch for each recipe.

    .venv/bin/python benchmarks/short_run.py [--clip-seconds 5] \
        [--recipe no-augment='{"augment": false}'] [--recipe defaults='{}']

A recipe is a name and TrainConfig fields as JSON. FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolchain.audio.config import FeatureConfig  # noqa: E402
from toolchain.training.config import TrainConfig  # noqa: E402
from toolchain.training.train import train  # noqa: E402

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo")


def manifest(fsdd: Path, out: Path, takes: int = 8) -> Path:
    with (fsdd / "labels.csv").open(newline="") as f, out.open("w", newline="") as o:
        writer = csv.writer(o)
        writer.writerow(["filename", "label", "group"])
        for row in csv.DictReader(f):
            if row["speaker"] in SPEAKERS and int(row["take"]) < takes:
                writer.writerow([str(fsdd / row["filename"]), row["label"], row["speaker"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--recipe", action="append", default=[], help="NAME=JSON of TrainConfig fields")
    args = parser.parse_args()
    recipes = dict(r.split("=", 1) for r in args.recipe) or {"defaults": "{}"}
    with tempfile.TemporaryDirectory() as tmp:
        data = manifest(args.fsdd, Path(tmp) / "clips.csv")
        for name, fields in recipes.items():
            started, rows = time.time(), []
            config = TrainConfig(data=str(data), out=str(Path(tmp) / name), arch="resnet18", weights="none",
                                 epochs=args.epochs, seed=42, feature_config=FeatureConfig(clip_seconds=args.clip_seconds),
                                 **json.loads(fields))
            train(config, on_epoch=rows.append)
            print(f"{name}: " + "; ".join(f"epoch {r['epoch']} train {r['train_acc']:.3f} val {r['val_acc']:.3f} "
                                          f"macro-F1 {r['val_macro_f1']:.3f}" for r in rows)
                  + f" ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
