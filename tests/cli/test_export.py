"""`toolchain export-onnx` / `verify-onnx` through Typer's CliRunner: exit codes, outputs left behind, one-line errors.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import torch
import typer.main
from support import assert_user_error
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.training.checkpoint import save_checkpoint

runner = CliRunner()



def test_help_documents_every_option():
    for name in ("export-onnx", "verify-onnx"):
        assert runner.invoke(app, [name, "--help"]).exit_code == 0
        command = typer.main.get_command(app).commands[name]
        assert [p.name for p in command.params if not getattr(p, "help", None) and p.name != "help"] == []


def test_export_writes_model_reports_and_variants_by_rule(exported_model, parity_csv, tmp_path):
    checkpoint = exported_model.parity.checkpoint_path
    out = tmp_path / "deploy"
    result = runner.invoke(app, ["export-onnx", "--checkpoint", checkpoint, "--out", str(out), "--parity-data",
                                 str(parity_csv), "--parity-samples", "4", "--int8", "--fp16"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Parity fp32 vs PyTorch" in result.output
    assert (out / "model.onnx").is_file()
    assert json.loads((out / "parity.json").read_text())["status"] == "passed"
    # A variant exists exactly when its report says it was kept; any deletion makes the command fail.
    kept = {}
    for precision in ("int8", "fp16"):
        report = json.loads((out / f"parity.{precision}.json").read_text())
        kept[precision] = report["kept"]
        assert (out / f"model.{precision}.onnx").is_file() == report["kept"]
        assert report["accuracy_fp32"] is not None  # The CSV carries labels.
    assert result.exit_code == (0 if all(kept.values()) else 2), result.output
    assert not list(out.glob(".*"))  # No temporary files left behind.


def test_verify_passes_on_the_exported_pair(exported_model):
    result = runner.invoke(app, ["verify-onnx", "--model", str(exported_model.model_path), "--checkpoint",
                                 exported_model.parity.checkpoint_path, "--parity-samples", "3"])
    assert result.exit_code == 0, result.output
    assert "parity passed" in result.output


def test_verify_fails_on_a_tampered_copy(exported_model, tmp_path):
    model = onnx.load(str(exported_model.model_path))
    init = next(t for t in model.graph.initializer if len(t.dims) == 4)
    weights = onnx.numpy_helper.to_array(init).copy()
    weights.flat[: weights.size // 2] *= -1  # Flip the sign of half of one conv's weights.
    init.CopyFrom(onnx.numpy_helper.from_array(weights, init.name))
    tampered = tmp_path / "copied" / "model.onnx"
    tampered.parent.mkdir()
    onnx.save_model(model, str(tampered), save_as_external_data=False)
    report = tmp_path / "verify.json"
    result = runner.invoke(app, ["verify-onnx", "--model", str(tampered), "--checkpoint",
                                 exported_model.parity.checkpoint_path, "--parity-samples", "3", "--report", str(report)])
    assert_user_error(result, "parity gate failed", "model.onnx")
    assert json.loads(report.read_text())["status"] == "failed"


def test_sabotaged_export_fails_and_leaves_no_model(exported_model, tmp_path, monkeypatch):
    """Our own exporter step is sabotaged (one weight altered before saving): the gate must catch it."""
    import toolchain.export.exporter as onnx_export

    real = onnx_export._to_onnx_proto

    def sabotaged(*args, **kwargs):
        proto = real(*args, **kwargs)
        init = max((t for t in proto.graph.initializer if len(t.dims) == 4), key=lambda t: np.prod(t.dims))
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(0.5), init.name))
        return proto

    monkeypatch.setattr(onnx_export, "_to_onnx_proto", sabotaged)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"stale model from an earlier export")
    result = runner.invoke(app, ["export-onnx", "--checkpoint", exported_model.parity.checkpoint_path,
                                 "--out", str(out), "--parity-samples", "3"])
    assert_user_error(result, "parity gate failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.json"]
    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["status"] == "failed" and data["model_path"] == str(out)


def test_missing_validation_files_ask_for_parity_data(exported_model, tmp_path):
    raw = torch.load(exported_model.parity.checkpoint_path, map_location="cpu", weights_only=True)
    raw["val_files"] = [str(tmp_path / "moved-away" / "a.wav")]
    checkpoint = save_checkpoint(raw, tmp_path / "resnet_18_model.pth")
    result = runner.invoke(app, ["export-onnx", "--checkpoint", str(checkpoint)])
    assert_user_error(result, "--parity-data")
    assert not (tmp_path / "model.onnx").exists()


def test_missing_checkpoint_is_one_line(tmp_path):
    result = runner.invoke(app, ["export-onnx", "--checkpoint", str(tmp_path / "nope.pth")])
    assert_user_error(result, "nope.pth")


def test_copied_model_verifies_in_another_folder(exported_model, tmp_path):
    """Users re-check an artifact after copying it: only the .onnx and the checkpoint travel."""
    copy = tmp_path / "elsewhere.onnx"
    shutil.copy(exported_model.model_path, copy)
    result = runner.invoke(app, ["verify-onnx", "--model", str(copy), "--checkpoint",
                                 exported_model.parity.checkpoint_path, "--parity-samples", "2"])
    assert result.exit_code == 0, result.output
