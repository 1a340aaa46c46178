"""`toolchain export-onnx` / `verify-onnx` through Typer's CliRunner: exit codes, outputs left behind, one-line errors.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import typer.main
from support import assert_user_error
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.inference.contract import read_metadata, report_path, variant_path, write_metadata
from toolchain.training.checkpoint import save_checkpoint

runner = CliRunner()


def refuse_rename_onto(monkeypatch, target: Path) -> None:
    """The OS refuses to rename anything onto `target`, as when its folder is made read-only after the checks
    (the OS is simulated, not our code: every other rename goes through)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file in `folder` (hidden ones too) and its content."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


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
    audio = json.loads((out / "parity.audio.json").read_text())  # The audio model, by default, on the 20 clips.
    assert audio["passed"] and audio["n_clips"] == 20 and (out / "model.audio.onnx").is_file()
    # Each variant records the rule it was judged by: INT8 by labels (the CSV has them), FP16 by agreement.
    rules = {p: json.loads((out / f"parity.{p}.json").read_text())["criterion"]["rule"] for p in ("int8", "fp16")}
    assert rules == {"int8": "labelled", "fp16": "agreement"}
    assert "int8 gate: labelled: accuracy drop <= 1 pt" in " ".join(result.output.split())

    # verify-onnx judges every kept variant again, under the rule its metadata records.
    verify = ["verify-onnx", "--model", str(out / "model.onnx"), "--checkpoint", checkpoint, "--parity-data",
              str(parity_csv), "--parity-samples", "3"]
    kept_variants = [p for p, was_kept in kept.items() if was_kept]
    verified = runner.invoke(app, verify)
    assert verified.exit_code == 0, verified.output
    for precision in kept_variants:
        assert read_metadata(out / f"model.{precision}.onnx").gate["rule"] == rules[precision]
        assert f"{precision} gate: {rules[precision]}: " in verified.output
    if not kept_variants:
        return
    # A variant whose recorded rule it no longer meets fails verification, and stays where it is.
    target = out / f"model.{kept_variants[0]}.onnx"
    proto = onnx.load(str(target))
    meta = read_metadata(target)
    write_metadata(proto, dataclasses.replace(meta, gate={**meta.gate, "min_agreement": 1.01,
                                                          "min_confident_agreement": 1.01}))
    onnx.save_model(proto, str(target))
    assert_user_error(runner.invoke(app, verify), f"{target} no longer meets its gate", "verifying deletes nothing")
    assert target.is_file()


def test_no_audio_model_skips_it(exported_model, parity_csv, tmp_path):
    out = tmp_path / "plain"
    result = runner.invoke(app, ["export-onnx", "--checkpoint", exported_model.parity.checkpoint_path, "--out",
                                 str(out), "--parity-data", str(parity_csv), "--parity-samples", "3",
                                 "--no-audio-model"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "parity.json"]


def test_verify_passes_on_the_exported_pair(exported_model):
    result = runner.invoke(app, ["verify-onnx", "--model", str(exported_model.model_path), "--checkpoint",
                                 exported_model.parity.checkpoint_path, "--parity-samples", "3"])
    assert result.exit_code == 0, result.output
    assert "parity passed" in result.output
    assert "audio model: features within" in result.output  # model.audio.onnx is beside it: gated too.
    # Verifying writes no model: only export may say "wrote".
    assert f"audio model verified: {variant_path(exported_model.model_path, 'audio')}" in result.stdout
    assert "wrote" not in result.output


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


def test_sabotaged_export_fails_and_keeps_the_last_good_model(exported_model, tmp_path, monkeypatch):
    """Our own exporter step is sabotaged (one weight altered before saving): the gate must catch it, and the
    model from an earlier export (with its parity.json) must survive the failed re-export."""
    import toolchain.export.exporter as onnx_export

    real = onnx_export._to_onnx_proto

    def sabotaged(*args, **kwargs):
        proto = real(*args, **kwargs)
        init = max((t for t in proto.graph.initializer if len(t.dims) == 4), key=lambda t: np.prod(t.dims))
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(0.5), init.name))
        return proto

    checkpoint = exported_model.parity.checkpoint_path
    first, second = tmp_path / "first" / "model.onnx", tmp_path / "second" / "model.onnx"
    second.parent.mkdir()
    shutil.copy(exported_model.model_path, second)
    shutil.copy(exported_model.parity_path, second.parent / "parity.json")
    good = second.read_bytes()
    monkeypatch.setattr(onnx_export, "_to_onnx_proto", sabotaged)

    # No earlier model: nothing is published, parity.json says why.
    result = runner.invoke(app, ["export-onnx", "--checkpoint", checkpoint, "--out", str(first),
                                 "--parity-samples", "3"])
    assert_user_error(result, "parity gate failed", str(first))
    assert ".pending" not in result.output
    assert sorted(p.name for p in first.parent.iterdir()) == ["parity.json"]
    data = json.loads((first.parent / "parity.json").read_text())
    assert data["status"] == "failed" and data["model_path"] == str(first)

    # An earlier good model: it and its parity.json stay; the failure is reported beside them.
    result = runner.invoke(app, ["export-onnx", "--checkpoint", checkpoint, "--out", str(second),
                                 "--parity-samples", "3"])
    assert_user_error(result, "parity gate failed", f"the earlier {second} is kept")
    assert second.read_bytes() == good
    assert json.loads((second.parent / "parity.json").read_text())["status"] == "passed"
    failed = json.loads((second.parent / "parity.failed.json").read_text())
    assert failed["status"] == "failed" and failed["model_path"] == str(second)
    assert sorted(p.name for p in second.parent.iterdir()) == ["model.onnx", "parity.failed.json", "parity.json"]



