"""Execution providers without a GPU: the CUDA EP options and CPU fallback handed to ORT, the one-line messages
when CUDA cannot run, and preloading the CUDA libraries (never raises, never prints)."""

from __future__ import annotations

import pytest

from toolchain.errors import ScoringError
from toolchain.inference.providers import (
    CPU_EP,
    CUDA_EP,
    cuda_unavailable_message,
    execution_providers,
    preload_cuda_libraries,
)


def test_cuda_provider_gets_its_options_and_a_cpu_fallback():
    assert execution_providers(use_cuda=False) == [CPU_EP]
    (cuda, options), cpu = execution_providers(use_cuda=True, device_id=1, conv_algo_search="HEURISTIC")
    assert (cuda, cpu) == (CUDA_EP, CPU_EP)
    assert options == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                       "cudnn_conv_use_max_workspace": "1", "do_copy_in_default_stream": "1"}
    assert execution_providers(use_cuda=True)[0][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    with pytest.raises(ScoringError, match="conv_algo_search='FASTEST' is not one of EXHAUSTIVE"):
        execution_providers(use_cuda=True, conv_algo_search="FASTEST")


def test_cuda_messages_name_the_missing_part_and_the_fix():
    available = [CUDA_EP, CPU_EP]
    no_ep = cuda_unavailable_message([CPU_EP], driver_found=False)
    no_driver = cuda_unavailable_message(available, driver_found=False)
    no_libs = cuda_unavailable_message(available, True, CPU_EP, "Failed to load libcudnn.so.9: not found")
    assert "pip install onnxruntime-gpu" in no_ep
    assert "libcuda.so.1" in no_driver and "onnxruntime-gpu[cuda,cudnn]" in no_driver
    for text in ("fell back to CPUExecutionProvider", "CUDA 13", "cuDNN 9", "preload_dlls", "libcudnn.so.9",
                 "onnxruntime-gpu[cuda,cudnn]", "--provider auto"):
        assert text in no_libs
    assert all("\n" not in m and m.startswith("provider 'cuda' requested") for m in (no_ep, no_driver, no_libs))


def test_preloading_cuda_libraries_never_raises_or_prints(capsys):
    preload_cuda_libraries.cache_clear()
    assert isinstance(preload_cuda_libraries(), str)  # "" where the nvidia-* wheels load, ORT's complaint if not.
    assert capsys.readouterr().out == ""  # ORT prints failures; a CLI's stdout must carry only its result.
