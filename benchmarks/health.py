"""Health-report benchmark on FSDD: false-drift rate, power against a class-mix shift, the expected accuracy's
error, and what the report costs. Prints the figures and writes JSON.

    .venv/bin/python benchmarks/health.py --fsdd ../shared/data/fsdd --out artifacts/bench/health

A resnet18 (1-s clips, from scratch, the reference notebook's recipe) is trained on three FSDD speakers (takes 0-24; the
group-aware split holds one of them out as validation: the checkpoint's own health reference) and exported; the
three other speakers (1,500 clips, never seen in training) are scored through ONNX Runtime. Then:
  * product path: the exported model's reference (from its validation speaker) against each unseen speaker:
    expected vs true accuracy, and the verdict;
  * split-half: those 1,500 clips are split (stratified, seeded) into a 500-clip reference (built with the same
    `build_reference` training uses) and a 1,000-clip held-out pool of the same distribution; 400 bootstrap
    resamples at 200 and 1,000 files measure the false-drift rate, 400 resamples at 500 files whose class mix is
    shifted by 20 points (20 % of the files moved onto one class, the class rotating) measure the power, and the
    pool's expected accuracy is compared with its true accuracy;
  * cost: building the sketch of 10,000 one-window files and assessing it.
`--checkpoint` reuses a trained checkpoint (its exported model.onnx beside it is reused too).

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolchain.health.assess import HealthThresholds, assess  # noqa: E402
from toolchain.health.reference import Reference, build_reference, stored_reference  # noqa: E402
from toolchain.health.sketch import SketchBuilder  # noqa: E402

TRAIN_SPEAKERS = ("george", "jackson", "lucas")


def manifest(fsdd: Path, out: Path, speakers: tuple[str, ...], takes: range) -> Path:
    with (fsdd / "labels.csv").open(newline="") as f, out.open("w", newline="") as o:
        writer = csv.writer(o)
        writer.writerow(["filename", "label", "group"])
        for row in csv.DictReader(f):
            if row["speaker"] in speakers and int(row["take"]) in takes:
                writer.writerow([str(fsdd / row["filename"]), row["label"], row["speaker"]])
    return out


def trained_model(fsdd: Path, out: Path, checkpoint: Path | None) -> Path:
    from toolchain.audio.config import FeatureConfig
    from toolchain.export.certify import ExportOptions, export_and_certify
    from toolchain.training.config import TrainConfig
    from toolchain.training.train import train

    if checkpoint is None:
        out.mkdir(parents=True, exist_ok=True)
        config = TrainConfig(data=str(manifest(fsdd, out / "train.csv", TRAIN_SPEAKERS, range(25))),
                             out=str(out / "run"), arch="resnet18", weights="none", epochs=8, lr=1e-3,
                             cache_dir=str(out / "cache"), feature_config=FeatureConfig(clip_seconds=1.0),
                             augment=False, schedule="plateau", warmup_epochs=0, zero_init_residual=False,
                             select_on="accuracy", overwrite=True)
        checkpoint = train(config).best_checkpoint
    model = checkpoint.parent / "model.onnx"
    if not model.is_file():
        export_and_certify(checkpoint, ExportOptions(parity_samples=6))
    return model


def scored(model_path: Path, fsdd: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[str], object]:
    """Window probabilities per file, true class index per file, speaker per file, classes, model metadata."""
    from toolchain.scoring.engine import load_model, score_files
    from toolchain.scoring.engine_config import EngineConfig

    model = load_model(model_path, EngineConfig(batch_size=32))
    classes = list(model.classes)
    with (fsdd / "labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["speaker"] not in TRAIN_SPEAKERS]
    windows, labels, speakers = [], [], []
    for row, result in zip(rows, score_files(model, fsdd, [r["filename"] for r in rows], EngineConfig(batch_size=32))):
        if result.status == "ok":
            windows.append(np.array([w.probabilities for w in result.windows]))
            labels.append(classes.index(row["label"]))
            speakers.append(row["speaker"])
    return windows, np.array(labels), np.array(speakers), classes, model.metadata


def sketch_of(windows: list[np.ndarray], index: np.ndarray, temperature: float, classes: int):
    builder = SketchBuilder(classes, temperature)
    for i in index:
        builder.add(windows[i])
    return builder.build()


def accuracy(windows: list[np.ndarray], labels: np.ndarray, index: np.ndarray) -> float:
    return float(np.mean([windows[i].mean(axis=0).argmax() == labels[i] for i in index]))


def reference_of(windows: list[np.ndarray], labels: np.ndarray, index: np.ndarray) -> Reference:
    probs = np.concatenate([windows[i] for i in index])
    files = np.concatenate([[k] * len(windows[i]) for k, i in enumerate(index)])
    targets = np.concatenate([[labels[i]] * len(windows[i]) for i in index])
    return build_reference(probs, files, targets, source="split-half reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "health")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    thresholds = HealthThresholds()

    model = trained_model(args.fsdd, args.out, args.checkpoint)
    windows, labels, speakers, classes, metadata = scored(model, args.fsdd)
    c = len(classes)
    results: dict = {"model": str(model), "cpu": platform.processor() or platform.machine(), "files": len(labels)}

    own, _ = stored_reference(metadata.health_reference, c)
    product = {}
    for speaker in sorted(set(speakers)):
        index = np.flatnonzero(speakers == speaker)
        report = assess(sketch_of(windows, index, own.temperature, c), own, thresholds)
        product[speaker] = {"verdict": report.verdict, "expected_accuracy": report.figures["expected_accuracy"],
                            "true_accuracy": accuracy(windows, labels, index), "reason": report.reason}
    results["product_path"] = {"reference": own.source, "reference_files": own.files,
                               "reference_accuracy": own.accuracy, "speakers": product}

    order = rng.permutation(len(labels))
    ref_index = np.concatenate([order[labels[order] == k][:50] for k in range(c)])  # 50 per class: 500.
    pool = np.setdiff1d(np.arange(len(labels)), ref_index)
    reference = reference_of(windows, labels, ref_index)

    def verdicts(n: int, shift: bool = False) -> dict[str, float]:
        counts: dict[str, int] = {}
        for r in range(args.resamples):
            if shift:
                weights = np.full(len(pool), 0.8 / len(pool))
                target = pool[labels[pool] == r % c]
                weights[np.isin(pool, target)] += 0.2 / len(target)
                index = rng.choice(pool, n, p=weights / weights.sum())
            else:
                index = rng.choice(pool, n)
            verdict = assess(sketch_of(windows, index, reference.temperature, c), reference, thresholds).verdict
            counts[verdict] = counts.get(verdict, 0) + 1
        return {k: v / args.resamples for k, v in sorted(counts.items())}

    pool_report = assess(sketch_of(windows, pool, reference.temperature, c), reference, thresholds)
    results["split_half"] = {
        "reference_files": reference.files, "pool_files": len(pool), "temperature": reference.temperature,
        "false_drift_200": verdicts(200), "false_drift_1000": verdicts(1000), "shift20_500": verdicts(500, True),
        "pool_expected_accuracy": pool_report.figures["expected_accuracy"],
        "pool_true_accuracy": accuracy(windows, labels, pool),
    }

    big = rng.choice(len(labels), 10_000)
    start = time.perf_counter()
    report = assess(sketch_of(windows, big, reference.temperature, c), reference, thresholds)
    json.dumps(report.to_dict())
    results["cost_10000_files_s"] = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "health.json").write_text(json.dumps(results, indent=1))
    s = results["split_half"]
    print(f"model {model}; {len(labels)} clips of unseen speakers")
    print("product path (the model's own reference: its validation speaker):")
    for speaker, r in product.items():
        print(f"  {speaker:10s} verdict {r['verdict']:12s} expected {r['expected_accuracy']:.3f}  true "
              f"{r['true_accuracy']:.3f}  (error {r['expected_accuracy'] - r['true_accuracy']:+.3f})")
    print(f"split-half (reference {s['reference_files']} clips, pool {s['pool_files']}, T={s['temperature']:.2f}):")
    print(f"  false drift at 200 files:  {s['false_drift_200'].get('drift', 0):.1%}  {s['false_drift_200']}")
    print(f"  false drift at 1000 files: {s['false_drift_1000'].get('drift', 0):.1%}  {s['false_drift_1000']}")
    print(f"  20-point class-mix shift at 500 files flagged drift: {s['shift20_500'].get('drift', 0):.1%}")
    print(f"  expected accuracy {s['pool_expected_accuracy']:.3f} vs true {s['pool_true_accuracy']:.3f} "
          f"(error {s['pool_expected_accuracy'] - s['pool_true_accuracy']:+.3f})")
    print(f"cost: sketch + assess of 10,000 files {results['cost_10000_files_s']:.3f} s")


if __name__ == "__main__":
    main()
