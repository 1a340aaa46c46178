"""Augmentation of training batches, on the cached log-mel images (cheap: no decode, no STFT), training only.

Validation, test, export and parity always see clean features. What is applied, in this order, each drawn per
clip from torch's RNG (a seeded run repeats):

- time shift: the image is moved by up to `time_shift` of its frames, left or right, but never so far that any of
  its sound leaves the window, the gap filled with the image's minimum (silence in this contract). A trimmed clip
  always starts with its sound (it can only move right); real windows do not.
- SpecAugment (Park et al., 2019): `time_masks` bands of up to `time_mask` of the sound's frames (inside it) and
  `freq_masks` bands of up to `freq_mask` of the mel bins are set to the minimum (fractions of the sound, so a
  0.4-s call in a 5-s window is never masked away whole).
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
    time_mask: float = 0.1  # Widest time mask, a fraction of the sound's frames.
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

    def scaled(self, strength: float) -> Augmentation:
        """This augmentation at `strength` in [0, 1] of its size: shift, mask widths and mixup alpha scaled (mask
        counts kept); 0 is no augmentation."""
        strength = min(1.0, max(0.0, strength))
        if strength >= 1.0:
            return self
        return Augmentation(self.time_shift * strength, self.time_masks, self.time_mask * strength, self.freq_masks,
                            self.freq_mask * strength, self.mixup_alpha * strength)

    @property
    def active(self) -> bool:
        return bool(self.time_shift or (self.time_masks and self.time_mask)
                    or (self.freq_masks and self.freq_mask) or self.mixup_alpha)


NONE = Augmentation(time_shift=0, time_masks=0, freq_masks=0, mixup_alpha=0)


def strength(epoch: int, from_epoch: int, ramp_epochs: int) -> float:
    """The share of full augmentation in `epoch` (1-based): none before `from_epoch`, then growing by
    1 / `ramp_epochs` an epoch until full (at once when `ramp_epochs` is 0)."""
    if epoch < from_epoch:
        return 0.0
    return 1.0 if ramp_epochs <= 0 else min(1.0, (epoch - from_epoch + 1) / ramp_epochs)


def _sound_spans(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, last) frame of each image that holds anything above its minimum (its sound; a trimmed clip's starts
    at frame 0, a window's can lie anywhere); an empty image spans every frame."""
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    loud = (images > floor).any(dim=2).any(dim=1)  # (b, frames)
    frames = loud.shape[1]
    positions = torch.arange(frames, device=images.device).expand_as(loud)
    first = torch.where(loud, positions, frames).amin(dim=1)
    last = torch.where(loud, positions, -1).amax(dim=1)
    empty = last < 0
    return torch.where(empty, 0, first).cpu(), torch.where(empty, frames - 1, last).cpu()


def _shift(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Each image moved by up to `fraction` of its frames, never so far that its sound leaves the window (a left
    shift past a trimmed clip's start would leave a silent image labelled as a call)."""
    b, _, _, frames = images.shape
    limit = int(frames * fraction)
    if limit == 0:
        return images
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    first, last = _sound_spans(images)
    low = torch.clamp(-first, min=-limit)  # As far left as the sound's first frame allows.
    high = torch.clamp(frames - 1 - last, max=limit)  # As far right as its last frame allows.
    shifts = low + (torch.rand(b) * (high - low + 1)).long().clamp(max=high - low)
    index = (torch.arange(frames).unsqueeze(0) - shifts.unsqueeze(1))  # (b, frames): source frame per target
    valid = (index >= 0) & (index < frames)
    gathered = images.gather(3, index.clamp(0, frames - 1).view(b, 1, 1, frames).expand_as(images).to(images.device))
    return torch.where(valid.view(b, 1, 1, frames).to(images.device), gathered, floor)


def _masks(images: torch.Tensor, count: int, fraction: float, axis: int) -> torch.Tensor:
    """`count` random bands set to each image's minimum: on the mel bins (axis 2) up to `fraction` of them; on the
    frames (axis 3) up to `fraction` of the image's sound, inside it (a band of 10 % of a 5-s window could erase a
    0.4-s call whole)."""
    b, size = images.shape[0], images.shape[axis]
    if axis == 3:
        first, last = _sound_spans(images)
        span = last - first + 1
    else:
        first, span = torch.zeros(b, dtype=torch.long), torch.full((b,), size)
    width = (span.float() * fraction).long().unsqueeze(1)  # (b, 1): the widest band per image.
    if not count or not int(width.max()):
        return images
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    keep = torch.ones(b, size, dtype=torch.bool)
    positions = torch.arange(size).unsqueeze(0)
    for _ in range(count):
        widths = (torch.rand(b, 1) * (width + 1).float()).long().clamp(max=width)
        starts = first.unsqueeze(1) + (torch.rand(b, 1) * (span.unsqueeze(1) - widths + 1).float()).long()
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
