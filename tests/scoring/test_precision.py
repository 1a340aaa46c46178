"""Which file scoring runs: the named fp32 model, its fp16 variant when a report certifies it on CUDA, or its INT8
variant when one is certified, on the CPU.

Tested without a GPU on real files and on reports written by the real `convert_fp16`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from toolchain.errors import ScoringError, VariantRejectedError
from toolchain.export.variant_gate import VariantCriterion
from toolchain.export.variants import convert_fp16
from toolchain.inference.contract import PREFIX, variant_path
from toolchain.inference.providers import (
    CPU_EP,
    CUDA_EP,
)
from toolchain.scoring.precision import choose_model_file

KEEP_ANY = VariantCriterion(min_agreement=0.0, max_accuracy_drop=0.99, min_confident_agreement=0.0)
KEEP_NONE = VariantCriterion(min_agreement=1.01, min_confident_agreement=1.01)  # No share reaches 101 %.


def test_cpu_runs_the_given_file_even_beside_a_certified_variant(certified, tmp_path):
    model = copy_folder(certified, tmp_path / "m", judged_on=CUDA_EP)
    assert choose_model_file(model, on_cuda=False).path == model
    assert choose_model_file(model, on_cuda=True, precision="fp32").path == model


def test_cuda_runs_the_variant_certified_on_cuda(certified, tmp_path):
    model = copy_folder(certified, tmp_path / "m", judged_on=CUDA_EP)
    choice = choose_model_file(model, on_cuda=True)
    assert choice.path == model.with_name("model.fp16.onnx") and "parity.fp16.json" in choice.reason


def test_cuda_keeps_fp32_when_the_variant_was_judged_only_on_cpu(certified):
    assert json.loads((certified.parent / "parity.fp16.json").read_text())["provider"] == CPU_EP  # As written here.
    choice = choose_model_file(certified, on_cuda=True)
    assert choice.path == certified
    assert f"judged on {CPU_EP}, not CUDA" in choice.reason and "export-onnx --fp16` on a GPU" in choice.reason
    # Asked for explicitly, a variant that passed its report runs wherever it was judged.
    assert choose_model_file(certified, on_cuda=True, precision="fp16").path == variant_path(certified, "fp16")


def test_missing_variant_or_report_keeps_fp32(certified, tmp_path):
    no_variant = copy_folder(certified, tmp_path / "a", judged_on=CUDA_EP)
    variant_path(no_variant, "fp16").unlink()
    choice = choose_model_file(no_variant, on_cuda=True)
    assert choice.path == no_variant and "no model.fp16.onnx beside model.onnx" in choice.reason
    with pytest.raises(ScoringError, match="precision fp16 requested .* no model.fp16.onnx"):
        choose_model_file(no_variant, on_cuda=False, precision="fp16")

    no_report = copy_folder(certified, tmp_path / "b", judged_on=CUDA_EP)
    (no_report.parent / "parity.fp16.json").unlink()
    assert "parity.fp16.json is missing" in choose_model_file(no_report, on_cuda=True).reason

    foreign = copy_folder(certified, tmp_path / "c", judged_on=CUDA_EP)
    (foreign.parent / "parity.fp16.json").write_text(json.dumps({"precision": "int8", "status": "kept", "kept": True}))
    assert "is not the fp16 report" in choose_model_file(foreign, on_cuda=True).reason


def test_rejected_variant_is_never_used(onnx_model, features, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(onnx_model, model)
    with pytest.raises(VariantRejectedError):  # No agreement reaches 101 %: the real rule rejects it.
        convert_fp16(model, variant_path(model, "fp16"), features, criterion=KEEP_NONE, report_path=tmp_path / "parity.fp16.json")
    assert not variant_path(model, "fp16").exists()
    shutil.copy(onnx_model, variant_path(model, "fp16"))  # A stray file with the variant's name must not be trusted.
    choice = choose_model_file(model, on_cuda=True)
    assert choice.path == model and "says model.fp16.onnx failed" in choice.reason


def test_stale_variant_from_an_earlier_export_is_not_used(certified, tmp_path):
    model = copy_folder(certified, tmp_path / "m", judged_on=CUDA_EP)
    proto = onnx.load(str(model))  # Re-exported later without --fp16: same weights, a new export time.
    for prop in proto.metadata_props:
        if prop.key == PREFIX + "exported_at":
            prop.value = json.dumps("2099-01-01T00:00:00+00:00")
    onnx.save(proto, str(model))
    choice = choose_model_file(model, on_cuda=True)
    assert choice.path == model and "exported from another model.onnx" in choice.reason


def copy_folder(model: Path, dest: Path, judged_on: str | None = None) -> Path:
    """A copy of the model's folder; `judged_on` rewrites the report's provider (what a GPU machine's export writes)."""
    shutil.copytree(model.parent, dest)
    if judged_on is not None:
        report = json.loads((dest / "parity.fp16.json").read_text())
        (dest / "parity.fp16.json").write_text(json.dumps({**report, "provider": judged_on}))
    return dest / model.name


def test_cpu_runs_the_certified_int8_variant_unless_fp32_is_asked(onnx_model, features, tmp_path):
    from toolchain.export.int8 import quantize_int8
    from toolchain.scoring.engine import load_model
    from toolchain.scoring.engine_config import EngineConfig

    model = tmp_path / "model.onnx"
    shutil.copy(onnx_model, model)
    assert "no model.int8.onnx beside model.onnx" in choose_model_file(model, on_cuda=False).reason
    quantize_int8(model, variant_path(model, "int8"), features, features, criterion=KEEP_ANY,
                  report_path=tmp_path / "parity.int8.json")  # The real build and report; no bar to pass.
    choice = choose_model_file(model, on_cuda=False)
    assert choice.path == variant_path(model, "int8") and "parity.int8.json certifies" in choice.reason
    assert choose_model_file(model, on_cuda=False, precision="fp32").path == model
    assert choose_model_file(model, on_cuda=True).path == model  # CUDA wants fp16, never INT8.
    loaded = load_model(model, EngineConfig(decode_workers=0, intra_op_threads=1))
    assert loaded.path == variant_path(model, "int8") and loaded.source_sha256 != loaded.sha256
    report = json.loads((tmp_path / "parity.int8.json").read_text())
    (tmp_path / "parity.int8.json").write_text(json.dumps({**report, "kept": False, "status": "deleted"}))
    assert choose_model_file(model, on_cuda=False).path == model
    with pytest.raises(ScoringError, match="precision int8 requested"):
        choose_model_file(model, on_cuda=False, precision="int8")
