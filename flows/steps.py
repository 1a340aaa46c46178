"""The library's scoring steps (`toolchain.scoring.folder.ScoringSteps`) as Prefect tasks.

Retries sit on the tasks that touch the disk (discover, score, write, record, find-unscored) and show in the logs
as "Retry 1/2 will start ..."; each folder's ledger row records how many retries it took. Shards are mapped on the
flow's task runner (one thread by default: the decode workers and ORT threads already fill the cores), or sent to
a Dask cluster through prefect-dask's DaskTaskRunner (`flows/dask_runner.py`) when `dask_address` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from flows.dask_runner import shard_runner
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.runs import FolderJob
from toolchain.scoring.shards import ShardResult, load_and_score_shard
from toolchain.scoring.steps import Attempted

RETRIES = 2
T = TypeVar("T")


def _attempt() -> int:
    return max(1, task_run.run_count or 1)


@task(name="step", retries=RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def step_task(fn: Callable[[int], Any]) -> Attempted:
    """One library step (`fn(attempt)`); `PrefectSteps.run` names it (discover, write-csv, record, ...)."""
    attempt = _attempt()
    return Attempted(fn(attempt), attempt)


@task(name="score-shard", task_run_name="score-shard-{index}", retries=1, retry_delay_seconds=5,
      cache_policy=NO_CACHE)
def score_shard_task(model: str, job: FolderJob, index: int, files: list[str], config: EngineConfig) -> ShardResult:
    return load_and_score_shard(model, config, job, index, files, attempt=_attempt())


@dataclass(frozen=True)
class PrefectSteps:
    """`toolchain.scoring.folder.ScoringSteps` on Prefect: tasks with retries, shards by `.map` or on Dask."""

    model: str
    config: EngineConfig
    retry_delay_seconds: float = 5.0
    dask_address: str | None = None

    def run(self, name: str, fn: Callable[[int], T]) -> Attempted[T]:
        return step_task.with_options(name=name, task_run_name=name,
                                      retry_delay_seconds=self.retry_delay_seconds)(fn)

    def map_shards(self, job: FolderJob, shards: list[list[str]]) -> list[ShardResult]:
        shard_task = score_shard_task.with_options(retry_delay_seconds=self.retry_delay_seconds)
        parameters = {"model": unmapped(self.model), "job": unmapped(job), "index": list(range(len(shards))),
                      "files": shards, "config": unmapped(self.config)}
        with shard_runner(self.dask_address) as runner:
            if runner is None:
                futures = shard_task.map(**parameters)
            else:
                self.log(f"scoring {len(shards)} shard(s) on the Dask cluster at {self.dask_address}")
                futures = runner.map(shard_task, parameters=parameters)
            return [f.result() for f in futures]

    def log(self, message: str) -> None:
        log(message)


def log(message: str) -> None:
    """One line in the flow run's log (the Prefect UI's Logs tab)."""
    get_run_logger().info("%s", message)
