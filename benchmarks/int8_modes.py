"""Which INT8 mode keeps accuracy on this CPU? Quantizes one certified fp32 model in every `Int8Mode`.

    python benchmarks/int8_modes.py --model RUN/model.onnx --checkpoint RUN/resnet_18_model.pth \
        --eval-data ../shared/data/fsdd --eval-clips 200 --calibration-clips 32 --out /tmp/int8_modes

Calibration clips come from the checkpoint's training data (as `export-onnx --int8` does); evaluation clips are
drawn reproducibly from --eval-data. Prints one JSON line per mode (agreement with fp32, accuracy, clips/s at
batch 16 with ORT's default threads) and writes the reports under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain.checkpoint import load_checkpoint
from toolchain.parity_data import featurize_clips, select_clips
from toolchain.quantize import Int8Mode, VariantRejectedError, quantize_int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument("--eval-clips", type=int, default=200)
    parser.add_argument("--calibration-clips", type=int, default=32)
    parser.add_argument("--modes", default=",".join(m.value for m in Int8Mode))
    parser.add_argument("--calibrate", default="minmax", choices=["minmax", "percentile", "entropy"])
    parser.add_argument("--out", type=Path, default=Path("int8_modes"))
    args = parser.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    selection = select_clips(ckpt, args.eval_data, parity_samples=args.eval_clips,
                             calibration_samples=args.calibration_clips)
    evaluation, used, _ = featurize_clips(selection.parity, ckpt.feature_config)
    calibration, _, _ = featurize_clips(selection.calibration, ckpt.feature_config)
    args.out.mkdir(parents=True, exist_ok=True)
    for mode in args.modes.split(","):
        try:
            report = quantize_int8(args.model, args.out / f"model.{mode}.onnx", calibration, evaluation,
                                   labels=[c.label for c in used], mode=Int8Mode(mode), calibrate=args.calibrate, min_agreement=0.0,
                                   report_path=args.out / f"{mode}.json")
        except VariantRejectedError as exc:
            report = exc.report  # type: ignore[attr-defined]
        print(json.dumps({"mode": mode, "calibrate": args.calibrate, "agreement": report.top1_agreement, "acc_fp32": report.accuracy_fp32,
                          "acc_int8": report.accuracy_variant, "max_abs_prob_diff": report.max_abs_prob_diff,
                          "clips_per_s_fp32": report.clips_per_s_fp32,
                          "clips_per_s_int8": report.clips_per_s_variant, "n": report.n_clips,
                          "reason": report.reason}), flush=True)


if __name__ == "__main__":
    main()
