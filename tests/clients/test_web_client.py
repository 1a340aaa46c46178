"""`clients/web/`: model.audio.onnx in headless Chromium (onnxruntime-web, Web Audio decoding), served from
127.0.0.1; labels equal the Python engine's. Screenshot: artifacts/web_client.png. FSDD: CC BY-SA 4.0."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
from support import CHROMIUM_ARGS

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
SCREENSHOT = Path(__file__).resolve().parents[2] / "artifacts" / "web_client.png"
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.browser


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def site(tmp_path, audio_model):
    """A static server on 127.0.0.1 over a folder holding the clients and the model."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "clients").symlink_to(CLIENTS)
    (root / "model.audio.onnx").symlink_to(audio_model)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_browser_labels_equal_the_python_engine(chromium, node, site, clips_at_model_rate, python_engine, tmp_path,
                                                clips_at_any_rate, python_engine_any_rate):
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 800})
            page.goto(f"{site}/clients/web/index.html?model=/model.audio.onnx")
            page.wait_for_selector("body[data-state=ready]", timeout=TIMEOUT_MS)
            assert page.text_content("#model").count("sha256") == 1
            for clip in clips_at_model_rate:
                page.set_input_files("#audio", str(clip))
                page.wait_for_selector(f'body[data-state=done][data-file="{clip.name}"]', timeout=TIMEOUT_MS)
                assert page.get_attribute("body", "data-label") == python_engine[clip.name][0], clip.name
                assert page.locator("#bars .row").count() == len(python_engine[clip.name][1])
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            broken = tmp_path / "broken.wav"
            broken.write_bytes(b"not audio at all")
            page.set_input_files("#audio", str(broken))
            page.wait_for_selector("body[data-state=error]", timeout=TIMEOUT_MS)
            assert "broken.wav" in page.text_content("#status")
            # The failed file leaves no earlier result on screen.
            assert page.text_content("#label") == "" and page.locator("#bars .row").count() == 0
            assert page.get_attribute("body", "data-label") is None
            # A WAV at another rate (FSDD's 8 kHz, a 48 kHz copy) is resampled as the Node client does.
            for clip in [c for c in clips_at_any_rate if c.stem.count("_") == 2][:1] + [
                    c for c in clips_at_any_rate if c.stem.endswith("_48000")][:1]:
                page.set_input_files("#audio", str(clip))
                page.wait_for_selector(f'body[data-state=done][data-file="{clip.name}"]', timeout=TIMEOUT_MS)
                assert page.get_attribute("body", "data-label") == python_engine_any_rate[clip.name][0], clip.name
        finally:
            browser.close()
