"""Test-only hooks for the subprocesses a test starts (`toolchain score`, `toolchain serve` and its flow runs):
Python imports this at startup when `tests/hooks` is on PYTHONPATH (`support.held_env` puts it there).

`TOOLCHAIN_TEST_HOLD_AFTER_ROWS=N:SIGNAL_FILE`: once a process has written N rows of a predictions part file
(its first N calls of `toolchain.scoring.outputs.row_values` have returned; the part file is line-buffered, so
they are on disk), it creates SIGNAL_FILE holding its pid and waits until that file is removed. A test kills the
run there (kill -9, SIGINT, a crashed flow run) without racing the clock.
"""

from __future__ import annotations

import os

HOLD_ENV = "TOOLCHAIN_TEST_HOLD_AFTER_ROWS"


def _install_hold(spec: str) -> None:
    import functools
    import time
    from pathlib import Path

    import toolchain.scoring.outputs as outputs

    count, _, signal_file = spec.partition(":")
    rows, signal, written = int(count), Path(signal_file), [0]
    original = outputs.row_values

    @functools.wraps(original)
    def row_values(*args, **kwargs):
        if written[0] == rows:  # N rows are on disk; this is the next one.
            signal.write_text(f"{os.getpid()}\n")
            while signal.exists():
                time.sleep(0.05)
        written[0] += 1
        return original(*args, **kwargs)

    outputs.row_values = row_values


if os.environ.get(HOLD_ENV):
    _install_hold(os.environ[HOLD_ENV])
