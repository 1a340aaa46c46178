"""Fixtures for tests/scoring/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import make_bad_input_folder

from toolchain.export.variant_gate import VariantCriterion
from toolchain.export.variants import convert_fp16
from toolchain.inference.contract import variant_path
from toolchain.scoring.engine import load_model
from toolchain.scoring.engine_config import EngineConfig

KEEP_ANY = VariantCriterion(min_agreement=0.0, max_accuracy_drop=0.99, min_confident_agreement=0.0)


@pytest.fixture(scope="module")
def certified(onnx_model, features, tmp_path_factory) -> Path:
    """A folder as `export-onnx --fp16` leaves it: model.onnx, model.fp16.onnx and parity.fp16.json written by the
    real `convert_fp16` (judged on the CPU EP here; no bar, so the selection tests don't hinge on fp16 quality)."""
    folder = tmp_path_factory.mktemp("certified")
    model = folder / "model.onnx"
    shutil.copy(onnx_model, model)
    convert_fp16(model, variant_path(model, "fp16"), features, criterion=KEEP_ANY, report_path=folder / "parity.fp16.json")
    return model


CONFIG = EngineConfig(batch_size=8, decode_workers=1, intra_op_threads=1)


@pytest.fixture(scope="module")
def model(onnx_model):
    return load_model(onnx_model, CONFIG)


@pytest.fixture(scope="module")
def bad_input_folder(tmp_path_factory, fsdd_dir) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("bad") / "drop-2024-01-02"
    return root, make_bad_input_folder(root, fsdd_dir)
