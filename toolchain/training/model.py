"""The classifier: a torchvision ResNet whose `fc` is replaced by a Linear to the number of classes.

Pretrained weights are data: torchvision's `IMAGENET1K_V1` entry names the file, and torchvision's loader looks
for it in `$TORCH_HOME/hub/checkpoints/` before trying the network. Our machines have no network, so a missing
file ends in `WeightsUnavailableError` naming the exact path and the `--weights none` way out.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import CheckpointError, WeightsUnavailableError
from toolchain.training.config import Arch, parse_arch

# torchvision's ResNets: residual blocks per stage, and whether they are bottleneck blocks (conv1-3, 4x wider out).
LAYOUTS = {
    Arch.resnet18: ((2, 2, 2, 2), False), Arch.resnet34: ((3, 4, 6, 3), False),
    Arch.resnet50: ((3, 4, 6, 3), True), Arch.resnet101: ((3, 4, 23, 3), True), Arch.resnet152: ((3, 8, 36, 3), True),
}


def weights_mismatch(arch: Arch, num_classes: int, state: dict[str, torch.Tensor]) -> str:
    """"" when `state` has the shape of `arch` with `num_classes` outputs, else what differs (one line).

    Read off the state dict's keys and the classifier's shape, without building the network.
    """
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    bottleneck = any(k.endswith(".conv3.weight") for k in state)
    found = next((a for a, layout in LAYOUTS.items() if layout == (blocks, bottleneck)), None)
    if found is not arch:
        return (f"its weights are those of {found.value if found else f'no ResNet we know (blocks {blocks})'}, "
                f"not {arch.value}")
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2 or fc.shape[0] != num_classes:
        shape = "no fc.weight" if fc is None else f"fc.weight of shape {tuple(fc.shape)}"
        return f"it lists {num_classes} classes but has {shape}"
    return ""


def _torchvision_entry(arch: Arch):
    from torchvision import models

    builder = getattr(models, arch.value)
    weights_enum = models.get_model_weights(builder)
    return builder, weights_enum.IMAGENET1K_V1


def imagenet_weights_path(arch: Arch) -> Path:
    """Where torchvision looks for the IMAGENET1K_V1 file (e.g. `.../resnet152-394f9c45.pth`)."""
    _, weights = _torchvision_entry(arch)
    filename = weights.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_imagenet_state_dict(arch: Arch) -> dict[str, torch.Tensor]:
    _, weights = _torchvision_entry(arch)
    path = imagenet_weights_path(arch)
    try:
        # Real torchvision loading: reads the hub cache, downloads only when the file is absent.
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # URLError offline, RuntimeError for a corrupt file, ...
        if path.exists():
            raise WeightsUnavailableError(
                f"ImageNet weights file {path} is unreadable ({type(exc).__name__}: {exc}); replace it, "
                "or train from scratch with --weights none"
            ) from exc
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch.value} are not cached and cannot be downloaded offline: place "
            f"{path.name} at {path} (set TORCH_HOME to move the cache), pass --weights PATH, "
            "or train from scratch with --weights none"
        ) from exc


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist: pass an existing .pth or --weights none")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"weights file {path} is not a readable state dict: {exc}") from exc
    if isinstance(data, dict) and "state_dict" in data:  # One of our own checkpoints.
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise WeightsUnavailableError(f"weights file {path} holds a {type(data).__name__}, not a state dict")
    return data


def build_model(arch: Arch | str, num_classes: int, weights: str | Path | None = "none",
                zero_init_residual: bool = False) -> nn.Module:
    """ResNet with `num_classes` outputs.

    `weights`: "imagenet" (torchvision IMAGENET1K_V1, offline cache), "none" (random init) or a path to a state
    dict of the same arch (ImageNet-shaped or one of our checkpoints; its `fc` is replaced anyway).
    Weights load into the 1000-class network first, then `fc` is replaced. `zero_init_residual` (random init
    only; loaded weights replace it): each residual branch starts as identity, which lets a 152-layer net train.
    """
    arch = parse_arch(arch.value if isinstance(arch, Arch) else str(arch))
    if num_classes < 2:
        raise CheckpointError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
    builder, _ = _torchvision_entry(arch)
    model = builder(weights=None, zero_init_residual=zero_init_residual)
    choice = "none" if weights is None else str(weights)
    if choice == "imagenet":
        state = _load_imagenet_state_dict(arch)
    elif choice == "none":
        state = None
    else:
        state = _load_state_dict_file(Path(os.path.expanduser(choice)))
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise WeightsUnavailableError(
                f"weights {choice} do not fit {arch.value}: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                "pass weights of the same --arch"
            )
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
