"""Where training runs: the device choice and its errors."""

from __future__ import annotations

import pytest
import torch

from toolchain.errors import TrainingError
from toolchain.training.config import DEVICES, MIXED_PRECISIONS, Device, MixedPrecision
from toolchain.training.runtime import resolve_runtime


def test_devices_come_from_one_enum():
    assert DEVICES == tuple(d.value for d in Device) == ("auto", "cpu", "cuda")


def test_cpu_runs_fp32_and_unknown_or_absent_devices_are_refused():
    runtime = resolve_runtime("cpu")
    assert runtime.device.type == "cpu" and runtime.amp_dtype is None
    with pytest.raises(TrainingError, match="'tpu' is unknown"):
        resolve_runtime("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="--device cpu or auto"):
            resolve_runtime("cuda")
        assert resolve_runtime("auto").device.type == "cpu"


def test_cpu_bf16_is_opt_in_and_needs_native_bf16():
    assert MIXED_PRECISIONS == tuple(m.value for m in MixedPrecision) == ("auto", "bf16", "off")
    assert resolve_runtime("cpu", mixed_precision="auto").amp_dtype is None  # fp32 on CPU unless asked.
    with pytest.raises(TrainingError, match="lacks: use --mixed-precision auto"):
        resolve_runtime("cpu", mixed_precision="bf16", cpu_has_bf16=False)
    with pytest.raises(TrainingError, match="'fp8' is unknown"):
        resolve_runtime("cpu", mixed_precision="fp8")
    runtime = resolve_runtime("cpu", mixed_precision="bf16", cpu_has_bf16=True)
    assert runtime.amp_dtype == torch.bfloat16 and runtime.memory_format == torch.channels_last
    conv = torch.nn.Conv2d(3, 4, 3)
    with runtime.autocast():
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
