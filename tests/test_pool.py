"""toolchain.pool: spawned workers never outlive their parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import psutil


def test_pool_workers_die_with_their_parent_even_on_kill_9(tmp_path):
    """The OOM killer's kill -9 on the main process must not leave pool workers (or the resource tracker) behind."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from toolchain.pool import spawn_pool\n"
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
