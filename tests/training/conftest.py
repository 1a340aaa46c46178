"""Fixtures for tests/training/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import fsdd_files, write_fsdd_manifest

from toolchain.training.config import TrainConfig
from toolchain.training.train import train


@pytest.fixture
def class_tree(tmp_path, fsdd_dir) -> Path:
    """data/<label>/... with nested folders, an upper-case extension, a hidden file and a non-audio file."""
    root = tmp_path / "data"
    for label in ("one", "two"):
        for i, src in enumerate(fsdd_files(fsdd_dir, label, 3)):
            target = root / label / ("nested" if i == 2 else "") / (src.stem + (".WAV" if i == 1 else ".wav"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    (root / "one" / ".hidden.wav").write_bytes(b"x")
    (root / "one" / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fsdd_dir) -> dict:
    """30 clips (3 speakers x 10 digits x take 0): seconds per epoch, enough to exercise resume."""
    root = tmp_path_factory.mktemp("tiny_train")
    manifest = write_fsdd_manifest(fsdd_dir, root / "tiny.csv", speakers={"george", "jackson", "lucas"},
                                   takes=range(1))
    return dict(data=str(manifest), arch="resnet18", weights="none", lr=1e-3, batch_size=8,
                cache_dir=str(root / "cache"), num_workers=0)


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """An unbroken 3-epoch run, plus a copy of its folder's checkpoints as they were after epoch 2."""
    root = tmp_path_factory.mktemp("tiny_runs")
    snapshot = root / "after_epoch_2"

    def keep_epoch_2(row):
        if row["epoch"] == 2:
            shutil.copytree(root / "straight", snapshot, ignore=shutil.ignore_patterns("*.png", "*.csv"))

    straight = train(TrainConfig(**tiny, epochs=3, out=str(root / "straight")), on_epoch=keep_epoch_2)
    return straight, snapshot
