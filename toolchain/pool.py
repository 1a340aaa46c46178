"""The one spawn pool: worker processes started up front, one BLAS thread each, that exit when their parent dies.

Used by the training feature cache and the scoring decode workers (`toolchain.scoring.workers`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

PARENT_POLL_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent:  # Re-parented: whoever started us is gone (kill -9, OOM killer).
            os._exit(1)


def init_worker(parent: int) -> None:
    """Process-pool initializer: one BLAS/OpenMP thread per worker (N workers use N cores, not N squared), Ctrl-C
    left to the parent (which stops the pool; a worker would print its own traceback), and the worker exits within
    a second of its parent's death, however the parent died.

    A watcher thread rather than PR_SET_PDEATHSIG: that signal fires when the *thread* that started the worker
    exits, and pools here outlive the task threads (Prefect's) that first used them.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent:  # The parent died while this worker was still starting.
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()


@contextmanager
def _main_hidden() -> Iterator[None]:
    """Start spawned workers without re-importing the parent's `__main__`.

    spawn re-runs the parent's main script in every worker. For the `toolchain` console script that imports every
    CLI module, torch included (~800 MB per worker, seconds to start), for nothing: workers only run library
    functions. While workers start, `__main__` is a bare module with no file or spec, which spawn skips.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _noop() -> None:
    pass


def spawn_pool(workers: int, warm_up: Callable[[], None] = _noop) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes, all started now (each runs `warm_up` once), one BLAS thread each,
    each exiting when this process dies.

    spawn, not fork: the parent holds ORT, torch and (under Prefect) event-loop threads that a fork would copy
    mid-state. Workers are started while `__main__` is hidden, so they import only what their tasks need.
    """
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(os.getpid(),))
    with _main_hidden():
        for _ in range(workers):  # With spawn, each submit to a pool without idle workers starts one.
            pool.submit(warm_up)
    return pool
