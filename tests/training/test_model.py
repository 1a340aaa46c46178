"""Model construction and pretrained-weight loading, offline: the cache file is a state dict written here."""

from __future__ import annotations

import pytest
import torch

from toolchain.errors import CheckpointError, WeightsUnavailableError
from toolchain.training.config import Arch, parse_arch
from toolchain.training.model import build_model, imagenet_weights_path


def test_imagenet_path_is_torchvisions_v1_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_weights_path(Arch.resnet152)
    assert path == tmp_path / "hub" / "checkpoints" / "resnet152-394f9c45.pth"


def test_imagenet_weights_load_from_the_offline_cache_then_fc_is_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = build_model("resnet18", 1000, weights="none")
    reference.fc = torch.nn.Linear(512, 1000)  # An ImageNet-shaped state dict, as torchvision ships it.
    target = imagenet_weights_path(Arch.resnet18)
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)

    model = build_model("resnet18", 7, weights="imagenet")
    assert model.fc.out_features == 7
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_missing_imagenet_weights_name_the_file_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet152", 5, weights="imagenet")
    message = str(info.value)
    assert "resnet152-394f9c45.pth" in message and "--weights none" in message
    assert not imagenet_weights_path(Arch.resnet152).exists()


def test_corrupt_cached_weights_are_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = imagenet_weights_path(Arch.resnet18)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a torch file")
    with pytest.raises(WeightsUnavailableError, match="unreadable"):
        build_model("resnet18", 3, weights="imagenet")


def test_weights_from_a_path_and_mismatched_arch(tmp_path):
    source = build_model("resnet18", 4, weights="none")
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model = build_model("resnet18", 9, weights=tmp_path / "r18.pth")
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 9
    with pytest.raises(WeightsUnavailableError, match="do not fit resnet34"):
        build_model("resnet34", 9, weights=tmp_path / "r18.pth")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("resnet18", 9, weights=tmp_path / "absent.pth")


def test_unknown_arch_lists_the_allowed_ones():
    with pytest.raises(CheckpointError, match="resnet18, resnet34, resnet50, resnet101, resnet152"):
        parse_arch("vgg16")
    with pytest.raises(CheckpointError, match="at least 2 classes"):
        build_model("resnet18", 1)
