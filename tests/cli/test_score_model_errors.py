"""`toolchain score` / `serve` / `watch` handed a path that is not a scoring model: one `error:` line naming it
and the fix, exit 2, no traceback, and refused before any ledger row (no ledger.sqlite at all).

The natural mistake is `model.audio.onnx`, the waveform-in model written beside model.onnx for Node and the
browser. FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from support import copy_clips
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.inference.contract import MODEL_NAME, variant_path

runner = CliRunner()
TOOLCHAIN = str(Path(sys.executable).with_name("toolchain"))  # The console script of this venv.
AUDIO_MODEL = "is the waveform-in model for Node and the browser; pass the model.onnx beside it"


def _audio_model(onnx_model: Path, tmp_path: Path) -> Path:
    return variant_path(onnx_model, "audio")  # Read-only here: nothing is written beside it.


def _folder(onnx_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "x.onnx"
    folder.mkdir()
    return folder


def _folder_holding_a_model(onnx_model: Path, tmp_path: Path) -> Path:
    folder = _folder(onnx_model, tmp_path)
    shutil.copy(onnx_model, folder / MODEL_NAME)
    return folder


def _foreign_inputs(onnx_model: Path, tmp_path: Path) -> Path:
    """Our metadata on a graph whose input is not `features` (a hand-edited or foreign export)."""
    proto = onnx.load(str(onnx_model))
    old = proto.graph.input[0].name
    proto.graph.input[0].name = "input"
    for node in proto.graph.node:
        node.input[:] = ["input" if name == old else name for name in node.input]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    return tmp_path / "foreign.onnx"


def _no_metadata(onnx_model: Path, tmp_path: Path) -> Path:
    proto = onnx.load(str(onnx_model))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    return tmp_path / "bare.onnx"


CASES = {
    "audio-model": (_audio_model, [], AUDIO_MODEL),
    "audio-model-graph-frontend": (_audio_model, ["--frontend", "graph"], AUDIO_MODEL),
    "folder": (_folder, [], "is a directory, not an ONNX file: pass the .onnx file written by"),
    "folder-holding-a-model": (_folder_holding_a_model, [], "is a directory, not an ONNX file: pass {model}/model.onnx"),
    "foreign-inputs": (_foreign_inputs, [], "has inputs ['input']"),
    "no-metadata": (_no_metadata, [], "has no toolchain metadata"),
}


def assert_refused(result, model: Path, message: str, out: Path) -> None:
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(model) in lines[0] and message.format(model=model) in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (out / "ledger.sqlite").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_score_refuses_what_is_not_a_scoring_model_before_the_ledger(onnx_model, fsdd_dir, tmp_path, case):
    make, extra, message = CASES[case]
    model = make(onnx_model, tmp_path)
    copy_clips(fsdd_dir, tmp_path / "in" / "day1", 0, 2)
    out = tmp_path / "out"
    result = runner.invoke(app, ["score", "--model", str(model), "--input", str(tmp_path / "in" / "day1"), "--out",
                                 str(out), "--workers", "0", "--threads", "1", *extra])
    assert_refused(result, model, message, out)


@pytest.mark.parametrize("case", ["audio-model", "folder"])
def test_serve_and_watch_refuse_it_before_the_ledger(onnx_model, tmp_path, case):
    make, _, message = CASES[case]
    model = make(onnx_model, tmp_path)
    (tmp_path / "inbox").mkdir()
    out = tmp_path / "out"
    serve = runner.invoke(app, ["serve", "--model", str(model), "--output-dir", str(out), "--inbox",
                                str(tmp_path / "inbox")])
    assert_refused(serve, model, message, out)
    watch = runner.invoke(app, ["watch", "--model", str(model), "--output-dir", str(out), "--inbox",
                                str(tmp_path / "inbox")], env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert_refused(watch, model, message, out)


def test_the_console_script_refuses_the_audio_model_in_one_line(onnx_model, fsdd_dir, tmp_path):
    model = variant_path(onnx_model, "audio")
    copy_clips(fsdd_dir, tmp_path / "in", 0, 2)
    out = tmp_path / "out"
    proc = subprocess.run([TOOLCHAIN, "score", "--model", str(model), "--input", str(tmp_path / "in"), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {model} {AUDIO_MODEL} (scoring runs this graph from there with "
                                        "--frontend graph)"]
    assert not (out / "ledger.sqlite").exists()
