"""toolchain.cpu: the cores this process may use and the instruction sets that pick kernels."""

from __future__ import annotations

import os

from toolchain.cpu import available_cores, cpu_isa


def test_available_cores_respects_affinity():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_cpu_isa_reads_the_flags_that_pick_int8_kernels_and_cpu_bf16():
    xeon = "model name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nflags : other"
    assert cpu_isa(xeon) == {"model": "Intel(R) Xeon(R) Platinum", "avx2": True, "avx512": True, "vnni": True,
                             "amx": False, "bf16": False}
    assert cpu_isa("flags : avx2 fma")["vnni"] is False and cpu_isa("flags : avx2 avx_vnni")["vnni"] is True
    assert cpu_isa("") == {"model": "", "avx2": False, "avx512": False, "vnni": False, "amx": False, "bf16": False}
    assert cpu_isa("flags : avx512f avx512_bf16")["bf16"] is True and cpu_isa("flags : amx_bf16")["bf16"] is True
