"""`--frontend graph`: the engine feeds model.audio.onnx windows of samples; results equal the Python front end's.
FSDD: CC BY-SA 4.0."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from support import copy_clips, read_rows

from toolchain.errors import ScoringError
from toolchain.inference.contract import variant_path
from toolchain.io import file_sha256
from toolchain.scoring.engine import load_model
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.folder import score_folder

PYTHON = EngineConfig(batch_size=8, decode_workers=1, intra_op_threads=2)
GRAPH = EngineConfig(batch_size=8, decode_workers=1, intra_op_threads=2, frontend="graph")


def test_graph_front_end_scores_like_the_python_one(onnx_model, fsdd_dir, tmp_path):
    folder = tmp_path / "mixed"
    copy_clips(fsdd_dir, folder, 100, 12)
    # A 14-s recording (several windows, each cut from the trimmed file without a second trim) at 8 kHz.
    clips = [sf.read(fsdd_dir / "recordings" / f"{d}_theo_40.wav", dtype="float32")[0] for d in range(10)]
    sf.write(folder / "long.wav", np.concatenate([np.concatenate([c, np.zeros(4000, np.float32)]) for c in clips]),
             8000)
    rows = {}
    for name, config in (("python", PYTHON), ("graph", GRAPH)):
        summary = score_folder(onnx_model, folder, tmp_path / name, config)
        rows[name] = {r["file"]: r for r in read_rows(summary.csv_path)}
    assert rows["python"].keys() == rows["graph"].keys() and len(rows["graph"]) == 13
    assert int(rows["graph"]["long.wav"]["windows"]) > 2
    audio_sha = file_sha256(variant_path(onnx_model, "audio"))
    for file, py in rows["python"].items():
        graph = rows["graph"][file]
        assert graph["label"] == py["label"] and graph["windows"] == py["windows"], file
        probs = [(float(py[k]), float(graph[k])) for k in py if k.startswith("prob_")]
        assert max(abs(a - b) for a, b in probs) < 1e-4, file
        assert graph["model_sha256"] == audio_sha  # The CSV names the file that ran.


def test_graph_front_end_needs_a_certified_audio_model(onnx_model, tmp_path):
    lonely = tmp_path / "model.onnx"
    shutil.copy(onnx_model, lonely)
    with pytest.raises(ScoringError, match="no model.audio.onnx beside model.onnx"):
        load_model(lonely, GRAPH)
    shutil.copy(variant_path(onnx_model, "audio"), variant_path(lonely, "audio"))
    with pytest.raises(ScoringError, match="parity.audio.json is missing"):
        load_model(lonely, GRAPH)
    (tmp_path / "parity.audio.json").write_text("[]")
    with pytest.raises(ScoringError, match="is not the audio report of model.audio.onnx"):
        load_model(lonely, GRAPH)
    with pytest.raises(ScoringError, match="drop --precision fp16"):
        load_model(onnx_model, EngineConfig(frontend="graph", precision="fp16"))
