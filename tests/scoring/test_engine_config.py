"""How the engine is told to run a model: settings it refuses, and the thread split for a machine's cores."""

from __future__ import annotations

import pytest

from toolchain.errors import ScoringError
from toolchain.scoring.engine_config import EngineConfig, resolve_threads


def test_threads_fit_the_cores():
    assert resolve_threads(EngineConfig(), on_gpu=False, cores=2) == (1, 2)
    assert resolve_threads(EngineConfig(), on_gpu=False, cores=16) == (4, 16)
    assert resolve_threads(EngineConfig(), on_gpu=True, cores=8) == (8, 1)
    assert resolve_threads(EngineConfig(decode_workers=0, intra_op_threads=3), on_gpu=False, cores=2) == (0, 3)


@pytest.mark.parametrize("field, value", [("precision", "int4"), ("io_binding", "yes"), ("frontend", "gpu"),
                                          ("conv_algo_search", "fast"), ("device_id", -1)])
def test_engine_config_refuses_unknown_settings(field, value):
    with pytest.raises(ScoringError, match=field):
        EngineConfig(**{field: value})
