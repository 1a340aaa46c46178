"""Cross-validation of training recipes: group-aware k-fold over a manifest, each fold's held-out groups scored as
the run's --test set; prints mean and spread of test accuracy and macro-F1 per recipe and writes JSON.

    .venv/bin/python benchmarks/cv.py --data manifest.csv --folds 3 --arch resnet18 --weights none --epochs 20 \
        --recipe notebook='{"lr": 1e-3, "augment": false, "schedule": "plateau", "warmup_epochs": 0,
                            "zero_init_residual": false, "select_on": "accuracy"}' --recipe defaults='{}'

The manifest is `filename,label,group` (the group, e.g. the speaker, never spans two folds). `--fsdd DIR --takes
0-7` writes one from FSDD (group = speaker). A recipe is a name and TrainConfig fields as JSON, laid over the
common flags. A finished fold leaves WORK/<recipe>-fold<i>/cv-fold.json and is reused by a later run with the same
recipe, flags and split, so recipes can be added one at a time.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolchain.audio.config import FeatureConfig  # noqa: E402
from toolchain.training.config import TrainConfig  # noqa: E402
from toolchain.training.train import train  # noqa: E402


def fsdd_manifest(fsdd: Path, takes: range, out: Path) -> Path:
    with (fsdd / "labels.csv").open(newline="") as f, out.open("w", newline="") as o:
        writer = csv.writer(o)
        writer.writerow(["filename", "label", "group"])
        for row in csv.DictReader(f):
            if int(row["take"]) in takes:
                writer.writerow([str(fsdd / row["filename"]), row["label"], row["speaker"]])
    return out


def folds(rows: list[dict], k: int) -> list[set[str]]:
    """Groups dealt into k folds, largest first onto the smallest fold (balanced, deterministic)."""
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["group"]] = sizes.get(r["group"], 0) + 1
    buckets: list[set[str]] = [set() for _ in range(k)]
    load = [0] * k
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        i = load.index(min(load))
        buckets[i].add(group)
        load[i] += sizes[group]
    return buckets


def mean_curve(curves: list[list[float]]) -> list[float]:
    """Per epoch, the mean over the curves that reach it."""
    longest = max((len(c) for c in curves), default=0)
    return [statistics.mean(c[e] for c in curves if len(c) > e) for e in range(longest)]


def write_rows(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Manifest filename,label,group.")
    parser.add_argument("--fsdd", type=Path, help="Build the manifest from this FSDD folder instead.")
    parser.add_argument("--takes", default="0-49", help="FSDD takes, e.g. 0-7.")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--recipe", action="append", required=True, help="name=JSON of TrainConfig fields.")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--work", type=Path, default=Path("artifacts/cv"))
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: WORK/cv.json).")
    parser.add_argument("--fresh", action="store_true",
                        help="Retrain every fold (default: a fold finished with the same recipe and flags is reused).")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.fsdd:
        lo, _, hi = args.takes.partition("-")
        args.data = fsdd_manifest(args.fsdd, range(int(lo), int(hi or lo) + 1), args.work / "manifest.csv")
    if args.data is None:
        sys.exit("pass --data MANIFEST or --fsdd DIR")
    with args.data.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # The fold manifests live elsewhere: paths relative to this manifest's folder made absolute.
        row["filename"] = str((args.data.parent / row["filename"]).resolve())
    recipes = {}
    for item in args.recipe:
        name, _, overrides = item.partition("=")
        recipes[name] = json.loads(overrides or "{}")
    groups = folds(rows, args.folds)
    results: dict[str, list[dict]] = {name: [] for name in recipes}
    for i, held in enumerate(groups):
        train_csv = write_rows([r for r in rows if r["group"] not in held], args.work / f"fold{i}-train.csv")
        test_csv = write_rows([r for r in rows if r["group"] in held], args.work / f"fold{i}-test.csv")
        for name, overrides in recipes.items():
            run_dir = args.work / f"{name}-fold{i}"
            fields = {"data": str(train_csv), "test": str(test_csv), "out": str(run_dir), "arch": args.arch,
                      "weights": args.weights, "epochs": args.epochs, "overwrite": True,
                      "cache_dir": str(args.work / "cache"), **overrides}
            key = json.dumps({**fields, "clip_seconds": args.clip_seconds, "held_out": sorted(held)}, sort_keys=True)
            done = run_dir / "cv-fold.json"
            finished = json.loads(done.read_text()) if not args.fresh and done.is_file() else {}
            if finished.get("key") == key:  # Same recipe, flags and split: reuse the finished fold.
                results[name].append(finished["fold"])
                print(f"fold {i} {name}: reused {done}", flush=True)
                continue
            config = TrainConfig(**fields, feature_config=FeatureConfig(clip_seconds=args.clip_seconds))
            started = time.perf_counter()
            result = train(config)
            summary = json.loads((result.run_dir / "summary.json").read_text())
            seconds = [h["seconds"] for h in result.history]
            fold = {"fold": i, "held_out": sorted(held), "test_acc": summary["test_acc"],
                    "test_macro_f1": summary["test_macro_f1"], "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run, "seconds_per_epoch": statistics.mean(seconds),
                    "val_acc_curve": [h["val_acc"] for h in result.history],
                    "val_macro_f1_curve": [h["val_macro_f1"] for h in result.history],
                    "wall_seconds": time.perf_counter() - started}
            results[name].append(fold)
            done.write_text(json.dumps({"key": key, "fold": fold}))
            print(f"fold {i} ({', '.join(sorted(held))}) {name}: test acc {fold['test_acc']:.3f} macro-F1 "
                  f"{fold['test_macro_f1']:.3f}, best epoch {fold['best_epoch']}/{fold['epochs_run']}, "
                  f"{fold['seconds_per_epoch']:.1f} s/epoch", flush=True)
    table = {}
    print(f"\n{args.folds}-fold group CV, {args.arch} --weights {args.weights}, {args.epochs} epochs max, "
          f"{args.clip_seconds:g}-s clips, {len(rows)} clips")
    for name, per_fold in results.items():
        acc = [f["test_acc"] for f in per_fold]
        f1 = [f["test_macro_f1"] for f in per_fold]
        table[name] = {"acc_mean": statistics.mean(acc), "acc_sd": statistics.pstdev(acc),
                       "macro_f1_mean": statistics.mean(f1), "macro_f1_sd": statistics.pstdev(f1),
                       "best_epochs": [f["best_epoch"] for f in per_fold],
                       "seconds_per_epoch": statistics.mean(f["seconds_per_epoch"] for f in per_fold),
                       "val_macro_f1_by_epoch": mean_curve([f["val_macro_f1_curve"] for f in per_fold]),
                       "val_acc_by_epoch": mean_curve([f["val_acc_curve"] for f in per_fold])}
        t = table[name]
        print(f"{name:>12}: accuracy {t['acc_mean']:.3f} +- {t['acc_sd']:.3f}, macro-F1 {t['macro_f1_mean']:.3f} "
              f"+- {t['macro_f1_sd']:.3f}, best epochs {t['best_epochs']}, {t['seconds_per_epoch']:.1f} s/epoch")
    print("\nvalidation macro-F1 by epoch, mean over the folds that ran it (early stop ends a fold's curve)")
    for name, t in table.items():
        print(f"{name:>12}: " + " ".join(f"{v:.2f}" for v in t["val_macro_f1_by_epoch"]))
    out = args.out or args.work / "cv.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "recipes": recipes,
                               "folds": results, "table": table}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
