"""Fixtures for tests/export/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from support import write_fsdd_manifest

from toolchain.export.clips import Clip, featurize_clips
from toolchain.inference.contract import read_metadata
from toolchain.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture()
def checkpoint_with_training_data(tiny_checkpoint, fsdd_dir, tmp_path):
    """tiny_checkpoint, re-saved as if trained on george takes 0-2 with val = george take 3."""
    manifest = write_fsdd_manifest(fsdd_dir, tmp_path / "train.csv", speakers={"george"}, takes=range(4))
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    raw["train_args"] = {"data": str(manifest)}
    raw["val_files"] = [str(fsdd_dir / "recordings" / f"{d}_george_3.wav") for d in range(10)]
    return load_checkpoint(save_checkpoint(raw, tmp_path / "resnet_18_model.pth"))


N_CLIPS = 4


@pytest.fixture(scope="module")
def clips(fsdd_dir) -> list[Path]:
    return sorted((fsdd_dir / "recordings").glob("*_nicolas_1.wav"))[:N_CLIPS]


@pytest.fixture(scope="module")
def clip_features(exported_model, fsdd_dir):
    """4 labelled evaluation clips and 3 disjoint calibration clips (a test needs ranges, not accuracy)."""
    config = read_metadata(exported_model.model_path).feature_config
    recordings = fsdd_dir / "recordings"
    evaluation = [Clip(recordings / f"{d}_lucas_2.wav", label) for d, label in ((0, "zero"), (3, "three"), (7, "seven"), (9, "nine"))]
    calibration = [Clip(recordings / f"{d}_theo_3.wav") for d in (1, 5, 8)]
    features, used, _ = featurize_clips(evaluation, config)
    calib, _, _ = featurize_clips(calibration, config)
    return features, [c.label for c in used], calib


def _weight_producers(model_path) -> dict[str, str]:
    """Module name -> what feeds that Conv/Gemm's weight: "initializer" (float) or "DequantizeLinear" (INT8)."""
    graph = onnx.load(str(model_path)).graph
    initializers = {i.name for i in graph.initializer}
    dequantized = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    producers = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            weight = node.input[1]
            if weight in initializers:
                producers[weight.removesuffix(".weight")] = "initializer"
            else:  # ORT names the stored INT8 weight `<module>.weight_quantized`.
                producers[dequantized[weight].split(".weight")[0]] = "DequantizeLinear"
    return producers


@pytest.fixture(scope="session")
def weight_producers() -> Callable[[Path], dict[str, str]]:
    """For a saved model path: module name -> "initializer" (float) or "DequantizeLinear" (INT8) per Conv/Gemm weight."""
    return _weight_producers
