"""`predict`: class names from the checkpoint, its own feature config, an error row per bad file.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import CheckpointError, DatasetError
from toolchain.training.checkpoint import load_checkpoint
from toolchain.training.predict import predict
from toolchain.training.reports import prediction_columns

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _true_label(path: str) -> str:
    return DIGITS[int(Path(path).name.split("_")[0])]  # FSDD names: {digit}_{speaker}_{take}.wav


def test_folder_with_a_bad_file(trained_checkpoint, tmp_path):
    checkpoint = load_checkpoint(trained_checkpoint)
    folder = tmp_path / "incoming" / "deeper"
    folder.mkdir(parents=True)
    for i, clip in enumerate(checkpoint.val_files[:6]):
        shutil.copyfile(clip, folder / (Path(clip).stem + (".WAV" if i == 0 else ".wav")))
    (folder / "zz_bad.wav").write_bytes(b"\x00garbage, not a wav" * 10)
    out = predict(trained_checkpoint, tmp_path / "incoming", tmp_path / "out" / "pred.csv",
                  cache_dir=checkpoint.train_args["cache_dir"], num_workers=0)
    rows = _rows(out)
    assert list(rows[0]) == prediction_columns(checkpoint.classes)
    assert len(rows) == 7
    bad = [r for r in rows if r["error"]]
    assert [Path(r["file"]).name for r in bad] == ["zz_bad.wav"] and bad[0]["label"] == ""
    for row in rows:
        if row["error"]:
            continue
        assert row["label"] in checkpoint.classes  # Class names, not indices.
        probs = np.array([float(row[f"prob_{c}"]) for c in checkpoint.classes])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == checkpoint.classes[int(probs.argmax())]


def test_csv_input_reproduces_validation_accuracy(trained_checkpoint, tmp_path):
    """Predicting the held-out speaker's clips gives the accuracy training measured on them."""
    checkpoint = load_checkpoint(trained_checkpoint)
    manifest = tmp_path / "val.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label"])
        writer.writerows([p, _true_label(p)] for p in checkpoint.val_files)
    rows = _rows(predict(trained_checkpoint, manifest, tmp_path / "val_pred.csv",
                         cache_dir=checkpoint.train_args["cache_dir"], num_workers=0))
    assert [r["file"] for r in rows] == list(checkpoint.val_files)
    accuracy = np.mean([r["label"] == _true_label(r["file"]) for r in rows])
    # fp32 either way; only batch composition differs, which may flip at most a near-tie.
    assert accuracy == pytest.approx(checkpoint.metrics["val_acc"], abs=1.5 / len(rows))


def test_missing_inputs_are_clear_errors(trained_checkpoint, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        predict(trained_checkpoint, tmp_path / "nope", tmp_path / "p.csv")
    with pytest.raises(CheckpointError, match="does not exist"):
        predict(tmp_path / "none.pth", tmp_path, tmp_path / "p.csv")
