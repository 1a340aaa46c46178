"""Augmentation of training batches, on the cached log-mel images (cheap: no decode, no STFT), training only.

Validation, test, export and parity always see clean features. What is applied, in this order, each drawn per
clip from torch's RNG (a seeded run repeats):

- time shift: the image is moved by up to `time_shift` of its frames, left or right, the gap filled with the
  image's minimum (silence in this contract). A trimmed clip always starts with its sound; real windows do not.
- SpecAugment (Park et al., 2019): `time_masks` bands of up to `time_mask` of the frames and `freq_masks` bands of
  up to `freq_mask` of the mel bins are set to the minimum (fractions, so a 1-s model is not masked to death by
  widths made for 5-s clips).
- mixup (Zhang et al., 2018): each clip is mixed with another of the batch, weight lambda ~ Beta(alpha, alpha)
  (kept >= 0.5, so the clip stays the main one), and its target becomes the same mix of the two one-hot labels.

Random gain is not here on purpose: the feature contract peak-normalizes every clip and min-max scales its log-mel
image, so a gain on the waveform cancels out (up to the 80-dB floor); it would cost time and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toolchain.errors import TrainingError


@dataclass(frozen=True)
class Augmentation:
    time_shift: float = 0.25  # Largest shift, as a fraction of the frames.
    time_masks: int = 2
    time_mask: float = 0.1  # Widest time mask, a fraction of the frames (~0.5 s of a 5-s clip).
    freq_masks: int = 2
    freq_mask: float = 0.125  # Widest frequency mask, a fraction of the mel bins (16 of 128).
    mixup_alpha: float = 0.2  # 0 turns mixup off.

    def __post_init__(self) -> None:
        if not 0 <= self.time_shift < 1:
            raise TrainingError(f"time_shift={self.time_shift} must be in [0, 1)")
        for name in ("time_masks", "freq_masks"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name}={getattr(self, name)} must be 0 or more")
        for name in ("time_mask", "freq_mask"):
            if not 0 <= getattr(self, name) < 1:
                raise TrainingError(f"{name}={getattr(self, name)} must be a fraction in [0, 1)")
        if self.mixup_alpha < 0:
            raise TrainingError(f"mixup_alpha={self.mixup_alpha} must be 0 (off) or more")

    @property
    def active(self) -> bool:
        return bool(self.time_shift or (self.time_masks and self.time_mask)
                    or (self.freq_masks and self.freq_mask) or self.mixup_alpha)


NONE = Augmentation(time_shift=0, time_masks=0, freq_masks=0, mixup_alpha=0)


def _shift(images: torch.Tensor, fraction: float) -> torch.Tensor:
    b, _, _, frames = images.shape
    limit = int(frames * fraction)
    if limit == 0:
        return images
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    shifts = torch.randint(-limit, limit + 1, (b,))
    index = (torch.arange(frames).unsqueeze(0) - shifts.unsqueeze(1))  # (b, frames): source frame per target
    valid = (index >= 0) & (index < frames)
    gathered = images.gather(3, index.clamp(0, frames - 1).view(b, 1, 1, frames).expand_as(images).to(images.device))
    return torch.where(valid.view(b, 1, 1, frames).to(images.device), gathered, floor)


def _masks(images: torch.Tensor, count: int, fraction: float, axis: int) -> torch.Tensor:
    """`count` random bands of up to `fraction` of `axis` (2 = mel bins, 3 = frames) set to each image's minimum."""
    b, size = images.shape[0], images.shape[axis]
    width = int(size * fraction)
    if not count or not width:
        return images
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    keep = torch.ones(b, size, dtype=torch.bool)
    positions = torch.arange(size).unsqueeze(0)
    for _ in range(count):
        widths = torch.randint(0, min(width, size) + 1, (b, 1))
        starts = (torch.rand(b, 1) * (size - widths + 1)).long()
        keep &= ~((positions >= starts) & (positions < starts + widths))
    shape = [b, 1, 1, 1]
    shape[axis] = size
    return torch.where(keep.view(shape).to(images.device), images, floor)


def augment_batch(images: torch.Tensor, targets: torch.Tensor, num_classes: int,
                  augmentation: Augmentation) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented images, soft targets (B, num_classes)) for one training batch."""
    soft = F.one_hot(targets, num_classes).to(images.dtype)
    if not augmentation.active:
        return images, soft
    images = _shift(images, augmentation.time_shift)
    images = _masks(images, augmentation.time_masks, augmentation.time_mask, axis=3)
    images = _masks(images, augmentation.freq_masks, augmentation.freq_mask, axis=2)
    if augmentation.mixup_alpha > 0 and images.shape[0] > 1:
        beta = torch.distributions.Beta(augmentation.mixup_alpha, augmentation.mixup_alpha)
        lam = beta.sample((images.shape[0],))
        lam = torch.maximum(lam, 1 - lam).to(images.device, images.dtype)
        partner = torch.randperm(images.shape[0], device=images.device)
        images = lam.view(-1, 1, 1, 1) * images + (1 - lam.view(-1, 1, 1, 1)) * images[partner]
        soft = lam.view(-1, 1) * soft + (1 - lam.view(-1, 1)) * soft[partner]
    return images, soft
