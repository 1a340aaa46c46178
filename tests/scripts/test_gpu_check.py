"""scripts/gpu_check.sh, the check a lent GPU machine runs: refused in seconds where CUDA is missing, and rehearsed
for real on the CPU (same steps, a resnet18 and 40 FSDD clips), so the day a GPU is lent the script is known to run.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def _run(tmp_path: Path, fsdd_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, env={
        **os.environ, "BIN": str(Path(sys.executable).parent), "TOOLCHAIN_FSDD": str(fsdd_dir),
        "OUT_JSON": str(tmp_path / "gpu_check.json"), **env})


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_without_a_gpu_the_check_fails_at_once_naming_the_cause(tmp_path, fsdd_dir):
    result = _run(tmp_path, fsdd_dir)
    assert result.returncode == 1
    assert "gpu check: FAILED: nvidia-smi is missing" in result.stderr
    assert "2/6" not in result.stdout and not (tmp_path / "gpu_check.json").exists()  # Nothing else ran.


def test_a_bad_setting_is_refused_before_any_work(tmp_path, fsdd_dir):
    result = _run(tmp_path, fsdd_dir, GPU_CHECK_PROVIDER="tpu")
    assert result.returncode == 1 and "GPU_CHECK_PROVIDER=tpu" in result.stderr and "1/6" not in result.stdout


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_step_and_writes_the_figures(tmp_path, fsdd_dir):
    result = _run(tmp_path, fsdd_dir, GPU_CHECK_PROVIDER="cpu", ARCH="resnet18", CLIPS="40", BATCH_SIZES="4,8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gpu check: PASSED" in result.stdout and "6/6 figures" in result.stdout
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["provider"] == "cpu" and figures["gpu"] is None
    assert {r["provider"] for r in figures["parity"]} == {"CPUExecutionProvider"}
    assert all(r["passed"] for r in figures["parity"]) and figures["fp16"]["status"] in ("kept", "deleted")
    assert set(figures["bench"]["batch_sweep"]) == {"4", "8"} and figures["bench"]["feature_ms_per_clip"]["decode"] > 0
    assert figures["score"]["clips"] == figures["score"]["ok"] == 40 and figures["score"]["clips_per_s"] > 0
    assert figures["score"]["model_files"] == ["model.onnx"]  # CPU: fp32 (no INT8 was built).
