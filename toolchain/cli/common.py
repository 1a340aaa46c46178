"""Shared CLI plumbing: user errors as one line, rich console and progress bars."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from toolchain.errors import EXIT_USER_ERROR, ToolchainError

# soft_wrap: a line longer than the terminal (or than 80 columns in a log file) is never broken into two.
console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def config_defaults(cls: type) -> dict[str, Any]:
    """A config dataclass's field defaults by name: CLI option defaults come from the library, never re-typed."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def user_errors(func: F) -> F:
    """Turn `ToolchainError` into `error: <message>` on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ToolchainError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]


class RichProgress:
    """A `toolchain.progress.ProgressReporter` drawing rich bars on stderr."""

    def __init__(self, progress: Progress):
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def start(self, key: str, description: str, total: int | None) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, amount: int = 1, description: str | None = None) -> None:
        kwargs = {"description": description} if description else {}
        self._progress.update(self._tasks[key], advance=amount, **kwargs)

    def finish(self, key: str) -> None:
        """The bar leaves; one line stays that says what was done (count and time)."""
        task = self._tasks.pop(key, None)
        if task is not None:
            state = self._progress.tasks[[t.id for t in self._progress.tasks].index(task)]
            count = f" {state.completed:g}/{state.total:g}" if state.total is not None else ""
            self._progress.console.print(f"{state.description}: done{count} in {state.elapsed or 0.0:.1f} s")
            self._progress.remove_task(task)


class LineProgress:
    """Progress for logs (stderr is not a terminal): one line when a step starts and one when it ends, with its
    count and time, and for a long step a line at most every `every` seconds; no bars, nothing rewritten in place."""

    def __init__(self, out: Console, every: float = 30.0):
        self._console = out
        self._every = every
        self._tasks: dict[str, tuple[str, int | None, int, float]] = {}
        self._last_line: dict[str, float] = {}

    def start(self, key: str, description: str, total: int | None) -> None:
        self._tasks[key] = (description, total, 0, time.monotonic())
        self._last_line[key] = time.monotonic()
        self._console.print(f"{description} ..." + (f" ({total})" if total is not None else ""))

    def advance(self, key: str, amount: int = 1, description: str | None = None) -> None:
        if key in self._tasks:
            text, total, done, started = self._tasks[key]
            self._tasks[key] = (text, total, done + amount, started)
            now = time.monotonic()
            if now - self._last_line.get(key, started) >= self._every:
                self._last_line[key] = now
                count = f" {done + amount}/{total}" if total is not None else ""
                self._console.print(f"{description or text}:{count} after {now - started:.0f} s")

    def finish(self, key: str) -> None:
        if key in self._tasks:
            text, total, done, started = self._tasks.pop(key)
            count = f" {done}/{total}" if total is not None else ""
            self._console.print(f"{text}: done{count} in {time.monotonic() - started:.1f} s")


@contextmanager
def rich_progress() -> Iterator[RichProgress | LineProgress]:
    """Bars on a terminal; start/done lines in a log."""
    if not console.is_terminal:
        yield LineProgress(console)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        yield RichProgress(progress)
