"""The scoring engine's decode workers on real FSDD clips.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np

from toolchain.audio.windows import WindowRule
from toolchain.scoring.workers import ordered_windows, shared_pool


def test_decoder_worker_killed_mid_stream_is_replaced(model, fsdd_dir):
    """SIGKILL the decode worker while files are in flight: every file still gets its features, in order."""
    paths = [str(p) for p in sorted((fsdd_dir / "recordings").glob("*_theo_4*.wav"))[:12]]
    pool = shared_pool(1)
    results = ordered_windows(paths, model.feature_config, WindowRule(), workers=1, max_in_flight=8)
    first = next(results)
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)
    rest = list(results)
    assert shared_pool(1) is not pool  # The broken pool was replaced...
    got = [first, *rest]
    assert [i for i, _ in got] == list(range(len(paths)))  # ...and no file was lost, repeated or blamed.
    assert all(r.windows is not None and r.error == "" for _, r in got)
    reference = ordered_windows(paths, model.feature_config, WindowRule(), workers=0, max_in_flight=1)
    for (_, result), (_, want) in zip(got, reference):
        np.testing.assert_allclose(result.windows.features, want.windows.features, atol=1e-5)  # BLAS noise.
