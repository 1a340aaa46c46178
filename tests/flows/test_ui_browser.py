"""the Prefect UI shows our flow run and its artifact, checked in a real headless Chromium.

Needs Debian's `chromium` (`.ci/run` installs it; by hand: `apt-get install -y chromium`) and the `playwright`
Python package (a dev dependency; Playwright's own browser download is never used). Without Chromium the test
skips on a workstation and fails under CI=true, so CI can never go green without it. Alone:

    .venv/bin/python -m pytest -m browser
    # MODEL=path.onnx skips the suite's training fixture and uses that model instead.

Starts `prefect server start` on loopback (the `prefect_env` fixture of test_serve_e2e), runs `python -m flows`
against it, then opens the flow run's page and the artifact's page and waits for their names to render.
Screenshots: artifacts/ui_flow_run.png, artifacts/ui_artifact.png.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import CHROMIUM_ARGS, copy_clips

from toolchain.scoring.ledger import Ledger

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts"
RENDER_TIMEOUT_MS = 120_000  # The UI is a single-page app: first load compiles a lot of JS on a busy box.

pytestmark = pytest.mark.browser


def _artifact_id(env: dict[str, str], key: str) -> str:
    """The latest artifact with `key`, through the server's REST API."""
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}/artifacts/filter", method="POST",
                                     data=json.dumps({"artifacts": {"key": {"any_": [key]}}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)[-1]["id"]


def test_flow_run_and_artifact_show_in_the_ui(chromium, prefect_env, ui_model, fsdd_dir, tmp_path):
    from playwright import sync_api
    env, out = prefect_env, tmp_path / "out"
    folder = tmp_path / "ui-day"
    copy_clips(fsdd_dir, folder, 40, 3)
    run = subprocess.run([sys.executable, "-m", "flows", "--model", str(ui_model), "--output-dir", str(out),
                          "--folder", str(folder)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    [record] = Ledger.in_dir(out).runs()
    assert record.state == "completed" and record.flow_run_id

    ui = env["PREFECT_API_URL"].removesuffix("/api")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = browser.new_page()
            page.goto(f"{ui}/runs/flow-run/{record.flow_run_id}")
            page.get_by_text("score-ui-day").first.wait_for(timeout=RENDER_TIMEOUT_MS)  # The run's name.
            page.get_by_text("Completed").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.screenshot(path=str(SCREENSHOTS / "ui_flow_run.png"), full_page=True)

            page.goto(f"{ui}/artifacts/key/predictions-ui-day")
            page.get_by_text("predictions-ui-day").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SCREENSHOTS / "ui_artifact.png"), full_page=True)
            page.get_by_text("ui-day: 3 files").first.wait_for(timeout=RENDER_TIMEOUT_MS)  # The table's description.
            page.get_by_text("score-ui-day").first.wait_for(timeout=RENDER_TIMEOUT_MS)  # Linked to our flow run.

            page.goto(f"{ui}/artifacts/artifact/{_artifact_id(env, 'health-ui-day')}")  # The report as markdown.
            page.get_by_text("Health of").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.get_by_text("insufficient").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.screenshot(path=str(SCREENSHOTS / "ui_health.png"), full_page=True)
        finally:
            browser.close()
    assert (SCREENSHOTS / "ui_flow_run.png").stat().st_size > 0
