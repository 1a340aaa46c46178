"""Deployments of `score-folder`, served by one long-running process (`toolchain serve`).

  score-folder/inbox-scan   on a schedule (interval seconds or cron): scores each new subfolder of the inbox
  score-folder/on-demand    no schedule: `prefect deployment run 'score-folder/on-demand' --param 'folder="/x"'`

Both carry the model and output directory as default parameters, so a run needs only what differs. Schedules live
here, never in the flow. `serve()` registers the deployments with the server named by PREFECT_API_URL and then
polls it for runs, executing each in a child process; stopping it pauses the inbox schedule (runs do not pile up
as Late while nothing executes them) and the next `toolchain serve` resumes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.score_folder import score_folder_flow
from toolchain.errors import ScoringError
from toolchain.scoring.engine import EngineConfig
from toolchain.scoring.folder import check_folder, describe_model

INBOX_DEPLOYMENT = "inbox-scan"
ON_DEMAND_DEPLOYMENT = "on-demand"
DEFAULT_INTERVAL_SECONDS = 300.0  # An inbox scan every 5 minutes: new drops appear within minutes, idle scans are cheap.


@dataclass(frozen=True)
class ServeOptions:
    model: str  # Absolute path of the .onnx model.
    output_dir: str
    inbox: str | None = None  # Without an inbox only the on-demand deployment is served.
    interval_seconds: float | None = DEFAULT_INTERVAL_SECONDS
    cron: str | None = None  # Replaces the interval when set.
    limit: int = 1  # Concurrent flow runs: one run already fills two cores.
    engine: EngineConfig = field(default_factory=EngineConfig)


def _engine_parameters(engine: EngineConfig) -> dict[str, Any]:
    """The deployment's default `engine` parameter: every field, so the UI form shows what runs."""
    return {"engine": dataclasses.asdict(engine)}


def build_deployments(options: ServeOptions) -> list[RunnerDeployment]:
    """The RunnerDeployments to serve (validated: the model must load its metadata, the inbox must exist)."""
    describe_model(options.model)
    common = {"model": options.model, "output_dir": options.output_dir, **_engine_parameters(options.engine)}
    deployments = [
        score_folder_flow.to_deployment(
            name=ON_DEMAND_DEPLOYMENT,
            parameters=common,
            description="Score one folder now: pass folder as a JSON string parameter.",
            tags=["scoring"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    ]
    if options.inbox is not None:
        check_folder(options.inbox)
        if options.cron is None and options.interval_seconds is None:
            raise ScoringError("the inbox scan needs a schedule: pass --interval SECONDS or --cron EXPR")
        schedule: dict[str, Any] = {"cron": options.cron} if options.cron else {"interval": options.interval_seconds}
        deployments.append(
            score_folder_flow.to_deployment(
                name=INBOX_DEPLOYMENT,
                parameters={**common, "inbox": options.inbox},
                description=f"Score each subfolder of {options.inbox} not yet scored by this model.",
                tags=["scoring", "scheduled"],
                paused=False,
                entrypoint_type=EntrypointType.MODULE_PATH,
                **schedule,
            )
        )
    return deployments


def serve_deployments(options: ServeOptions) -> None:
    """Register and serve the deployments until interrupted (blocks)."""
    serve(*build_deployments(options), limit=options.limit)
