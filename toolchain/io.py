"""One copy of each process-level helper: atomic file writes, content hashes, cores, worker threads, spawn pools.

Atomic writes: every output (checkpoint, model, report, CSV, cache entry) is written under a temporary name in
its destination folder and renamed into place, so a killed run leaves the old file or none, never half a file.
The temporary file is created with mode 0o666 and the kernel applies the process umask, exactly as for a plain
`open(path, "w")`; nothing here reads or changes the umask (changing it is process-wide and racy under threads).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import OutputPathError, one_line

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _new_temp(path: Path, suffix: str) -> Path:
    """Create (O_EXCL) an empty hidden file beside `path`; mode 0o666 minus the umask, like any new file."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path`, else it is removed.

    `suffix` lets writers that choose a format by extension (matplotlib, `np.save`) see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _output_problem(path: Path, folder: Path) -> str:
    """Why `folder` (which is `path` or its parent) cannot take our files, or ""."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return "is a file: pass a folder" if ancestor == path else f"is inside {ancestor}, which is a file"
    try:
        with tempfile.TemporaryFile(dir=ancestor):  # Tried for real: root ignores permissions, read-only FS do not.
            pass
    except OSError as exc:
        return f"is not writable ({one_line(exc, 200)}): pass a folder you can write to"
    return ""


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse, before any work starts, a folder our outputs cannot go to; returns it absolute. Creates nothing.

    `what` names the option in the message (e.g. "--out"). A folder that does not exist yet is fine when its
    nearest existing ancestor is a folder this process can write to.
    """
    path = Path(path).expanduser().absolute()
    problem = _output_problem(path, path)
    if problem:
        raise OutputPathError(f"{what} {path} {problem}")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """`check_output_dir` for a file's folder; the file itself must not be a folder."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder: pass a file name, e.g. {path / 'predictions.csv'}")
    problem = _output_problem(path, path.parent)
    if problem:
        raise OutputPathError(f"{what} {path} {problem}")
    return path


def write_text(text: str, path: str | Path) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Indented JSON with a trailing newline, atomically."""
    return write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems refuse fsync on directories)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
