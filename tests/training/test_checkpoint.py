"""Checkpoint format: plain dict, weights_only round trip, the real default ResNet152 included."""

from __future__ import annotations

import os
import re

import pytest
import torch

from toolchain.audio.config import DEFAULT_CONFIG
from toolchain.errors import CheckpointError, FeatureConfigError
from toolchain.training.checkpoint import load_checkpoint, make_payload, save_checkpoint
from toolchain.training.config import best_checkpoint_name
from toolchain.training.model import build_model

CLASSES = ["bird", "car", "dog"]


def test_names_follow_the_seed():
    assert best_checkpoint_name("resnet152") == "resnet_152_model.pth"
    assert best_checkpoint_name("resnet18") == "resnet_18_model.pth"


def test_resnet152_trains_a_step_and_round_trips_weights_only(tmp_path):
    """The real default model: one AdamW step on CPU, save, reload with weights_only, same outputs."""
    torch.manual_seed(0)
    model = build_model("resnet152", len(CLASSES), weights="none")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(2, *DEFAULT_CONFIG.input_shape)
    before = model.fc.weight.detach().clone()
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(model(x), torch.tensor([0, 2]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.fc.weight)

    payload = make_payload(model, "resnet152", CLASSES, DEFAULT_CONFIG, epoch=1, metrics={"val_acc": 0.5},
                           train_args={"lr": 1e-4, "data": "/data/x.csv"}, val_files=["/data/a.wav"])
    path = save_checkpoint(payload, tmp_path / best_checkpoint_name("resnet152"))
    raw = torch.load(path, weights_only=True)  # Plain types only, or this raises.
    assert raw["arch"] == "resnet152" and raw["classes"] == CLASSES

    ckpt = load_checkpoint(path)
    assert ckpt.feature_config == DEFAULT_CONFIG and ckpt.epoch == 1 and ckpt.metrics["val_acc"] == 0.5
    model.eval()
    with torch.no_grad():
        assert torch.allclose(ckpt.build_model()(x), model(x), rtol=1e-5, atol=1e-3)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model = build_model("resnet18", 3)
    save_checkpoint(make_payload(model, "resnet18", CLASSES, DEFAULT_CONFIG), tmp_path / "a.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pth"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.pth").stat().st_mode & 0o777 == 0o666 & ~umask


def test_foreign_or_damaged_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a toolchain checkpoint"):
        load_checkpoint(tmp_path / "other.pth")
    payload = make_payload(build_model("resnet18", 3), "resnet18", CLASSES, DEFAULT_CONFIG)
    payload["feature_fingerprint"] = "deadbeefdeadbeef"
    save_checkpoint(payload, tmp_path / "drift.pth")
    with pytest.raises(FeatureConfigError, match="deadbeefdeadbeef"):
        load_checkpoint(tmp_path / "drift.pth")


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw.update(arch="resnet34"), "weights are those of resnet18, not resnet34"),
    (lambda raw: raw.update(classes=raw["classes"][:3]), "lists 3 classes but has fc.weight of shape (10, 512)"),
    (lambda raw: raw["state_dict"].update({"conv1.weight": torch.zeros(64, 3, 3, 3)}), "do not fit resnet18"),
])
def test_weights_that_do_not_fit_the_declared_arch_or_classes_are_refused(tiny_checkpoint, tmp_path, edit, message):
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    edit(raw)
    path = save_checkpoint(raw, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path).build_model()
