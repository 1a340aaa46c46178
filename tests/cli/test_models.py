"""The model lifecycle through the CLI against a real `mlflow server`: a tracked training run, its export
registered and linked to it, promoted, and scored by alias; training that goes on when tracking cannot.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from support import assert_user_error, copy_clips, free_port, published_csvs
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.scoring.ledger import Ledger

runner = CliRunner()


def _train(manifest: Path, tmp_path: Path, run: Path, *extra: str):
    return runner.invoke(app, ["train", "--data", str(manifest), "--arch", "resnet18", "--weights", "none",
                               "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--out", str(run),
                               "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--device", "cpu",
                               *extra])


def test_a_tracked_run_is_registered_promoted_and_scored_by_alias(manifest, tmp_path, mlflow_server, fsdd_dir):
    from mlflow import MlflowClient

    run = tmp_path / "run"
    result = _train(manifest, tmp_path, run, "--tracking-uri", mlflow_server)
    assert result.exit_code == 0, result.output
    tracked = json.loads((run / "tracking.json").read_text())
    assert "mlflow run:" in result.output and tracked["run_id"] in result.output
    client = MlflowClient(mlflow_server)
    logged = client.get_run(tracked["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["arch"] == "resnet18" and logged.data.params["lr"] == "0.001"
    checkpoint = torch.load(run / "resnet_18_model.pth", weights_only=True)
    assert logged.data.tags["data_fingerprint"] == checkpoint["data_fingerprint"]
    assert [m.step for m in client.get_metric_history(tracked["run_id"], "val_acc")] == [1]
    artifacts = {a.path for folder in ("plots", "reports") for a in client.list_artifacts(tracked["run_id"], folder)}
    assert {"plots/training_curves.png", "plots/confusion_matrix.png", "reports/summary.json",
            "reports/metrics.csv"} <= artifacts

    exported = runner.invoke(app, ["export-onnx", "--checkpoint", str(run / "resnet_18_model.pth"),
                                   "--parity-samples", "4", "--variant-samples", "4", "--register", "cli-kws",
                                   "--tracking-uri", mlflow_server])
    assert exported.exit_code == 0, exported.output
    assert "models:/cli-kws/1" in exported.output
    version = client.get_model_version("cli-kws", "1")
    assert version.run_id == tracked["run_id"] and version.tags["training_run"] == tracked["run_id"]
    assert set(version.tags["files"].split(",")) == {"model.onnx", "parity.json", "model.audio.onnx",
                                                      "parity.audio.json"}

    listed = runner.invoke(app, ["models", "list", "--tracking-uri", mlflow_server])
    assert listed.exit_code == 0 and "cli-kws" in listed.output
    promoted = runner.invoke(app, ["models", "promote", "cli-kws", "1", "--tracking-uri", mlflow_server])
    assert promoted.exit_code == 0 and "models:/cli-kws@champion -> version 1 (was not set)" in promoted.output
    shown = runner.invoke(app, ["models", "show", "cli-kws", "--tracking-uri", mlflow_server])
    assert "champion" in shown.output and tracked["run_id"][:12] in shown.output, shown.output

    clips = copy_clips(fsdd_dir, tmp_path / "day", 0, 2)
    out = tmp_path / "out"
    scored = runner.invoke(app, ["score", "--model", "models:/cli-kws@champion", "--input", str(tmp_path / "day"),
                                 "--out", str(out), "--workers", "0"], env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert scored.exit_code == 0, scored.output
    assert "models:/cli-kws@champion is cli-kws/1" in scored.output
    [csv_path] = published_csvs(out / "day")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == clips and {r["model_version"] for r in rows} == {"cli-kws/1"}
    assert [r.model_version for r in Ledger.in_dir(out).runs()] == ["cli-kws/1"]


def test_training_goes_on_when_tracking_cannot_and_says_so_once(manifest, tmp_path):
    run = tmp_path / "run"
    result = _train(manifest, tmp_path, run, "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "tracking off" in line]
    assert len(said) == 1 and "does not answer" in said[0], result.output
    assert (run / "resnet_18_model.pth").is_file() and not (run / "tracking.json").exists()

    quiet = _train(manifest, tmp_path, tmp_path / "quiet", "--no-tracking")
    assert quiet.exit_code == 0 and "tracking" not in quiet.output and "mlflow" not in quiet.output, quiet.output
    assert not (tmp_path / "quiet" / "tracking.json").exists()


def test_registry_mistakes_are_one_line(tiny_checkpoint, tmp_path):
    result = runner.invoke(app, ["export-onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m"),
                                 "--register", "bad name"])
    assert_user_error(result, "name 'bad name' is not usable")
    assert not (tmp_path / "m").exists()  # Refused before the export's work.
    assert_user_error(runner.invoke(app, ["models", "promote", "nothing-here", "1"]), "nothing-here/1 does not exist")
    assert_user_error(runner.invoke(app, ["models", "rollback", "nothing-here"]), "nothing-here@champion is not set")
    assert_user_error(runner.invoke(app, ["models", "show", "x' OR name='y"]), "is not usable")
    assert_user_error(runner.invoke(app, ["score", "--model", "models:/x", "--input", str(tmp_path)]),
                      "is not models:/NAME@ALIAS")
    dead = f"http://127.0.0.1:{free_port()}"
    assert_user_error(runner.invoke(app, ["models", "list", "--tracking-uri", dead]), "does not answer")
