"""`toolchain bench` end to end on a small real model and real clips, and its batch-size sweep.

Only structure and consistency are asserted: speed figures belong to the benchmark's output, never to a test.
FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.cli.bench import parse_batch_sizes
from toolchain.export.variant_gate import VariantCriterion

KEEP_ANY = VariantCriterion(min_agreement=0.0, max_accuracy_drop=0.99, min_confident_agreement=0.0)

runner = CliRunner()


def test_batch_sizes_parse_or_fail_with_the_option_named():
    assert parse_batch_sizes(None, 16, 96) == (16,)
    assert parse_batch_sizes("1,8, 16,32,8", 16, 96) == (1, 8, 16, 32)
    for text, clips in (("8,x", 96), ("0,4", 96), ("", 96), ("8,64", 32)):
        with pytest.raises(typer.BadParameter):
            parse_batch_sizes(text, 16, clips)


def test_bench_sweeps_batch_sizes_and_records_the_best(exported_model, features, fsdd_dir, tmp_path):
    import shutil

    import numpy as np
    import soundfile

    from toolchain.export.int8 import quantize_int8
    from toolchain.inference.contract import variant_path

    model = tmp_path / "model.onnx"  # With a certified INT8 beside it (the real build; no bar to pass).
    shutil.copy(exported_model.model_path, model)
    quantize_int8(model, variant_path(model, "int8"), features, features, criterion=KEEP_ANY,
                  report_path=tmp_path / "parity.int8.json")
    out = tmp_path / "bench.json"
    recording = tmp_path / "recording.wav"  # 20 s of a quiet noise floor: 39 windows of the model's 1-s clips.
    soundfile.write(recording, np.random.default_rng(0).normal(0, 0.01, 20 * 16_000).astype(np.float32), 16_000)
    result = runner.invoke(app, [
        "bench", "--checkpoint", str(exported_model.parity.checkpoint_path),
        "--model", str(model), "--data", str(fsdd_dir / "recordings"),
        "--clips", "16", "--batch-size", "4", "--batch-sizes", "2,8", "--out", str(out), "--long-file", str(recording),
    ])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["clips"] == 16 and figures["batch_size"] == 4
    assert set(figures["batch_sweep"]) == {"2", "8"} and all(v > 0 for v in figures["batch_sweep"].values())
    best = figures["best_batch_size"]
    assert figures["batch_sweep"][str(best)] == max(figures["batch_sweep"].values())
    assert figures["engine_provider"] == "CPUExecutionProvider"  # CI has no GPU; on CPU the certified INT8 runs.
    assert figures["engine_model"] == str(variant_path(model, "int8")) and "certifies" in figures["engine_model_reason"]
    assert {"a_seed_baseline", "c_ort_fp32_model", "d_ort_int8_model", "e_engine_end_to_end",
            "h_engine_variant_end_to_end"} <= set(figures["throughput"])  # e: the fp32 model; h: what auto picks.
    assert 0 <= figures["int8_top1_agreement"] <= 1 and figures["ratios"]["h_over_a"] > 0
    compute = figures["compute"]
    assert compute["ort_fp32_gflops"] == pytest.approx(compute["gflop_per_clip"] * figures["throughput"]["c_ort_fp32_model"])
    # ResNet18: 1.82 G multiply-adds at 224x224, about in proportion to the input area (128 mels x 44 frames).
    assert compute["gflop_per_clip"] == pytest.approx(2 * 1.82 * 128 * 44 / 224**2, rel=0.2)  # Rounded feature maps: 14 % over.
    assert compute["matmul_gflops"] > 0 and "matmul GFLOP/s" in result.stderr
    assert "best batch size" in result.stderr and "engine model only, batch 8" in result.stderr
    assert figures["long_file"]["windows"] == 39 and figures["long_file"]["duration_s"] == 20.0
    assert figures["throughput"]["f_engine_long_file_windows"] > 0 and figures["ratios"]["f_over_c"] > 0
    # The limit beside it: model only and the front end on one core, sharing the cores; consistent figures.
    from toolchain.bench import window_limit

    lf = figures["long_file"]
    assert lf["limit_windows_per_s"] == pytest.approx(window_limit(
        lf["model_only_windows_per_s"], lf["frontend_windows_per_s_one_core"], figures["machine"]["cores"]))
    assert lf["limit_windows_per_s"] < lf["model_only_windows_per_s"] and lf["model"] == figures["engine_model"]
    assert figures["ratios"]["f_over_limit"] == pytest.approx(
        figures["throughput"]["f_engine_long_file_windows"] / lf["limit_windows_per_s"])
    assert "long file: limit on" in result.output


def test_bench_refuses_a_sweep_larger_than_its_clips(exported_model, fsdd_dir, tmp_path):
    result = runner.invoke(app, ["bench", "--checkpoint", str(exported_model.parity.checkpoint_path), "--model",
                                 str(exported_model.model_path), "--data", str(fsdd_dir / "recordings"),
                                 "--clips", "16", "--batch-sizes", "8,32"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "--clips 16" in result.output
