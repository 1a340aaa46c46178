"""toolchain.io: the one atomic writer (permissions from the umask, nothing half-written), hashes, cores."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import sys

import psutil
import pytest

from toolchain.io import atomic_write, available_cores, file_sha256, write_json


def test_atomic_write_replaces_only_on_success_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.json"
    write_json({"a": 1}, target)
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_atomic_write_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    with atomic_write(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umasks_permissions_and_the_umask_is_never_changed(tmp_path, umask, mode):
    # In a child process: the umask is process-wide, and this test must not change the suite's.
    code = (
        "import os, sys, stat; from pathlib import Path\n"
        f"os.umask({umask})\n"
        "from toolchain.io import write_text\n"
        "import toolchain.training.cache, toolchain.training.reports, toolchain.scoring.outputs\n"
        "assert os.umask(0) == " + str(umask) + ", 'an import changed the umask'\n"
        f"os.umask({umask})\n"
        "p = write_text('x', Path(sys.argv[1]))\n"
        "print(oct(stat.S_IMODE(p.stat().st_mode)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == oct(mode)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == mode


def test_sha256_and_cores(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_pool_workers_die_with_their_parent_even_on_kill_9(tmp_path):
    """The OOM killer's kill -9 on the main process must not leave pool workers (or the resource tracker) behind."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from toolchain.io import spawn_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = spawn_pool(2)\n"
        "    pool.submit(time.sleep, 0).result()\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    try:
        assert parent.stdout.readline().strip() == "ready"
        children = psutil.Process(parent.pid).children(recursive=True)
        assert len(children) >= 3  # Two workers and multiprocessing's resource tracker.
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        _, alive = psutil.wait_procs(children, timeout=20)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        for process in [*children, psutil.Process(parent.pid)] if parent.poll() is None else children:
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_cpu_isa_reads_the_flags_that_pick_int8_kernels_and_cpu_bf16():
    from toolchain.io import cpu_isa

    xeon = "model name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nflags : other"
    assert cpu_isa(xeon) == {"model": "Intel(R) Xeon(R) Platinum", "avx2": True, "avx512": True, "vnni": True,
                             "amx": False, "bf16": False}
    assert cpu_isa("flags : avx2 fma")["vnni"] is False and cpu_isa("flags : avx2 avx_vnni")["vnni"] is True
    assert cpu_isa("") == {"model": "", "avx2": False, "avx512": False, "vnni": False, "amx": False, "bf16": False}
    assert cpu_isa("flags : avx512f avx512_bf16")["bf16"] is True and cpu_isa("flags : amx_bf16")["bf16"] is True
