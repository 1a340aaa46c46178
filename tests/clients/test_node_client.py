"""`clients/node/classify.mjs`: model.audio.onnx in Node.js (onnxruntime-node from npm), no Python in the loop.
FSDD: CC BY-SA 4.0."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "node" / "classify.mjs"


def test_node_labels_equal_the_python_engine(node, audio_model, clips_at_model_rate, python_engine, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot audio")
    run = subprocess.run([node, str(SCRIPT), str(audio_model), *map(str, clips_at_model_rate), str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr  # One file could not be read: reported, the others classified.
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [Path(r["file"]).name for r in rows] == [p.name for p in clips_at_model_rate] + ["bad.wav"]
    assert rows[-1]["error"] and not rows[-1]["label"]
    for row in rows[:-1]:
        label, probabilities = python_engine[Path(row["file"]).name]
        assert row["label"] == label
        node_probabilities = [float(v) for k, v in row.items() if k.startswith("prob_")]
        assert np.abs(np.array(node_probabilities) - probabilities).max() < 1e-4


def test_node_resamples_any_rate_to_the_models_as_the_python_decoder_does(node, audio_model, clips_at_any_rate,
                                                                          python_engine_any_rate):
    """FSDD's own 8 kHz files and 44.1 / 48 kHz copies: resampled in Node by the client's band-limited filter,
    labelled as the Python engine labels the same files (its decoder resamples with soxr)."""
    run = subprocess.run([node, str(SCRIPT), str(audio_model), *map(str, clips_at_any_rate)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert len(rows) == len(clips_at_any_rate) and not any(r["error"] for r in rows)
    for row in rows:
        label, probabilities = python_engine_any_rate[Path(row["file"]).name]
        assert row["label"] == label, row["file"]
        node_probabilities = [float(v) for k, v in row.items() if k.startswith("prob_")]
        assert np.abs(np.array(node_probabilities) - probabilities).max() < 0.05, row["file"]


def test_node_usage_and_model_errors(node, tmp_path):
    usage = subprocess.run([node, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    not_ours = tmp_path / "x.onnx"
    not_ours.write_bytes(b"\x08\x07")
    wrong = subprocess.run([node, str(SCRIPT), str(not_ours), "a.wav"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "model.audio.onnx" in wrong.stderr and "Error:" not in wrong.stderr
