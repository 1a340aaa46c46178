"""Decode + featurize audio files in worker processes for the scoring engine, in order, a bounded amount ahead.

Workers run the window contract (`toolchain.audio.windows`): a file comes back as its windows, or, when it is long,
as a plan whose parts (`PART_WINDOWS` windows each) are then decoded as separate jobs, so a multi-hour file is
spread over the workers and never held whole. Nothing here raises for a bad file: one bad file must never sink a
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
from typing import Any

from toolchain.audio.config import FeatureConfig
from toolchain.audio.windows import FileWindows, LongPlan, WindowRule, file_windows_or_plan, long_part
from toolchain.errors import AudioDecodeError, one_line
from toolchain.pool import spawn_pool

# A file in flight when this many workers died is blamed for it.
MAX_WORKER_DEATHS = 2


@dataclass(frozen=True)
class DecodeResult:
    """Windows of a file (all, or one part of a long one), a long file's plan, or a one-line error."""

    windows: FileWindows | None = None
    error: str = ""
    plan: LongPlan | None = None


def _guarded(fn: Any, *args: Any) -> DecodeResult:
    """Run one decode job; a bad file becomes an error result, never an exception."""
    try:
        found = fn(*args)
    except AudioDecodeError as exc:
        return DecodeResult(error=exc.cause)
    except MemoryError:
        return DecodeResult(error="out of memory while decoding")
    except Exception as exc:  # A decoder bug on a weird file is still one bad file, not a failed run.
        return DecodeResult(error=one_line(exc))
    return DecodeResult(plan=found) if isinstance(found, LongPlan) else DecodeResult(windows=found)


def _plan_job(path: str, config: FeatureConfig, rule: WindowRule) -> DecodeResult:
    return _guarded(file_windows_or_plan, path, config, rule)


def _part_job(plan: LongPlan, k0: int, k1: int, config: FeatureConfig) -> DecodeResult:
    return _guarded(long_part, plan, k0, k1, config)


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


@dataclass
class _Job:
    index: int  # Position of the file in the input.
    path: str
    call: tuple  # (function, *args), run in a worker.
    part: bool = False
    future: Future | None = None


def ordered_windows(paths: Iterable[str], config: FeatureConfig, rule: WindowRule, workers: int,
                    max_in_flight: int) -> Iterator[tuple[int, DecodeResult]]:
    """Yield `(file index, result)` in input order: each file gives one or more window results (the last with
    `windows.last`), or one error result that ends it. At most `max_in_flight` files, plus the parts of the long
    file being read, are submitted to the shared pool of `workers` processes (0 = decode inline, in this thread)."""
    if workers == 0:
        for index, path in enumerate(paths):
            yield from _inline(index, path, config, rule)
        return
    window = _Window(workers)
    source = enumerate(paths)
    parts: deque[tuple[int, int]] = deque()  # Parts of the head file not submitted yet...
    plan: LongPlan | None = None  # ...and its plan.
    part_budget = max(2, 2 * workers)
    try:
        for index, path in source:
            window.append(_Job(index, path, (_plan_job, path, config, rule)))
            if len(window.pending) >= max_in_flight:
                break
        while window.pending:
            job = window.pending[0]
            result = window.next_result()
            if result is None:  # A worker died; the window was resubmitted.
                continue
            if result.plan is not None:  # A long file: its parts go first, a few at a time.
                parts.extend(result.plan.parts)
                for _ in range(min(part_budget, len(parts))):
                    k0, k1 = parts.popleft()
                    window.insert_part(_Job(job.index, job.path, (_part_job, result.plan, k0, k1, config), True))
                plan = result.plan
                continue
            if result.error and job.part:  # The rest of a failed long file is not read.
                window.drop_parts()
                parts.clear()
            elif job.part and parts:
                k0, k1 = parts.popleft()
                window.insert_part(_Job(job.index, job.path, (_part_job, plan, k0, k1, config), True))
            if not job.part or result.error or (result.windows is not None and result.windows.last):
                nxt = next(source, None)
                if nxt is not None:
                    window.append(_Job(nxt[0], nxt[1], (_plan_job, nxt[1], config, rule)))
            yield job.index, result
    finally:
        for job in window.pending:  # The consumer stopped early: free the shared pool.
            if job.future is not None:
                job.future.cancel()


def _inline(index: int, path: str, config: FeatureConfig, rule: WindowRule) -> Iterator[tuple[int, DecodeResult]]:
    result = _plan_job(path, config, rule)
    if result.plan is None:
        yield index, result
        return
    for k0, k1 in result.plan.parts:
        part = _part_job(result.plan, k0, k1, config)
        yield index, part
        if part.error:
            return


class _Window:
    """The jobs in flight, in the order their results are yielded, and how many worker deaths each file saw."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = shared_pool(workers)
        self.pending: deque[_Job] = deque()
        self.deaths: dict[str, int] = {}

    def _submit(self, job: _Job) -> None:
        fn, *args = job.call
        try:
            job.future = self.pool.submit(fn, *args)
        except BrokenProcessPool as exc:  # The pool died between two results: handled like a failed result.
            job.future = Future()
            job.future.set_exception(exc)

    def append(self, job: _Job) -> None:
        self._submit(job)
        self.pending.append(job)

    def insert_part(self, job: _Job) -> None:
        """After the head file's other parts, before every other file's job."""
        position = 0
        while position < len(self.pending) and self.pending[position].part:
            position += 1
        self._submit(job)
        self.pending.insert(position, job)

    def drop_parts(self) -> None:
        while self.pending and self.pending[0].part:
            job = self.pending.popleft()
            if job.future is not None:
                job.future.cancel()

    def next_result(self) -> DecodeResult | None:
        """The head job's result (the job is removed); None when a worker death made the window start over."""
        job = self.pending[0]
        assert job.future is not None
        try:
            result = job.future.result()
        except BrokenProcessPool:
            # Every pending future of a broken pool fails: count a death against each, resubmit to a new pool.
            retry = list(self.pending)
            self.pool = shared_pool(self.workers, broken=self.pool)
            for j in retry:
                self.deaths[j.path] = self.deaths.get(j.path, 0) + 1
            if self.deaths[job.path] < MAX_WORKER_DEATHS:
                for j in retry:
                    self._submit(j)
                return None
            self.pending.popleft()
            for j in retry[1:]:
                if j.path != job.path:
                    self._submit(j)
            self.pending = deque(j for j in self.pending if j.path != job.path or not j.part)
            return DecodeResult(error="the decoder process died on this file (crash or out of memory)")
        self.pending.popleft()
        return result
