#!/usr/bin/env bash
# The GPU check: one script, about 8 minutes on a lent GPU machine, that writes one JSON of figures.
# A separately invoked check: `make test` runs it only as a small CPU rehearsal (tests/scripts/test_gpu_check.py).
#
#   scripts/gpu_check.sh                                           # random-init ResNet152, 5-s clips, on CUDA
#   CHECKPOINT=artifacts/runs/X/resnet_152_model.pth scripts/gpu_check.sh          # a trained model instead
#   GPU_CHECK_PROVIDER=cpu ARCH=resnet18 CLIPS=40 BATCH_SIZES=4,8 scripts/gpu_check.sh  # CPU rehearsal
#
# It installs nothing. It runs the repo's own environment (BIN, default .venv/bin: `make venv` installs torch
# 2.14.1+cu130 and onnxruntime-gpu 1.31 as pyproject.toml pins them), or, with PYTHON set, that interpreter with
# the repository put on PYTHONPATH (a GPU machine without a package index: its own torch, the rest from the
# offline kit, scripts/gpu_kit.sh: `PYTHON=python3 PYTHONPATH=/tmp/site scripts/gpu_check.sh`), on FSDD clips
# (CC BY-SA 4.0) from FSDD.
# 1. preflight: nvidia-smi names the GPU, torch sees CUDA, ONNX Runtime's CUDA EP really starts (not a silent
#    CPU fallback); any miss fails here, in seconds, naming what is missing;
# 2. a checkpoint: CHECKPOINT, or a random-init ARCH over FSDD's 10 digits at the default 5-s feature shape;
# 3. `toolchain export-onnx --fp16`: the parity gate runs on every usable provider (CPU and CUDA), the fp16
#    variant is judged on CUDA; the check fails unless parity.json holds passing rows for the provider;
# 4. `toolchain bench --batch-sizes BATCH_SIZES` on CLIPS clips: model-only rates per batch size on the provider,
#    the engine end to end, decode and feature ms per clip on one core;
# 5. `toolchain score` of CLIPS clips (symlinks to FSDD files) with --provider PROVIDER --precision auto: wall
#    seconds, clips/s, rows ok;
# 6. OUT_JSON (default artifacts/gpu_check.json): GPU, versions, parity rows, fp16 certificate, bench, score.
# Prints "gpu check: PASSED" and exits 0 on success; 1 with "gpu check: FAILED: <why>" otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/.venv/bin}
if [ -n "${PYTHON:-}" ]; then  # Another interpreter: the repository's code comes from PYTHONPATH.
    PY=$PYTHON
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO"
else
    PY=$BIN/python
fi
FSDD=${TOOLCHAIN_FSDD:-$REPO/../shared/data/fsdd}
PROVIDER=${GPU_CHECK_PROVIDER:-cuda}
ARCH=${ARCH:-resnet152}
CLIPS=${CLIPS:-1000}
BATCH_SIZES=${BATCH_SIZES:-16,64,256}
CHECKPOINT=${CHECKPOINT:-}
OUT_JSON=${OUT_JSON:-$REPO/artifacts/gpu_check.json}
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT

log() { echo "[gpu-check] $(date -u +%H:%M:%S) $*"; }
die() { echo "gpu check: FAILED: $*" >&2; exit 1; }

case "$PROVIDER" in cuda|cpu) ;; *) die "GPU_CHECK_PROVIDER=$PROVIDER: use cuda (the check) or cpu (a rehearsal)";; esac
if [ -n "${PYTHON:-}" ]; then
    "$PY" -c 'import toolchain' 2>/dev/null || die "PYTHON=$PYTHON cannot import toolchain from $REPO"
else
    [ -x "$BIN/toolchain" ] || die "no toolchain in $BIN: run 'make venv', set BIN to an environment with the repo, or set PYTHON"
