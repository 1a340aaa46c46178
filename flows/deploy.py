"""Deployments of `score-folder`, served by one long-running process (`toolchain serve`).

  score-folder/inbox-scan   on a schedule (interval seconds or cron): scores each new subfolder of the inbox
  score-folder/on-demand    no schedule: `prefect deployment run 'score-folder/on-demand' --param 'folder="/x"'`
  score-folder/on-arrival   started by `toolchain watch` events: the new files of a folder that became ready

Both carry the model and output directory as default parameters, so a run needs only what differs. Schedules live
here, never in the flow. `serve()` registers the deployments with the server named by PREFECT_API_URL and then
polls it for runs, executing each in a child process. Stopping it leaves the schedules active (another serve
process may be serving them); the inbox scan allows one run at a time and cancels the ones that collide, so a
restart after downtime runs one scan, not the backlog. Runs are confined to the folders given to serve.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.score_folder import score_folder_flow
from flows.watch import arrival_trigger
from toolchain.errors import ScoringError
from toolchain.io import check_output_dir
from toolchain.scoring.engine import EngineConfig
from toolchain.scoring.folder import ALLOWED_ROOTS_ENV, DEFAULT_SETTLE_SECONDS, check_folder, describe_model

INBOX_DEPLOYMENT = "inbox-scan"
ON_DEMAND_DEPLOYMENT = "on-demand"
ON_ARRIVAL_DEPLOYMENT = "on-arrival"
DEFAULT_INTERVAL_SECONDS = 300.0  # An inbox scan every 5 minutes: new drops appear within minutes, idle scans are cheap.


@dataclass(frozen=True)
class ServeOptions:
    model: str  # Absolute path of the .onnx model.
    output_dir: str
    inbox: str | None = None  # Without an inbox only the on-demand deployment is served.
    interval_seconds: float | None = DEFAULT_INTERVAL_SECONDS
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # An inbox subfolder without _READY waits this long unchanged.
    cron: str | None = None  # Replaces the interval when set.
    limit: int = 1  # Concurrent flow runs: one run already fills two cores.
    engine: EngineConfig = field(default_factory=EngineConfig)
    allow_roots: tuple[str, ...] = ()  # Folders runs may touch besides the inbox, output dir and model folder.


def _engine_parameters(engine: EngineConfig) -> dict[str, Any]:
    """The deployment's default `engine` parameter: every field, so the UI form shows what runs."""
    return {"engine": dataclasses.asdict(engine)}


def build_deployments(options: ServeOptions) -> list[RunnerDeployment]:
    """The RunnerDeployments to serve (validated: the model must load its metadata, the inbox must exist)."""
    describe_model(options.model)
    check_output_dir(options.output_dir, "--output-dir")
    common = {"model": options.model, "output_dir": options.output_dir, **_engine_parameters(options.engine)}
    deployments = [
        score_folder_flow.to_deployment(
            name=ON_DEMAND_DEPLOYMENT,
            parameters=common,
            description="Score one folder now: pass folder as a JSON string parameter.",
            tags=["scoring"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            # Across every serve process of this server: an extra on-demand run waits for a slot.
            concurrency_limit=ConcurrencyLimitConfig(limit=options.limit,
                                                     collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        )
    ]
    if options.inbox is not None:
        check_folder(options.inbox)
        deployments.append(
            score_folder_flow.to_deployment(
                name=ON_ARRIVAL_DEPLOYMENT,
                parameters={**common, "skip_scored": True},
                description=f"Score the new files of a folder of {options.inbox} when `toolchain watch` reports "
                "it ready.",
                tags=["scoring", "on-arrival"],
                entrypoint_type=EntrypointType.MODULE_PATH,
                triggers=[arrival_trigger(options.inbox)],
                concurrency_limit=ConcurrencyLimitConfig(limit=options.limit,
                                                         collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            )
        )
        if options.cron is None and options.interval_seconds is None:
            raise ScoringError("the inbox scan needs a schedule: pass --interval SECONDS or --cron EXPR")
        schedule: dict[str, Any] = {"cron": options.cron} if options.cron else {"interval": options.interval_seconds}
        deployments.append(
            score_folder_flow.to_deployment(
                name=INBOX_DEPLOYMENT,
                parameters={**common, "inbox": options.inbox, "settle_seconds": options.settle_seconds},
                description=f"Score each subfolder of {options.inbox} not yet scored by this model.",
                tags=["scoring", "scheduled"],
                paused=False,
                entrypoint_type=EntrypointType.MODULE_PATH,
                # One scan at a time; a scan due while one runs (or the backlog of missed ones after a restart)
                # is cancelled, not queued: the next scan finds whatever they would have.
                concurrency_limit=ConcurrencyLimitConfig(limit=1,
                                                         collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
                **schedule,
            )
        )
    return deployments


def allowed_roots_of(options: ServeOptions) -> tuple[str, ...]:
    """The folders this server's runs may touch: the inbox, the output directory, the model's folder, and
    `allow_roots`."""
    roots = [options.output_dir, str(Path(options.model).parent), *options.allow_roots]
    if options.inbox:
        roots.insert(0, options.inbox)
    return tuple(dict.fromkeys(str(Path(r).expanduser().resolve()) for r in roots))


def serve_deployments(options: ServeOptions) -> None:
    """Register and serve the deployments until interrupted (blocks).

    Runs are confined to `allowed_roots_of(options)` (an API user sets parameters, not this process's
    environment). Stopping this process does not pause the schedules: other serve processes may serve them.
    """
    deployments = build_deployments(options)
    os.environ[ALLOWED_ROOTS_ENV] = os.pathsep.join(allowed_roots_of(options))
    serve(*deployments, limit=options.limit, pause_on_shutdown=False)
