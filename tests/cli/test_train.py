"""`toolchain train` / `toolchain predict` through Typer's CliRunner: exit codes, one-line errors, outputs.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import importlib
import shutil
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import torch
import typer.main
from support import assert_user_error, fsdd_rows
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.training.checkpoint import load_checkpoint
from toolchain.training.config import Arch, TrainConfig
from toolchain.training.model import imagenet_weights_path

runner = CliRunner()



def test_help_covers_every_option():
    for name in ("train", "predict"):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        command = typer.main.get_command(app).commands[name]
        undocumented = [p.name for p in command.params if not getattr(p, "help", None) and p.name != "help"]
        assert undocumented == []


def test_option_defaults_match_train_config():
    defaults = {p.name: p.default for p in typer.main.get_command(app).commands["train"].params}
    config = TrainConfig(data="x")
    for name in ("arch", "weights", "device", "epochs", "batch_size", "lr", "val_fraction", "seed", "patience",
                 "bn_recalibration_batches"):
        value = defaults[name]
        assert getattr(value, "value", value) == getattr(config, name), name
    assert str(defaults["cache_dir"]) == config.cache_dir


def test_missing_data_path(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nowhere"), "--weights", "none"])
    assert_user_error(result, "nowhere", "does not exist")


def test_one_class_only(tmp_path, fsdd_dir):
    (tmp_path / "one").mkdir()
    for row in [r for r in fsdd_rows(fsdd_dir) if r["label"] == "one"][:2]:
        shutil.copyfile(fsdd_dir / row["filename"], tmp_path / "one" / Path(row["filename"]).name)
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--weights", "none"])
    assert_user_error(result, "error: ", "only one class")


def test_unreadable_csv(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_bytes(b"\xff\xfe\x00\x81 binary junk")
    assert_user_error(runner.invoke(app, ["train", "--data", str(bad), "--weights", "none"]),
                    "cannot read CSV manifest", "labels.csv")


def test_csv_missing_columns(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("path,class\na.wav,x\n")
    assert_user_error(runner.invoke(app, ["train", "--data", str(bad), "--weights", "none"]),
                    "lacks column(s) filename, label")


def test_unknown_arch(manifest):
    result = runner.invoke(app, ["train", "--data", str(manifest), "--arch", "resnet9"])
    # Typer rejects it from the library's Arch enum, as a usage error (exit 2) listing the allowed values.
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "resnet9" in result.output and "resnet18" in result.output


def test_imagenet_weights_offline(manifest, tmp_path, monkeypatch):
    """No network and no cached file: the message names the .pth to place and the --weights none way out."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):  # The network is outside our control: simulate having none.
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = imagenet_weights_path(Arch.resnet18)
    assert str(tmp_path) in str(expected)
    result = runner.invoke(app, ["train", "--data", str(manifest), "--arch", "resnet18", "--weights", "imagenet",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")])
    assert_user_error(result, expected.name, "--weights none")
    assert not (tmp_path / "cache").exists()  # Refused before any audio was decoded.


def test_train_then_predict(manifest, tmp_path, fsdd_dir):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(manifest), "--arch", "resnet18", "--weights", "none",
                                 "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--out", str(run),
                                 "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    checkpoint = run / "resnet_18_model.pth"
    for path in (checkpoint, run / "metrics.csv", run / "training_curves.png", run / "summary.json"):
        assert str(path) in result.output and path.is_file()
    assert "epoch 2:" in result.output

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    clips = [fsdd_dir / r["filename"] for r in fsdd_rows(fsdd_dir) if r["speaker"] == "theo"][:3]
    for clip in clips:
        shutil.copyfile(clip, incoming / clip.name)
    (incoming / "broken.wav").write_bytes(b"")
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "--checkpoint", str(checkpoint), "--input", str(incoming),
                                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    digits = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert all(r["label"] in digits for r in rows if not r["error"])
    assert [Path(r["file"]).name for r in rows if r["error"]] == ["broken.wav"]
    assert "1 of 4 file(s) could not be decoded" in result.output


def test_predict_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "x.pth"), "--input", str(tmp_path)])
    assert_user_error(result, "x.pth")


def test_range_errors_state_the_valid_range(manifest):
    for option, value, valid in (("--lr", "-1", "above 0"), ("--val-fraction", "1.5", "between 0 and 1")):
        result = runner.invoke(app, ["train", "--data", str(manifest), option, value])
        assert_user_error(result, f"{option[2:].replace('-', '_')}={float(value)!r}", valid)


def test_ctrl_c_names_the_checkpoint_to_resume_from(manifest, tmp_path):
    """A real SIGINT to a real `toolchain train` after its first epoch: exit 130 and the --resume to pass."""
    run = tmp_path / "run"
    command = [str(Path(sys.executable).with_name("toolchain")), "train", "--data", str(manifest), "--arch",
               "resnet18", "--weights", "none", "--epochs", "30", "--batch-size", "8", "--out", str(run),
               "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--device", "cpu"]
    # The child gets Python's own Ctrl-C handling whatever the test process's SIGINT disposition is.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = ""
        for line in proc.stderr:
            seen += line
            if line.startswith("epoch 1:"):
                break
        assert (run / "resnet_18_last.pth").is_file(), seen
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # Once in a full-suite run the first Ctrl-C went unanswered: press again.
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, seen + err
    assert f"--resume {run / 'resnet_18_last.pth'}" in err and "Traceback" not in err


def test_an_interrupted_resume_says_how_to_continue(manifest, tmp_path, monkeypatch):
    """Each command is interrupted where Ctrl-C during its next epoch would surface (a KeyboardInterrupt after its
    first epoch): a fresh run names the --resume to add; a resumed one says to run the same command again, or which
    --resume to pass instead when its last checkpoint went to another --out."""
    training = importlib.import_module("toolchain.training.train")
    real_train, before_training = training.train, {"interrupt": False}

    def interrupted_train(config, progress=None, on_epoch=None, on_note=None, tracker=None):
        def epoch_done(row):
            on_epoch(row)
            raise KeyboardInterrupt

        def noted(message):
            on_note(message)
            if before_training["interrupt"] and message.startswith("resuming "):
                raise KeyboardInterrupt

        return real_train(config, progress, on_epoch=epoch_done, on_note=noted, tracker=tracker)

    monkeypatch.setattr(training, "train", interrupted_train)
    command = ["train", "--data", str(manifest), "--arch", "resnet18", "--weights", "none", "--epochs", "3",
               "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--device", "cpu"]
    run, other = tmp_path / "run", tmp_path / "other"
    last = run / "resnet_18_last.pth"

    def hint(*options: str) -> str:
        result = runner.invoke(app, [*command, *options])
        assert result.exit_code == 130 and isinstance(result.exception, SystemExit), result.output
        return next(line for line in result.output.splitlines() if line.startswith("interrupted: "))

    assert hint("--out", str(run)).endswith(f"plus --resume {last}")
    again = hint("--out", str(run), "--resume", str(last))
    assert "run the same command again" in again and f"--resume {last} " in again
    assert load_checkpoint(last).epoch == 2  # The same command continues from the epoch it finished.
    moved = hint("--out", str(other), "--resume", str(last))
    assert f"with --resume {other / 'resnet_18_last.pth'} in place of --resume {last} " in moved
    before_training["interrupt"] = True  # Interrupted before an epoch of its own: its --resume is still the latest.
    assert "run the same command again" in hint("--out", str(tmp_path / "third"), "--resume", str(last))
