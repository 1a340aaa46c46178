"""Where the `score-folder` flow's shards run: in this process (default) or on a Dask cluster.

With a scheduler address (`tcp://host:8786`) each shard becomes a task on prefect-dask's `DaskTaskRunner`, so the
cluster's workers decode and infer in parallel while this process only discovers files, assembles the CSV and
records the ledger. The workers need the same view of the filesystem as the flow (the model path, the input folder
and the output folder, e.g. a shared mount) and the same environment (`pip install` of this project). Inside a Dask
worker process (daemonic) the engine decodes inline, so `threads_per_worker=1` workers each use about one core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import TaskRunner

from toolchain.errors import ScoringError

CONNECT_TIMEOUT_S = 30  # A scheduler that does not answer within this is reported, not waited on forever.


@contextmanager
def shard_runner(dask_address: str | None) -> Iterator[TaskRunner | None]:
    """None (map on the flow's own runner) without an address, else a started DaskTaskRunner connected to it.

    Collect the futures' results inside the block: leaving it closes the Dask client.
    """
    if not dask_address:
        yield None
        return
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(address=dask_address, client_kwargs={"timeout": CONNECT_TIMEOUT_S})
    with runner:
        try:
            runner.client  # Connect now, so an unreachable scheduler fails here with a clear message.
        except (OSError, TimeoutError) as exc:
            raise ScoringError(
                f"cannot reach the Dask scheduler at {dask_address!r} ({type(exc).__name__}): start one with "
                "`dask scheduler` and workers with `dask worker ADDRESS`, or leave dask_address unset"
            ) from None
        yield runner
