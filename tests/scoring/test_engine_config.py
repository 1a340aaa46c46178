"""How the engine is told to run a model: settings it refuses, and the thread split for a machine's cores."""

from __future__ import annotations

import pytest

from toolchain.errors import ScoringError
from toolchain.scoring.engine_config import EngineConfig, resolve_runners, resolve_threads


def test_threads_fit_the_cores():
    # On a CPU two model calls run at once, each on half the cores; a GPU gets one call and every core decodes.
    assert resolve_threads(EngineConfig(), on_gpu=False, cores=2) == (1, 1)
    assert resolve_runners(EngineConfig(), on_gpu=False, cores=2) == 2
    assert resolve_threads(EngineConfig(), on_gpu=False, cores=16) == (4, 8)
    assert resolve_threads(EngineConfig(), on_gpu=True, cores=8) == (8, 1)
    assert resolve_runners(EngineConfig(), on_gpu=True, cores=8) == 1
    assert resolve_runners(EngineConfig(), on_gpu=False, cores=1) == 1
    assert resolve_threads(EngineConfig(runners=1), on_gpu=False, cores=2) == (1, 2)
    assert resolve_threads(EngineConfig(decode_workers=0, intra_op_threads=3), on_gpu=False, cores=2) == (0, 3)


@pytest.mark.parametrize("field, value", [("precision", "int4"), ("io_binding", "yes"), ("frontend", "gpu"),
                                          ("conv_algo_search", "fast"), ("device_id", -1),
                                          ("runners", 0)])
def test_engine_config_refuses_unknown_settings(field, value):
    with pytest.raises(ScoringError, match=field):
        EngineConfig(**{field: value})
