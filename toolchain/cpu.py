"""CPU facts: how many cores this process may use, and which instruction-set extensions the CPU has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


# Instruction-set extensions that decide which INT8 kernels ONNX Runtime's CPU provider runs fast (avx2, vnni,
# amx) and whether training can autocast to bf16 on the CPU (bf16).
ISA_FLAGS = {"avx2": ("avx2",), "avx512": ("avx512f",), "vnni": ("avx512_vnni", "avx_vnni"),
             "amx": ("amx_int8",), "bf16": ("avx512_bf16", "amx_bf16")}


def cpu_isa(cpuinfo: str | None = None) -> dict[str, Any]:
    """{"model": CPU model name, "avx2"/"avx512"/"vnni"/"amx"/"bf16": bool} from /proc/cpuinfo (all False elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", ""),
            **{name: any(f in flags for f in options) for name, options in ISA_FLAGS.items()}}
