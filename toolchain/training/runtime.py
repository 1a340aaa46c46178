"""Where tensors run and how: device choice, mixed precision, memory format, seeding."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from toolchain.cpu import cpu_isa
from toolchain.errors import TrainingError
from toolchain.training.config import DEVICES, MIXED_PRECISIONS


@dataclass(frozen=True)
class Runtime:
    """CUDA gets mixed precision (`amp_dtype`) and channels-last; CPU runs fp32, contiguous, or bf16 autocast in
    channels-last when asked for (oneDNN's bf16 convolutions want that layout)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        if self.device.type == "cuda" or self.amp_dtype is not None:
            return torch.channels_last
        return torch.contiguous_format

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling only for fp16 (bf16 and fp32 need none; a disabled scaler is a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


def resolve_runtime(device: str = "auto", *, mixed_precision: str = "auto",
                    cpu_has_bf16: bool | None = None) -> Runtime:
    """`auto`: CUDA when visible, else CPU. `mixed_precision` "off" keeps fp32 on CUDA too (inference parity);
    "bf16" also autocasts on a CPU, which must have native bf16 (emulated, it would be slower than fp32)."""
    if device not in DEVICES:
        raise TrainingError(f"device {device!r} is unknown: use one of {', '.join(DEVICES)}")
    if mixed_precision not in MIXED_PRECISIONS:
        raise TrainingError(f"mixed precision {mixed_precision!r} is unknown: use one of {', '.join(MIXED_PRECISIONS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if device in ("cuda", "auto") and torch.cuda.is_available():
        if mixed_precision == "off":
            return Runtime(torch.device("cuda"))
        # bf16 needs no loss scaling; GPUs without it fall back to fp16 with a GradScaler.
        return Runtime(torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    torch.set_flush_denormal(True)  # Random-init ResNets produce denormals; flushing them halved CPU time.
    if mixed_precision != "bf16":
        return Runtime(torch.device("cpu"))
    if not (cpu_isa()["bf16"] if cpu_has_bf16 is None else cpu_has_bf16):
        raise TrainingError("--mixed-precision bf16 on CPU needs native bf16 (AVX512-BF16 or AMX), which this CPU "
                            "lacks: use --mixed-precision auto (fp32 on CPU)")
    return Runtime(torch.device("cpu"), torch.bfloat16)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
