"""Choosing parity and calibration clips. Audio: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0)."""

from __future__ import annotations

import shutil

import pytest
import torch
from support import write_fsdd_manifest

from toolchain.audio.config import DEFAULT_CONFIG
from toolchain.errors import DatasetError, ParityError
from toolchain.export.clips import clips_from_parity_data, featurize_clips, select_clips
from toolchain.training.checkpoint import load_checkpoint, save_checkpoint


def test_default_is_val_files_labelled_from_training_data(checkpoint_with_training_data):
    ckpt = checkpoint_with_training_data
    selection = select_clips(ckpt, parity_samples=4, calibration_samples=5)
    assert len(selection.parity) == 4 and {str(c.path) for c in selection.parity} <= set(ckpt.val_files)
    digits = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
              "seven": "7", "eight": "8", "nine": "9"}
    assert all(digits[c.label] == c.path.name.split("_")[0] for c in selection.parity)
    # Calibration: training clips, never validation or parity clips.
    assert len(selection.calibration) == 5
    assert not {str(c.path) for c in selection.calibration} & set(ckpt.val_files)
    # Reproducible.
    assert select_clips(ckpt, parity_samples=4, calibration_samples=5) == selection


def test_variant_evaluation_extends_the_gate_clips(checkpoint_with_training_data, fsdd_dir):
    ckpt = checkpoint_with_training_data
    selection = select_clips(ckpt, parity_samples=3, calibration_samples=4, variant_samples=8)
    assert selection.evaluation[:3] == selection.parity and len(selection.evaluation) == 8
    # From --parity-data without training data in reach, calibration still avoids the evaluation clips.
    manifest = write_fsdd_manifest(fsdd_dir, ckpt.path.parent / "other.csv", speakers={"lucas"}, takes=range(1))
    raw = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    raw["train_args"] = {}
    bare = load_checkpoint(save_checkpoint(raw, ckpt.path.parent / "bare.pth"))
    selection = select_clips(bare, manifest, parity_samples=2, calibration_samples=3, variant_samples=100)
    assert len(selection.evaluation) == 7 and len(selection.calibration) == 3
    assert not {c.path for c in selection.calibration} & {c.path for c in selection.evaluation}


def test_missing_val_files_ask_for_parity_data(tiny_checkpoint, tmp_path):
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    raw["val_files"] = [str(tmp_path / "gone.wav")]
    ckpt = load_checkpoint(save_checkpoint(raw, tmp_path / "c.pth"))
    with pytest.raises(ParityError, match="--parity-data"):
        select_clips(ckpt)


def test_fsdd_folder_uses_its_labels_csv(fsdd_dir):
    clips = clips_from_parity_data(fsdd_dir)
    assert len(clips) == 3000 and all(c.label for c in clips) and all(c.path.is_file() for c in clips[:5])


def test_flat_folder_is_walked_unlabelled(fsdd_dir, tmp_path):
    for name in ("3_theo_0.wav", "4_theo_0.wav"):
        shutil.copy(fsdd_dir / "recordings" / name, tmp_path / name.upper())
    (tmp_path / "notes.txt").write_text("not audio")
    clips = clips_from_parity_data(tmp_path)
    assert sorted(c.path.name for c in clips) == ["3_THEO_0.WAV", "4_THEO_0.WAV"]
    assert all(c.label is None for c in clips)


def test_bad_parity_data_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        clips_from_parity_data(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="empty"):
        clips_from_parity_data(empty)


def test_featurize_skips_bad_files(fsdd_dir, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00" * 10)
    good = fsdd_dir / "recordings" / "5_lucas_0.wav"
    features, used, skipped = featurize_clips([bad, good], DEFAULT_CONFIG)
    assert features.shape == (1, *DEFAULT_CONFIG.input_shape) and [c.path for c in used] == [good]
    assert skipped[0][0] == str(bad) and skipped[0][1]
