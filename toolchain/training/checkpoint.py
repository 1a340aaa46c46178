"""Checkpoint format: a plain dict that loads with `torch.load(weights_only=True)`.

Keys (all plain types: str, int, float, bool, list, dict, tensors):
  format               "toolchain.checkpoint/1"
  state_dict           model weights
  arch                 "resnet18" .. "resnet152"
  classes              class names in LabelEncoder index order (sorted)
  feature_config       FeatureConfig.to_dict()
  feature_fingerprint  FeatureConfig.fingerprint
  epoch                last completed epoch (1-based)
  metrics              {"val_acc": ..., "val_loss": ..., ...} of that epoch
  train_args           the training arguments, plain types only
  val_files            absolute paths of the validation files (export's default parity clips)
  toolchain_version    version that wrote it
Optional, in `last` checkpoints only, for --resume: optimizer, scheduler, best_val_acc, best_epoch,
epochs_without_improvement, history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolchain import __version__
from toolchain.audio.config import FeatureConfig, check_reproducible
from toolchain.errors import CheckpointError, one_line
from toolchain.io import atomic_write
from toolchain.training.config import Arch, parse_arch
from toolchain.training.model import build_model, weights_mismatch

FORMAT = "toolchain.checkpoint/1"
REQUIRED_KEYS = ("format", "state_dict", "arch", "classes", "feature_config", "feature_fingerprint")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint, typed. `raw` keeps the whole dict (optimizer state etc. for --resume)."""

    path: Path
    arch: Arch
    classes: tuple[str, ...]
    feature_config: FeatureConfig
    state_dict: dict[str, torch.Tensor]
    epoch: int
    metrics: dict[str, float]
    train_args: dict[str, Any]
    val_files: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build_model(self) -> nn.Module:
        """The network with these weights, in eval mode, on CPU."""
        model = build_model(self.arch, self.num_classes, weights="none")
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:  # A tensor of the wrong shape inside an otherwise well-formed checkpoint.
            raise CheckpointError(f"checkpoint {self.path} has weights that do not fit {self.arch.value} "
                                  f"({one_line(exc, 200)}): it was edited or damaged; re-run training") from None
        return model.eval()


def make_payload(
    model: nn.Module,
    arch: Arch | str,
    classes: list[str],
    feature_config: FeatureConfig,
    *,
    epoch: int = 0,
    metrics: dict[str, float] | None = None,
    train_args: dict[str, Any] | None = None,
    val_files: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the checkpoint dict. Values must be plain types (checked on save by a weights_only reload)."""
    arch = parse_arch(arch.value if isinstance(arch, Arch) else arch)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "state_dict": state,
        "arch": arch.value,
        "classes": [str(c) for c in classes],
        "feature_config": feature_config.to_dict(),
        "feature_fingerprint": feature_config.fingerprint,
        "epoch": int(epoch),
        "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
        "train_args": dict(train_args or {}),
        "val_files": [str(f) for f in (val_files or [])],
        "toolchain_version": __version__,
        **extra,
    }


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, then rename): a killed run leaves the old file."""
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate one of our checkpoints (weights_only: no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the .pth written by `toolchain train`")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}): is it a toolchain .pth?") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a toolchain checkpoint (expected format {FORMAT})")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}: it is damaged; re-run training")
    arch, classes = parse_arch(raw["arch"]), tuple(raw["classes"])
    mismatch = weights_mismatch(arch, len(classes), raw["state_dict"]) if isinstance(raw["state_dict"], dict) else \
        "its state_dict is not a dict of tensors"
    if mismatch:
        raise CheckpointError(f"checkpoint {path} says {arch.value} with {len(classes)} classes but {mismatch}: it "
                              "was edited or damaged; use the .pth written by `toolchain train`")
    return Checkpoint(
        path=path,
        arch=arch,
        classes=classes,
        feature_config=check_reproducible(raw["feature_config"], raw["feature_fingerprint"]),
        state_dict=raw["state_dict"],
        epoch=int(raw.get("epoch", 0)),
        metrics=dict(raw.get("metrics", {})),
        train_args=dict(raw.get("train_args", {})),
        val_files=tuple(raw.get("val_files", [])),
        raw=raw,
    )
