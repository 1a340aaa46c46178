"""`python -m flows`: the same command as `toolchain flow` (run `score-folder` or `score-inbox` once, in this
process), kept for scripts that call it this way. It replaces itself with `python -m toolchain flow`, so the
options, messages and exit codes are that command's, and this package never imports the command line."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "toolchain", "flow", *sys.argv[1:]])
