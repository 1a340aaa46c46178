"""How long-running library functions report progress without knowing about rich, Typer or Prefect."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def start(self, key: str, description: str, total: int | None) -> None: ...

    def advance(self, key: str, amount: int = 1, description: str | None = None) -> None: ...

    def finish(self, key: str) -> None: ...


class NullProgress:
    """Reports nothing (library default; flows log instead)."""

    def start(self, key: str, description: str, total: int | None) -> None:
        pass

    def advance(self, key: str, amount: int = 1, description: str | None = None) -> None:
        pass

    def finish(self, key: str) -> None:
        pass
