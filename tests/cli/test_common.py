"""CLI plumbing: a finished progress bar leaves one line saying what was done."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from toolchain.cli.common import LineProgress, RichProgress


def test_a_finished_bar_leaves_a_line_with_its_count():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bars:
        progress = RichProgress(bars)
        progress.start("score", "scoring 3 files on CPUExecutionProvider", 3)
        for _ in range(3):
            progress.advance("score", 1)
        progress.finish("score")
        assert not bars.tasks  # The bar itself is gone.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "scoring 3 files on CPUExecutionProvider: done 3/3 in" in text, text


def test_log_progress_ends_with_the_same_line():
    out = io.StringIO()
    progress = LineProgress(Console(file=out, width=100))
    progress.start("score", "scoring 2 files", 2)
    progress.advance("score", 2)
    progress.finish("score")
    assert "scoring 2 files: done 2/2 in" in out.getvalue()
