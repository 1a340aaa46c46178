"""Where tensors run and how: device choice, mixed precision, memory format, seeding."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from toolchain.errors import TrainingError
from toolchain.training.config import DEVICES


@dataclass(frozen=True)
class Runtime:
    """CUDA gets mixed precision (`amp_dtype`) and channels-last; CPU runs fp32, contiguous."""

    device: torch.device
    amp_dtype: torch.dtype | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling only for fp16 (bf16 and fp32 need none; a disabled scaler is a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


def resolve_runtime(device: str = "auto", *, amp: bool = True) -> Runtime:
    """`auto`: CUDA when visible, else CPU. `amp=False` keeps fp32 on CUDA too (inference parity)."""
    if device not in DEVICES:
        raise TrainingError(f"device {device!r} is unknown: use one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if device in ("cuda", "auto") and torch.cuda.is_available():
        if not amp:
            return Runtime(torch.device("cuda"))
        # bf16 needs no loss scaling; GPUs without it fall back to fp16 with a GradScaler.
        return Runtime(torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    torch.set_flush_denormal(True)  # Random-init ResNets produce denormals; flushing them halved CPU time.
    return Runtime(torch.device("cpu"))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
