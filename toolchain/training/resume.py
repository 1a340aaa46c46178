"""`--resume`: the last checkpoint checked against this run, the state it carries restored, its best carried along.

A resumed run continues the checkpoint's best-so-far and early-stopping state (`StopState`). On new data
(`resume_with_new_data`) the carried best score was measured on the checkpoint's validation split; `remeasure_best`
measures the best checkpoint on this run's split instead, so new epochs are compared on the data they are measured on.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolchain.errors import TrainingError
from toolchain.progress import ProgressReporter
from toolchain.training.checkpoint import Checkpoint, load_checkpoint
from toolchain.training.config import TrainConfig, last_checkpoint_name
from toolchain.training.epochs import evaluate
from toolchain.training.reports import class_metrics
from toolchain.training.runtime import Runtime


@dataclass
class StopState:
    """Best-so-far and early-stopping state; travels in the last checkpoint (these key names) for --resume."""

    best_val_acc: float = -1.0  # Val accuracy of the best epoch.
    best_epoch: int = 0
    best_score: float = -1.0  # The best epoch's `select_on` value (checkpoints before it: its accuracy).
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def check_resume(path: Path, config: TrainConfig, classes: list[str], fingerprint: str) -> Checkpoint:
    """The last checkpoint, checked to fit this run (same arch, classes, features, split settings and data)."""
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt.raw:
        raise TrainingError(f"{path} has no optimizer state: resume from {last_checkpoint_name(ckpt.arch)}")
    if ckpt.arch.value != config.arch:
        raise TrainingError(f"{path} is a {ckpt.arch.value} checkpoint but --arch is {config.arch}: pass "
                            f"--arch {ckpt.arch.value}")
    if list(ckpt.classes) != classes:
        raise TrainingError(f"{path} was trained on classes {list(ckpt.classes)}, the data has {classes}: resume "
                            "with the same --data")
    if ckpt.feature_config != config.feature_config:
        raise TrainingError(f"{path} used another feature config: resume with the toolchain that made it")
    for name in ("seed", "val_fraction"):
        earlier = ckpt.train_args.get(name)
        if earlier is not None and earlier != getattr(config, name) and not config.resume_with_new_data:
            raise TrainingError(f"{path} was trained with --{name.replace('_', '-')} {earlier}, this run has "
                                f"{getattr(config, name)}: another split would validate on trained clips; pass "
                                f"--{name.replace('_', '-')} {earlier}")
    recorded = ckpt.raw.get("data_fingerprint")
    if recorded is not None and recorded != fingerprint and not config.resume_with_new_data:
        raise TrainingError(
            f"{path} was trained on other data than --data {config.data} (content fingerprint {recorded[:12]} != "
            f"{fingerprint[:12]}): resume with the same data, or pass --resume-with-new-data to continue on this "
            "data (the checkpoint's validation files are then kept out of training)")
    return ckpt


def carried_state(raw: dict[str, Any]) -> StopState:
    """The best-so-far and early-stopping state a last checkpoint carries."""
    return StopState(best_val_acc=float(raw["best_val_acc"]), best_epoch=int(raw["best_epoch"]),
                     epochs_without_improvement=int(raw["epochs_without_improvement"]),
                     history=list(raw["history"]), best_score=float(raw.get("best_score", raw["best_val_acc"])))


def carry_best(resume_path: Path, run_dir: Path, name: str) -> bool:
    """Resuming into another folder brings the earlier best checkpoint along. False when there is none."""
    source, target = resume_path.parent / name, run_dir / name
    if source.resolve() != target.resolve() and source.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target.is_file()


def remeasure_best(
    state: StopState, best_path: Path, model: nn.Module, val_loader, criterion: nn.Module, runtime: Runtime,
    progress: ProgressReporter, select_on: str, scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
) -> str:
    """Replace the carried best score, measured on the checkpoint's validation split, by the best checkpoint's
    score on this run's `val_loader`; returns the note that says so.

    `model` (the resumed one, left untouched) gives the architecture and device. The stall count and the plateau
    scheduler's reference restart too: both counted comparisons made on the old split.
    """
    best = copy.deepcopy(model)
    best.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"])
    val = evaluate(best, val_loader, criterion, runtime, progress, "best checkpoint on the new val split")
    quality = class_metrics(val.targets, val.predictions, val.probabilities.shape[1])
    old_acc = state.best_val_acc
    state.best_val_acc, state.best_score, state.epochs_without_improvement = val.accuracy, quality[select_on], 0
    scheduler.best, scheduler.num_bad_epochs = state.best_score, 0
    return (f"new data: the best checkpoint (epoch {state.best_epoch}) re-measured on the new validation split: "
            f"val accuracy {val.accuracy:.3f} (was {old_acc:.3f} on the checkpoint's), macro-F1 "
            f"{quality['macro_f1']:.3f}; later epochs must beat its {select_on} there to replace it")
