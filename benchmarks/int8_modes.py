"""Which INT8 recipe keeps >= 99 % agreement with fp32 AND runs >= 1.8x faster on this CPU? One sweep, one command.

    python benchmarks/int8_modes.py --model R18/model.onnx --checkpoint R18/resnet_18_model.pth \
        --eval-data HELDOUT.csv --eval-clips 2520 --calibration-seeds 3 --layer-sweep \
        --speed-model R152/model.onnx --out /tmp/int8_sweep

Accuracy: `--model` (the fp32 ONNX of a model that has learned real clips) is quantized per recipe, calibrated on
clips from its checkpoint's training data (as `export-onnx --int8` does), and compared with fp32 on `--eval-clips`
clips drawn reproducibly from `--eval-data` (held out from training): top-1 agreement, flips, accuracy, mean
|Δprob|, logit error relative to the logit vector. A handful of flips decides 99 %, and which clips flip depends on the calibration clips, so
`--calibration-seeds K` builds every recipe K times on disjoint calibration sets and reports each flip count.
Speed: `--speed-model` (a ResNet152 at the 5-s shape; random init is fine, ORT's fp32 speed is the same) is
quantized once per recipe structure (types, float layers, op types; MinMax on 8 clips, since ranges do not change
the kernels) and every variant is timed against fp32 in one process, round-robin, so all see the same machine
load; the speed-up is the median over `--repeats` rounds. `--layer-sweep` adds the first recipe plus each ResNet
block in float (accuracy and speed cost of every exclusion).

Recipe syntax: MODE[:float=LAYER+LAYER][:ops=Conv+Gemm][:calib=minmax|percentile|entropy][:pct=P][:clips=N][:sym][:skips]
(no layer stays float unless float= names it; LAYER: PyTorch module name such as conv1, fc, layer4.1.conv2, or a
block prefix such as layer4.1; clips: calibration clip count, default --calibration-clips; sym: symmetric
activation ranges; skips: the residual skip paths in float, with ops=Conv+Gemm). Without --recipes, the
sweep behind toolchain.export.int8_recipes.AUTO_ORDER runs. Prints one JSON line per recipe and appends them to results.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from toolchain.export.clips import featurize_clips, select_clips
from toolchain.export.int8_build import build_int8, prepare_for_int8
from toolchain.export.int8_recipes import Int8Mode, Int8Recipe
from toolchain.export.onnx_graph import layer_nodes
from toolchain.export.parity import compare_logits, softmax
from toolchain.export.variant_gate import judge, label_indices
from toolchain.inference.contract import read_metadata
from toolchain.inference.session import open_session, run_batches
from toolchain.training.checkpoint import load_checkpoint

BATCH = 16
SPEED_CALIBRATION_CLIPS = 8  # Speed needs a valid graph, not good ranges.
SWEEP = (  # The default recipe first (the layer sweep builds on it), then one lever at a time.
    "u8s8:float=conv1+fc", "u8s8", "u8s8:float=conv1", "u8s8:float=fc", "u8s8-reduce", "u8s8-reduce:float=conv1+fc",
    "u8u8", "u8u8:float=conv1+fc", "s8s8-reduce", "s8s8", "u8s8-reduce:clips=128",
    "u8s8-reduce:calib=percentile:pct=99.99", "u8s8-reduce:calib=percentile:pct=99.999", "u8s8-reduce:calib=entropy",
    "u8s8-reduce:ops=Conv+Gemm", "u8s8:float=conv1+fc:ops=Conv+Gemm", "u8s8:float=conv1+fc:clips=128",
    "u8s8:float=conv1+fc:calib=percentile:pct=99.999",
)


def parse_recipe(spec: str, default_clips: int) -> tuple[Int8Recipe, int]:
    """`MODE[:key=value...]` -> (recipe, calibration clips)."""
    mode, *parts = spec.split(":")
    fields: dict = {"mode": Int8Mode(mode), "keep_float": ()}  # Spelled out here: no float layers unless asked.
    clips = default_clips
    for part in parts:
        key, _, value = part.partition("=")
        if key == "calib":
            fields["calibrate"] = value
        elif key == "pct":
            fields["percentile"] = float(value)
        elif key == "float":
            fields["keep_float"] = tuple(value.split("+"))
        elif key == "ops":
            fields["op_types"] = tuple(value.split("+"))
        elif key == "clips":
            clips = int(value)
        elif key == "sym":
            fields["symmetric_activations"] = True
        elif key == "skips":
            fields["float_skips"] = True
        else:
            raise SystemExit(f"recipe {spec!r}: unknown key {key!r} (calib, pct, float, ops, clips, sym, skips)")
    return Int8Recipe(**fields), clips


def blocks(layers: list[str]) -> list[str]:
    """ResNet units for the layer sweep: conv1, layerX.Y (each residual block), fc."""
    units = []
    for layer in layers:
        unit = ".".join(layer.split(".")[:2]) if layer.startswith("layer") else layer
        if unit not in units:
            units.append(unit)
    return units


def structure_key(recipe: Int8Recipe) -> Int8Recipe:
    """The recipe without its calibration choices: what decides which kernels run."""
    return Int8Recipe(mode=recipe.mode, keep_float=recipe.keep_float, op_types=recipe.op_types,
                      float_skips=recipe.float_skips)


def accuracy(logits: np.ndarray, labels: list[str | None], classes: tuple[str, ...]) -> float | None:
    if not labels or any(label is None for label in labels):
        return None
    return float(np.mean([classes[i] == label for i, label in zip(logits.argmax(axis=1), labels)]))


def time_round_robin(fp32_path: Path, variants: dict[str, Path], features: np.ndarray, repeats: int) -> dict:
    """Speed-up of each INT8 model over fp32 on `features`, all measured under the same machine load.

    Every round runs fp32, then each variant (rotating their order), then fp32 again is the next round's start; a
    variant's ratio in a round is the mean of the two fp32 passes around it over its own pass. Reported: the
    median ratio over rounds, and clips/s from median pass times.
    """
    fp32 = open_session(fp32_path)
    sessions = {name: open_session(path) for name, path in variants.items()}
    for session in (fp32, *sessions.values()):
        run_batches(session, features[:BATCH], BATCH)  # First runs pay for allocations.

    def one_pass(session) -> float:
        start = time.perf_counter()
        run_batches(session, features, BATCH)
        return time.perf_counter() - start

    names = list(sessions)
    fp32_times, times = [one_pass(fp32)], {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            times[name].append(one_pass(sessions[name]))
        fp32_times.append(one_pass(fp32))
        for name in names:
            ratios[name].append((fp32_times[-2] + fp32_times[-1]) / 2 / times[name][-1])
        print(json.dumps({"round": round_, "load": os.getloadavg()[0],
                          "ratios": {n: round(r[-1], 3) for n, r in ratios.items()}}), flush=True)
    fp32_rate = len(features) / statistics.median(fp32_times)
    return {name: {"speedup": statistics.median(ratios[name]), "clips_per_s_fp32": fp32_rate,
                   "clips_per_s_int8": len(features) / statistics.median(times[name]),
                   "round_ratios": [round(r, 3) for r in ratios[name]]} for name in names}


def recipe_name(recipe: Int8Recipe) -> str:
    parts = [recipe.mode.value]
    if recipe.keep_float:
        parts.append("float=" + "+".join(recipe.keep_float))
    if recipe.op_types:
        parts.append("ops=" + "+".join(recipe.op_types))
    if recipe.float_skips:
        parts.append("skips")
    return ":".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="fp32 ONNX judged for agreement.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="Its checkpoint (calibration clips).")
    parser.add_argument("--eval-data", type=Path, required=True, help="Labelled clips, held out from training.")
    parser.add_argument("--eval-clips", type=int, default=600)
    parser.add_argument("--calibration-clips", type=int, default=32)
    parser.add_argument("--calibration-seeds", type=int, default=1,
                        help="Build each recipe this many times on disjoint calibration sets (flips vary with them).")
    parser.add_argument("--recipes", nargs="+", default=list(SWEEP))
    parser.add_argument("--layer-sweep", action="store_true", help="Also the first recipe + each block in float.")
    parser.add_argument("--speed-model", type=Path, help="fp32 ONNX timed against its INT8 (ResNet152, 5-s).")
    parser.add_argument("--speed-clips", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("int8_sweep"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    ckpt = load_checkpoint(args.checkpoint)
    layers = list(layer_nodes(args.model))
    parsed = [parse_recipe(spec, args.calibration_clips) for spec in args.recipes]
    if args.layer_sweep:
        base, clips = parsed[0]
        parsed += [(dataclasses.replace(base, keep_float=base.keep_float + (unit,)), clips)
                   for unit in blocks(layers) if unit not in base.keep_float]
    n_calib = max(clips for _, clips in parsed)
    selection = select_clips(ckpt, args.eval_data, parity_samples=args.eval_clips,
                             calibration_samples=n_calib * args.calibration_seeds)
    evaluation, used, _ = featurize_clips(selection.parity, ckpt.feature_config)
    pool, _, _ = featurize_clips(selection.calibration, ckpt.feature_config)
    labels, classes = [c.label for c in used], read_metadata(args.model).classes
    prepared = prepare_for_int8(args.model, args.out / "accuracy.pre.onnx")
    reference = run_batches(open_session(args.model), evaluation, BATCH)
    print(json.dumps({"fp32_accuracy": accuracy(reference, labels, classes), "n": len(evaluation),
                      "calibration_pool": len(pool)}), flush=True)

    rows = []
    for i, (recipe, clips) in enumerate(parsed):
        flips, agreements, int8_acc, mean_dp, rel_err, verdicts = [], [], [], [], [], []
        for seed in range(args.calibration_seeds):
            calibration = pool[seed * clips:(seed + 1) * clips]
            path = build_int8(prepared, args.out / f"accuracy.{i}.onnx", calibration, recipe)
            logits = run_batches(open_session(path), evaluation, BATCH)
            path.unlink()
            flips.append(int(np.sum(logits.argmax(1) != reference.argmax(1))))
            agreements.append(compare_logits(reference, logits)["top1_agreement"])
            int8_acc.append(accuracy(logits, labels, classes))
            decision = judge(reference, logits, label_indices(labels, classes))  # The export's default rule.
            verdicts.append({"certified": decision.kept, "rule": decision.rule,
                             **{k: decision.figures.get(k) for k in ("confident_agreement", "accuracy_drop_bound")}})
            mean_dp.append(float(np.abs(softmax(logits) - softmax(reference)).mean()))
            # Logit error relative to the logit vector: continuous, so it ranks recipes where flips are too few.
            rel_err.append(float(np.mean(np.linalg.norm(logits - reference, axis=1)
                                         / np.linalg.norm(reference, axis=1))))
        row = {"recipe": recipe_name(recipe), **recipe.settings(), "calibration_clips": clips,
               "n": len(evaluation), "flips": flips, "agreement": float(np.mean(agreements)),
               "min_agreement": float(np.min(agreements)), "acc_fp32": accuracy(reference, labels, classes),
               "acc_int8": None if None in int8_acc else float(np.mean(int8_acc)),
               "mean_abs_prob_diff": float(np.mean(mean_dp)), "rel_logit_err": float(np.mean(rel_err)),
               "gate": verdicts}
        rows.append((recipe, row))
        print(json.dumps(row), flush=True)
    if args.speed_model:
        speeds = speed_sweep(args, [recipe for recipe, _ in rows])
        for recipe, row in rows:
            row.update(speeds[recipe_name(structure_key(recipe))])
    with (args.out / "results.jsonl").open("a") as results:
        for _, row in rows:
            results.write(json.dumps(row) + "\n")
    print(json.dumps({"written": str(args.out / "results.jsonl")}))


def speed_sweep(args: argparse.Namespace, recipes: list[Int8Recipe]) -> dict[str, dict]:
    """Quantize the speed model once per recipe structure, then time them all round-robin against fp32."""
    config = read_metadata(args.speed_model).feature_config
    selection = select_clips(load_checkpoint(args.checkpoint), args.eval_data, parity_samples=args.speed_clips,
                             calibration_samples=SPEED_CALIBRATION_CLIPS)
    features, _, _ = featurize_clips(selection.parity, config)
    calibration, _, _ = featurize_clips(selection.calibration, config)
    prepared = prepare_for_int8(args.speed_model, args.out / "speed.pre.onnx")
    structures = {recipe_name(structure_key(r)): structure_key(r) for r in recipes}
    paths = {name: build_int8(prepared, args.out / f"speed.{i}.onnx", calibration, recipe)
             for i, (name, recipe) in enumerate(structures.items())}
    try:
        return time_round_robin(args.speed_model, paths, features, args.repeats)
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
