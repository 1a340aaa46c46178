"""One pass over a DataLoader: `train_one_epoch` (optimizer steps) and `evaluate` (no grad, probabilities).

Batches are images (B, 3, n_mels, frames) float32 and targets (B,) int64 (toolchain.training.prepared.loader_for).
On CUDA they run under autocast in channels-last memory format; on CPU in fp32, or bf16 autocast when asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from toolchain.inference.predictions import Aggregation, aggregate
from toolchain.progress import ProgressReporter
from toolchain.training.augment import NONE as NO_AUGMENTATION
from toolchain.training.augment import Augmentation, augment_batch
from toolchain.training.runtime import Runtime


@dataclass(frozen=True)
class Evaluation:
    """An eval pass: mean loss, accuracy, softmax probabilities (N, classes) and targets (N,), per file; and the
    same per window (`window_*`: (W, classes), (W,), and the file of each window), what health references need."""

    loss: float
    accuracy: float
    probabilities: np.ndarray
    targets: np.ndarray
    window_probabilities: np.ndarray | None = None
    window_targets: np.ndarray | None = None
    window_files: np.ndarray | None = None

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@dataclass(frozen=True)
class EpochStats:
    """A training pass: mean loss, accuracy, and how much of its wall time went to waiting for batches."""

    loss: float
    accuracy: float
    seconds: float
    data_seconds: float  # Time blocked on the loader (cache reads, stacking, host->device copy).

    @property
    def data_share(self) -> float:
        return self.data_seconds / self.seconds if self.seconds > 0 else 0.0


def _batches(loader, runtime: Runtime):
    for images, targets in loader:
        images = images.to(runtime.device, non_blocking=True).contiguous(memory_format=runtime.memory_format)
        yield images, targets.to(runtime.device, non_blocking=True)


def train_one_epoch(
    model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime,
    scaler: torch.amp.GradScaler, progress: ProgressReporter, description: str = "train",
    augmentation: Augmentation = NO_AUGMENTATION, num_classes: int = 0, on_step: Callable[[], None] | None = None,
) -> EpochStats:
    """One pass over `loader` (images (B, 3, n_mels, frames), targets (B,)); with an active `augmentation` the
    batches are augmented and the loss is taken against soft (mixed) targets. Accuracy counts the clean labels.
    `on_step` runs after every optimizer step (the weight average's update)."""
    model.train()
    total_loss, correct, seen, data_seconds = 0.0, 0, 0, 0.0
    progress.start("train", description, total=len(loader))
    started = waiting = time.perf_counter()
    for images, targets in _batches(loader, runtime):
        data_seconds += time.perf_counter() - waiting
        optimizer.zero_grad(set_to_none=True)
        goal = targets
        if augmentation.active:
            images, goal = augment_batch(images, targets, num_classes, augmentation)
        with runtime.autocast():
            logits = model(images)
            loss = criterion(logits, goal)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if on_step is not None:
            on_step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(dim=1) == targets).sum().item()
        seen += len(targets)
        progress.advance("train", description=f"{description} loss {total_loss / seen:.3f} acc {correct / seen:.3f}")
        waiting = time.perf_counter()  # .item() above synchronized the device: the step is over.
    progress.finish("train")
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1), time.perf_counter() - started, data_seconds)


def weight_average(model: nn.Module, half_life_epochs: float, steps_per_epoch: int) -> nn.Module | None:
    """An exponential moving average of `model`'s weights and buffers (torch's AveragedModel, as torchvision's
    reference recipes use), updated after every step with the decay that halves a step's weight in
    `half_life_epochs` epochs; None when the half-life is 0 (off)."""
    if half_life_epochs <= 0:
        return None
    decay = 0.5 ** (1.0 / max(half_life_epochs * steps_per_epoch, 1.0))
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, loader, runtime: Runtime, progress: ProgressReporter, max_batches: int,
    description: str = "batchnorm statistics",
) -> None:
    """Recompute BatchNorm running statistics with the current weights (a cumulative average over the batches).

    The running averages (momentum 0.1) trail weights that are still moving: trained from scratch on a small set,
    a ResNet can reach 100 % train accuracy while its eval-mode predictions stay at chance. Forward passes in train
    mode, without gradients, over up to `max_batches` training batches make eval mode match the weights.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or max_batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # Cumulative moving average: every batch weighs the same.
    model.train()
    total = min(len(loader), max_batches)
    progress.start("bn", description, total=total)
    for i, (images, _) in enumerate(_batches(loader, runtime)):
        if i >= total:
            break
        with runtime.autocast():
            model(images)
        progress.advance("bn")
    progress.finish("bn")
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, criterion: nn.Module, runtime: Runtime, progress: ProgressReporter,
    description: str = "val", aggregation: Aggregation = Aggregation.mean,
) -> Evaluation:
    """Eval-mode pass in loader order: mean loss, accuracy, float32 softmax probabilities.

    When the loader's dataset has several windows per file (`file_index`), probabilities and accuracy are per
    file, the windows' probabilities aggregated by `aggregation` as scoring does (the loss stays per window): the
    accuracy a run reports is the accuracy scoring delivers.
    """
    model.eval()
    total_loss, probs, targets_all = 0.0, [], []
    progress.start("eval", description, total=len(loader))
    for images, targets in _batches(loader, runtime):
        with runtime.autocast():
            logits = model(images)
        logits = logits.float()
        total_loss += criterion(logits, targets).item() * len(targets)
        probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        targets_all.append(targets.cpu().numpy())
        progress.advance("eval")
    progress.finish("eval")
    probabilities = np.concatenate(probs) if probs else np.zeros((0, 0), dtype=np.float32)
    targets_np = np.concatenate(targets_all) if targets_all else np.zeros(0, dtype=np.int64)
    loss = total_loss / max(len(targets_np), 1)  # Per window: before the windows become files.
    file_index = getattr(loader.dataset, "file_index", None)
    file_index = np.asarray(file_index) if file_index is not None else None
    windows = (probabilities, targets_np, file_index if file_index is not None else np.arange(len(targets_np)))
    if file_index is not None and len(file_index) and len(file_index) != int(file_index[-1]) + 1:
        probabilities, targets_np = per_file(probabilities, targets_np, file_index, aggregation)
    accuracy = float((probabilities.argmax(axis=1) == targets_np).mean()) if len(targets_np) else 0.0
    return Evaluation(loss, accuracy, probabilities, targets_np, *windows)


def per_file(probabilities: np.ndarray, targets: np.ndarray, file_index: np.ndarray,
             aggregation: Aggregation = Aggregation.mean) -> tuple[np.ndarray, np.ndarray]:
    """Per-window probabilities and targets (items in file order) -> per-file ones, by `aggregation`."""
    starts = np.flatnonzero(np.r_[True, file_index[1:] != file_index[:-1]])
    bounds = np.r_[starts, len(file_index)]
    merged = np.stack([aggregate(probabilities[a:b], aggregation) for a, b in zip(bounds[:-1], bounds[1:])])
    return merged.astype(np.float32), targets[starts]