fi
toolchain() { "$PY" -m toolchain "$@"; }
[ -d "$FSDD/recordings" ] || die "no FSDD at $FSDD: set TOOLCHAIN_FSDD to the folder holding recordings/"
[ -z "$CHECKPOINT" ] || [ -f "$CHECKPOINT" ] || die "CHECKPOINT=$CHECKPOINT is not a file"
mkdir -p "$(dirname "$OUT_JSON")"
START=$(date +%s)

log "1/6 preflight ($PROVIDER)"
if [ "$PROVIDER" = cuda ]; then
    command -v nvidia-smi >/dev/null || die "nvidia-smi is missing: this machine has no NVIDIA driver"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$WORK/gpu.txt" \
        || die "nvidia-smi sees no GPU"
fi
"$PY" - "$PROVIDER" "$WORK/probe.onnx" >"$WORK/preflight.json" <<'EOF' \
    || die "preflight: $(tail -1 "$WORK/preflight.json")"
import json, sys
import onnx, onnxruntime, torch
from onnx import TensorProto, helper
from toolchain.inference import providers as p
from toolchain.inference.session import open_session
provider, probe = sys.argv[1], sys.argv[2]
info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "onnxruntime": onnxruntime.__version__,
        "ort_providers": onnxruntime.get_available_providers(), "cuda_visible_to_torch": torch.cuda.is_available()}
if provider == "cuda":
    if not torch.cuda.is_available():
        sys.exit(print("torch sees no CUDA device (a CPU-only torch build, or no driver)"))
    info["torch_gpu"] = torch.cuda.get_device_name(0)
    onnx.save(helper.make_model(helper.make_graph(  # One Relu: does the CUDA EP really take a session?
        [helper.make_node("Relu", ["x"], ["y"])], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 17)]),
        probe)
    available = onnxruntime.get_available_providers()
    ran = open_session(probe, p.CUDA_EP).get_providers()[0] if p.CUDA_EP in available else None
    if ran != p.CUDA_EP:  # The engine's own one-line diagnosis (driver, CUDA/cuDNN libraries, the fix).
        sys.exit(print(p.cuda_unavailable_message(available, p.cuda_driver_present(), ran,
                                                  p.preload_cuda_libraries())))
print(json.dumps(info))
EOF

log "2/6 checkpoint"
MODEL_DIR=$WORK/model
mkdir -p "$MODEL_DIR"
if [ -n "$CHECKPOINT" ]; then
    cp "$CHECKPOINT" "$MODEL_DIR/"
    CKPT=$MODEL_DIR/$(basename "$CHECKPOINT")
