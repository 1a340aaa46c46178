"""How the steps of a folder run execute (`ScoringSteps`): `LocalSteps` calls them in this thread, once, in order;
the Prefect flows run them as tasks with retries (`flows/steps.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from toolchain.progress import NullProgress, ProgressReporter
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.runs import FolderJob
from toolchain.scoring.shards import ShardResult, load_and_score_shard

T = TypeVar("T")


@dataclass(frozen=True)
class Attempted(Generic[T]):
    """A step's value plus the attempt that produced it (1 = no retry)."""

    value: T
    attempt: int = 1


class ScoringSteps(Protocol):
    """How `run_folder`'s steps execute. `run` calls `fn(attempt)` (retrying it as the runner sees fit) and says
    which attempt succeeded; `map_shards` scores every shard (anywhere) and returns their results in any order;
    `log` reports one line; `config` is how models run (a shadow comparison runs its challenger with it)."""

    config: EngineConfig

    def run(self, name: str, fn: Callable[[int], T]) -> Attempted[T]: ...

    def map_shards(self, job: FolderJob, shards: list[list[str]]) -> list[ShardResult]: ...

    def log(self, message: str) -> None: ...


@dataclass
class LocalSteps:
    """Every step in this thread, once, in order (no retries): `toolchain score` and plain Python callers."""

    model_path: str | Path
    config: EngineConfig = EngineConfig()
    progress: ProgressReporter = field(default_factory=NullProgress)
    say: Callable[[str], None] = field(default=lambda message: None)  # Where `log` lines go.

    def run(self, name: str, fn: Callable[[int], T]) -> Attempted[T]:
        return Attempted(fn(1))

    def map_shards(self, job: FolderJob, shards: list[list[str]]) -> list[ShardResult]:
        return [load_and_score_shard(self.model_path, self.config, job, i, files, self.progress)
                for i, files in enumerate(shards)]

    def log(self, message: str) -> None:
        self.say(message)
