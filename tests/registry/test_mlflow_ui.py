"""The MLflow UI shows what the toolchain tracks and registers, checked in a real headless Chromium: a tracked
training run (its metrics) in its experiment, and the registered model's versions with their alias.

Needs Debian's `chromium` (`.ci/run` installs it); without it the test skips on a workstation and fails under
CI=true. Screenshots: artifacts/mlflow_runs.png, artifacts/mlflow_model.png."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CHROMIUM_ARGS, certified_bundle

from toolchain.registry.registry import promote, register_bundle
from toolchain.registry.tracking import Tracker

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts"
RENDER_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.browser


def test_runs_and_model_versions_show_in_the_mlflow_ui(chromium, mlflow_server, tiny_onnx, tmp_path):
    from playwright import sync_api

    tracker = Tracker(mlflow_server, experiment="ui-experiment")
    run_dir = tmp_path / "ui-training-run"
    run_dir.mkdir()
    tracker.start(run_dir, {"arch": "resnet18", "lr": 0.001}, {"data_fingerprint": "f" * 16})
    for epoch in (1, 2, 3):
        tracker.epoch({"epoch": epoch, "val_acc": 0.3 * epoch, "train_loss": 2.0 / epoch})
    tracker.finish({}, {"best_val_acc": 0.9})
    assert tracker.enabled and tracker.run_id
    bundle = certified_bundle(tiny_onnx, run_dir)  # Registered from the run folder: linked to the run.
    info = register_bundle(bundle, "ui-kws", mlflow_server)
    promote("ui-kws", info.version, uri=mlflow_server)
    assert info.run_id == tracker.run_id

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            experiment = tracker.client.get_experiment_by_name("ui-experiment").experiment_id
            page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs")
            page.get_by_text("ui-training-run").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.screenshot(path=str(SCREENSHOTS / "mlflow_runs.png"), full_page=True)

            page.goto(f"{mlflow_server}/#/models/ui-kws")
            page.get_by_text("Version 1").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.get_by_text("champion").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.screenshot(path=str(SCREENSHOTS / "mlflow_model.png"), full_page=True)

            page.goto(f"{mlflow_server}/#/models/ui-kws/versions/1")
            page.get_by_text(info.sha256).first.wait_for(timeout=RENDER_TIMEOUT_MS)  # Its tags: the sha256.
        finally:
            browser.close()
    assert (SCREENSHOTS / "mlflow_model.png").stat().st_size > 0
