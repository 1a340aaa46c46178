"""Where training runs: the device choice and its errors."""

from __future__ import annotations

import pytest
import torch

from toolchain.errors import TrainingError
from toolchain.training.config import DEVICES, Device
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