else
    CKPT=$MODEL_DIR/resnet_${ARCH#resnet}_model.pth
    "$PY" - "$ARCH" "$CKPT" "$FSDD" <<'EOF' || die "could not build a $ARCH checkpoint"
import sys
from pathlib import Path
import torch
from toolchain.audio.config import DEFAULT_CONFIG
from toolchain.training.checkpoint import make_payload, save_checkpoint
from toolchain.training.model import build_model
arch, out, fsdd = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
torch.manual_seed(0)
classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
val = [str(p) for p in sorted((fsdd / "recordings").glob("*_jackson_0.wav"))]  # The gate's clips.
payload = make_payload(build_model(arch, len(classes), weights="none"), arch, classes, DEFAULT_CONFIG, epoch=1,
                       metrics={}, train_args={"arch": arch, "weights": "none"}, val_files=val)
save_checkpoint(payload, out)
EOF
fi

log "3/6 export-onnx --fp16 (parity on every usable provider)"
toolchain export-onnx --checkpoint "$CKPT" --parity-data "$FSDD" --parity-samples 16 --fp16 \
    --variant-samples 200 >"$WORK/export.log" 2>&1 || { tail -20 "$WORK/export.log" >&2; die "export-onnx failed"; }
MODEL=$MODEL_DIR/model.onnx
"$PY" - "$MODEL_DIR/parity.json" "$PROVIDER" <<'EOF' || die "the parity gate did not pass on $PROVIDER"
import json, sys
report, provider = json.load(open(sys.argv[1])), sys.argv[2]
ep = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[provider]
rows = [r for r in report["results"] if r["provider"] == ep]
sys.exit(0 if report["status"] == "passed" and rows and all(r["passed"] for r in rows) else 1)
EOF

log "4/6 bench --batch-sizes $BATCH_SIZES on $CLIPS clips"
BENCH_CLIPS=$(( CLIPS < 512 ? CLIPS : 512 ))  # The reference notebook loop is slow; 512 clips time every stage well.
toolchain bench --checkpoint "$CKPT" --model "$MODEL" --data "$FSDD/recordings" --clips "$BENCH_CLIPS" \
    --batch-sizes "$BATCH_SIZES" --out "$WORK/bench.json" >"$WORK/bench.log" 2>&1 \
    || { tail -20 "$WORK/bench.log" >&2; die "bench failed"; }

log "5/6 score $CLIPS clips (--provider $PROVIDER --precision auto)"
mkdir -p "$WORK/inbox/clips"
find "$FSDD/recordings" -name '*.wav' | sort >"$WORK/all.txt"  # (head in the pipe would SIGPIPE sort)
head -n "$CLIPS" "$WORK/all.txt" | while read -r f; do ln -s "$f" "$WORK/inbox/clips/$(basename "$f")"; done
SCORE_START=$(date +%s.%N)
toolchain score --model "$MODEL" --input "$WORK/inbox/clips" --out "$WORK/scored" --provider "$PROVIDER" \
    --batch-size 64 >"$WORK/score.log" 2>&1 || { tail -20 "$WORK/score.log" >&2; die "toolchain score failed"; }
SCORE_END=$(date +%s.%N)

log "6/6 figures"
"$PY" - "$WORK" "$OUT_JSON" "$PROVIDER" "$SCORE_START" "$SCORE_END" "$START" <<'EOF' \
    || die "could not gather the figures"
import csv, json, sys, time
from pathlib import Path
from toolchain.io import file_sha256
work, out, provider, t0, t1, start = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], *map(float, sys.argv[4:])
gpu = (work / "gpu.txt").read_text().strip() if (work / "gpu.txt").is_file() else None
fp16 = work / "model" / "parity.fp16.json"
[csv_path] = sorted((work / "scored").rglob("predictions_*.csv"))
rows = list(csv.DictReader(csv_path.open()))
names = {file_sha256(f): f.name for f in (work / "model").glob("model*.onnx")}
figures = {
    "provider": provider, "gpu": gpu, "preflight": json.loads((work / "preflight.json").read_text()),
    "parity": json.loads((work / "model" / "parity.json").read_text())["results"],
    "fp16": json.loads(fp16.read_text()) if fp16.is_file() else None,
    "bench": json.loads((work / "bench.json").read_text()),
    "score": {"csv": csv_path.name, "clips": len(rows), "ok": sum(r["status"] == "ok" for r in rows), "seconds": t1 - t0,
              "clips_per_s": len(rows) / (t1 - t0), "model_files": sorted({names.get(r["model_sha256"], r["model_sha256"]) for r in rows}),
              "log_tail": (work / "score.log").read_text().splitlines()[-3:]},
    "total_seconds": time.time() - start,
}
if figures["score"]["ok"] != figures["score"]["clips"]:
    sys.exit(print(f"only {figures['score']['ok']} of {figures['score']['clips']} clips scored ok"))
out.write_text(json.dumps(figures, indent=2) + "\n")
bench = figures["bench"]
print(f"model only per batch size (clips/s): {bench['batch_sweep']}; engine end to end: "
      f"{bench['throughput']['e_engine_end_to_end']:.1f} clips/s; decode {bench['feature_ms_per_clip']['decode']:.2f}"
      f" ms/clip on one core; score: {len(rows)} clips in {t1 - t0:.1f} s")
EOF
log "figures in $OUT_JSON ($(( $(date +%s) - START )) s)"
echo "gpu check: PASSED"
