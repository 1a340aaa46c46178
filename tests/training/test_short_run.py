"""A user's first run learns: 400 FSDD clips (5 speakers x 10 digits x 8 takes, one speaker held out by the
group-aware split), resnet18 from scratch with the default recipe and the default 5-s clips, 3 epochs, seed 42,
reaches a validation accuracy well above chance (0.1) on the unseen speaker: about 2 minutes on 2 cores.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import csv

import pytest

from toolchain.training.config import TrainConfig
from toolchain.training.train import train

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo")


@pytest.mark.slow
def test_three_epochs_on_400_clips_learn_well_above_chance(fsdd_dir, tmp_path):
    manifest = tmp_path / "clips.csv"
    with (fsdd_dir / "labels.csv").open(newline="") as f, manifest.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["filename", "label", "group"])
        rows = [r for r in csv.DictReader(f) if r["speaker"] in SPEAKERS and int(r["take"]) < 8]
        writer.writerows([str(fsdd_dir / r["filename"]), r["label"], r["speaker"]] for r in rows)
    assert len(rows) == 400
    history: list[dict] = []
    result = train(TrainConfig(data=str(manifest), out=str(tmp_path / "run"), arch="resnet18", weights="none",
                               epochs=3, seed=42, cache_dir=str(tmp_path / "cache"), num_workers=0),
                   on_epoch=history.append)
    assert len(history) == 3
    # Chance is 0.1. Augmentation at full strength from epoch 1 (shifts and masks that could erase a digit) stayed
    # at 0.09-0.16 here; the ramped, sound-bound recipe reached 0.40.
    assert result.best_val_acc >= 0.3, history