@pytest.mark.parametrize("earlier", [True, False], ids=["earlier-model", "first-export"])
def test_a_model_the_os_will_not_rename_into_place_is_one_line_and_no_report_says_passed(
        exported_model, parity_csv, tmp_path, monkeypatch, earlier):
    out = tmp_path / "deploy" / "model.onnx"
    out.parent.mkdir()
    if earlier:
        shutil.copy(exported_model.model_path, out)
        shutil.copy(exported_model.parity_path, out.parent / "parity.json")
    before = folder_bytes(out.parent)
    refuse_rename_onto(monkeypatch, out)
    result = runner.invoke(app, ["export-onnx", "--checkpoint", exported_model.parity.checkpoint_path, "--out",
                                 str(out), "--parity-data", str(parity_csv), "--parity-samples", "3",
                                 "--no-audio-model"])
    left = f"the earlier {out} and its parity.json are kept" if earlier else "nothing was published"
    assert_user_error(result, f"cannot replace {out} (Permission denied): make {out.parent} writable", left)
    assert "Traceback" not in result.output
    # The earlier model and its parity.json untouched; no parity.failed.json, no temporary file, no "passed".
    assert folder_bytes(out.parent) == before


def test_an_audio_model_the_os_will_not_rename_is_one_line_and_the_stale_one_goes(exported_model, parity_csv,
                                                                                  tmp_path, monkeypatch):
    out = tmp_path / "deploy" / "model.onnx"
    audio = variant_path(out, "audio")
    out.parent.mkdir()
    shutil.copy(variant_path(exported_model.model_path, "audio"), audio)  # From an earlier export.
    shutil.copy(report_path(exported_model.model_path, "audio"), out.parent / "parity.audio.json")
    refuse_rename_onto(monkeypatch, audio)
    result = runner.invoke(app, ["export-onnx", "--checkpoint", exported_model.parity.checkpoint_path, "--out",
                                 str(out), "--parity-data", str(parity_csv), "--parity-samples", "3",
                                 "--variant-samples", "4"])
    assert_user_error(result, f"cannot replace {audio} (Permission denied): make {out.parent} writable")
    assert "Traceback" not in result.output
    # model.onnx landed with its report; the audio model did not, and nothing says it passed.
    assert sorted(folder_bytes(out.parent)) == ["model.onnx", "parity.json"]
    assert json.loads((out.parent / "parity.json").read_text())["status"] == "passed"


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


def test_unusable_parity_clips_are_refused_before_exporting(tiny_checkpoint, tmp_path, monkeypatch):
    import toolchain.export.exporter as onnx_export

    def must_not_run(*args, **kwargs):
        raise AssertionError("the export ran before the parity clips were checked")

    monkeypatch.setattr(onnx_export, "_to_onnx_proto", must_not_run)
    junk = tmp_path / "junk"
    junk.mkdir()
    for name in ("a.wav", "b.wav"):
        (junk / name).write_bytes(b"RIFF not audio")
    out = tmp_path / "deploy" / "model.onnx"
    result = runner.invoke(app, ["export-onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                                 "--parity-data", str(junk)])
    assert_user_error(result, "none of the 2 parity clips", "can be decoded", "--parity-data")
    assert not out.parent.exists()


@pytest.mark.parametrize("command", ["export-onnx", "predict"])
def test_unwritable_outputs_are_one_line_errors_before_any_work(tiny_checkpoint, fsdd_dir, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = {"export-onnx": ["--out", str(blocker / "model.onnx")],
            "predict": ["--input", str(fsdd_dir / "recordings" / "0_george_0.wav"), "--out", str(blocker / "p.csv")]}
    result = runner.invoke(app, [command, "--checkpoint", str(tiny_checkpoint), *args[command]])
    assert_user_error(result, "--out", str(blocker), "which is a file")


@pytest.mark.parametrize("command", ["export-onnx", "predict"])
def test_checkpoint_whose_weights_do_not_fit_creates_nothing(tiny_checkpoint, fsdd_dir, tmp_path, command):
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    raw["arch"] = "resnet34"
    checkpoint = save_checkpoint(raw, tmp_path / "edited" / "resnet_34_model.pth")
    out = tmp_path / "out"
    args = {"export-onnx": ["--out", str(out / "model.onnx")],
            "predict": ["--input", str(fsdd_dir / "recordings" / "0_george_0.wav"), "--out", str(out / "p.csv")]}
    result = runner.invoke(app, [command, "--checkpoint", str(checkpoint), *args[command]])
    assert_user_error(result, "resnet_34_model.pth", "weights are those of resnet18, not resnet34")
    assert not out.exists()
