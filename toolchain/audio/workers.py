"""Decode + featurize audio files in worker processes, in order, a bounded number of files ahead.

Workers call `toolchain.audio.features.features_from_path` (the feature contract) and return the (n_mels, frames) log-mel
array, or the reason the file is not audio. Nothing here raises for a bad file: one bad file must never sink a
batch. A worker process that dies (segfault in a codec, OOM kill) is replaced; the file it was decoding becomes an
error row after it has taken down two workers.
"""

from __future__ import annotations

import atexit
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from toolchain.audio.config import FeatureConfig
from toolchain.audio.features import features_from_path
from toolchain.errors import AudioDecodeError, one_line
from toolchain.io import spawn_pool

# A file in flight when this many workers died is blamed for it.
MAX_WORKER_DEATHS = 2


@dataclass(frozen=True)
class DecodeResult:
    """Either features (n_mels, frames) float32 in [0, 1], or a one-line error."""

    features: np.ndarray | None
    error: str = ""


def featurize_inline(path: str, config: FeatureConfig) -> DecodeResult:
    """Features for one file, or the error message; never raises for bad audio."""
    try:
        return DecodeResult(features_from_path(path, config))
    except AudioDecodeError as exc:
        return DecodeResult(None, exc.cause)
    except MemoryError:
        return DecodeResult(None, "out of memory while decoding")
    except Exception as exc:  # A decoder bug on a weird file is still one bad file, not a failed run.
        return DecodeResult(None, one_line(exc))


def _warm_up() -> None:
    import librosa  # noqa: F401  (~1 s of imports, paid while the model loads rather than on the first file)


# Worker pools outlive one call: spawning workers and importing librosa costs seconds, more than scoring a small
# folder. One pool per size per process, replaced when a worker death breaks it, shut down at exit.
_pools: dict[int, ProcessPoolExecutor] = {}
_pools_lock = threading.Lock()


def shared_pool(workers: int, broken: Executor | None = None) -> ProcessPoolExecutor:
    """The process's pool of `workers` spawned decode processes (a new one if `broken` is the current one)."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None or pool is broken:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            # Each worker is one decode stream with one BLAS thread: more would fight ORT's threads for the cores.
            pool = spawn_pool(workers, warm_up=_warm_up)
            _pools[workers] = pool
        return pool


@atexit.register
def shutdown_pools() -> None:
    with _pools_lock:
        for pool in _pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        _pools.clear()


def _worker_featurize(path: str, config: FeatureConfig) -> DecodeResult:
    return featurize_inline(path, config)


def ordered_decode(paths: Iterable[str], config: FeatureConfig, workers: int,
                   max_in_flight: int) -> Iterator[DecodeResult]:
    """Yield one `DecodeResult` per path, in input order, keeping at most `max_in_flight` paths submitted to the
    shared pool of `workers` processes (0 = decode inline, in this thread)."""
    if workers == 0:
        yield from (featurize_inline(p, config) for p in paths)
        return
    window = _Window(config, workers)
    source = iter(paths)
    try:
        for path in source:
            window.submit(path)
            if len(window.pending) >= max_in_flight:
                break
        while window.pending:
            result = window.next_result()
            if result is None:  # A worker died; the window was resubmitted.
                continue
            next_path = next(source, None)
            if next_path is not None:
                window.submit(next_path)
            yield result
    finally:
        for _, future in window.pending:  # The consumer stopped early: free the shared pool.
            future.cancel()


class _Window:
    """The futures in flight, oldest first, and how many worker deaths each file has witnessed."""

    def __init__(self, config: FeatureConfig, workers: int):
        self.config = config
        self.workers = workers
        self.pool = shared_pool(workers)
        self.pending: deque[tuple[str, Future]] = deque()
        self.deaths: dict[str, int] = {}

    def submit(self, path: str) -> None:
        try:
            future = self.pool.submit(_worker_featurize, path, self.config)
        except BrokenProcessPool as exc:  # The pool died between two results: handled like a failed result.
            future = Future()
            future.set_exception(exc)
        self.pending.append((path, future))

    def next_result(self) -> DecodeResult | None:
        """The oldest file's result; None when a worker death made the whole window start over."""
        path, future = self.pending.popleft()
        try:
            return future.result()
        except BrokenProcessPool:
            # Every pending future of a broken pool fails: count a death against each, resubmit to a new pool.
            retry = [path] + [p for p, _ in self.pending]
            self.pending.clear()
            self.pool = shared_pool(self.workers, broken=self.pool)
            for p in retry:
                self.deaths[p] = self.deaths.get(p, 0) + 1
            blamed = retry[0] if self.deaths[retry[0]] >= MAX_WORKER_DEATHS else None
            for p in retry:
                if p != blamed:
                    self.submit(p)
            if blamed is None:
                return None
            return DecodeResult(None, "the decoder process died on this file (crash or out of memory)")
