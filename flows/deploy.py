"""Deployments of the scoring flows, served by one long-running process (`toolchain serve`).

  score-folder/on-demand    no schedule: `prefect deployment run 'score-folder/on-demand' --param 'folder="/x"'`
  score-inbox/inbox-scan    on a schedule (interval seconds or cron): scores each new subfolder of the inbox
  score-inbox/on-arrival    started by `toolchain watch` events: scans the inbox until a scan scores nothing
  score-inbox/backfill      no schedule: rescores the inbox's history with the model, on request
                            (`prefect deployment run 'score-inbox/backfill' --param 'backfill={"since": "2026-05-01"}'`)

All carry the model, output directory, `engine`, `options` and `run` as default parameters, so a run needs only
what differs. Schedules live
here, never in the flow. `serve()` registers the deployments with the server named by PREFECT_API_URL, starts one
inbox scan at once, and then polls it for runs, executing each in a child process. Stopping it leaves the schedules active (another serve
process may be serving them); the inbox scan allows one run at a time and cancels the ones that collide, so a
restart after downtime runs one scan, not the backlog. Backfills run one at a time (others wait their turn), and
the process has a slot more for them, so a long backfill does not keep the scans waiting. Runs are confined to the folders given to
serve.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments import run_deployment
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.logging import get_logger

from flows.recovery import HEARTBEAT_SECONDS, ensure_crash_automations, reap_dead_runs
from flows.score_folder import RunSettings, score_folder_flow
from flows.score_inbox import FLOW_NAME as INBOX_FLOW
from flows.score_inbox import score_inbox_flow
from flows.watch import arrival_trigger
from toolchain.errors import ScoringError
from toolchain.io import check_output_dir
from toolchain.registry.fetch import cache_root
from toolchain.registry.refs import is_registry_ref
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS, Backfill, check_folder
from toolchain.scoring.models import describe_model, resolve_model
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.roots import ALLOWED_ROOTS_ENV

INBOX_DEPLOYMENT = "inbox-scan"
ON_DEMAND_DEPLOYMENT = "on-demand"
ON_ARRIVAL_DEPLOYMENT = "on-arrival"
BACKFILL_DEPLOYMENT = "backfill"
DEFAULT_INTERVAL_SECONDS = 300.0  # An inbox scan every 5 minutes: new drops appear within minutes, idle scans are cheap.


@dataclass(frozen=True)
class ServeOptions:
    model: str  # Absolute path of the .onnx model, or models:/NAME@ALIAS (resolved by every run).
    output_dir: str
    inbox: str | None = None  # Without an inbox only the on-demand deployment is served.
    interval_seconds: float | None = DEFAULT_INTERVAL_SECONDS
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # An inbox subfolder without _READY waits this long unchanged.
    cron: str | None = None  # Replaces the interval when set.
    limit: int = 1  # Concurrent flow runs: one run already fills two cores.
    engine: EngineConfig = field(default_factory=EngineConfig)
    allow_roots: tuple[str, ...] = ()  # Folders runs may touch besides the inbox, output dir and model folder.
    scoring: ScoringOptions = field(default_factory=ScoringOptions)  # Windows, aggregation, outputs, health.
    fail_on_drift: bool = False  # A drift verdict fails the flow run (for Prefect notifications).


def build_deployments(options: ServeOptions) -> list[RunnerDeployment]:
    """The RunnerDeployments to serve (validated: the model must load its metadata, the inbox must exist)."""
    # A registered model (models:/NAME@ALIAS) is resolved here once to check it, and again by every run.
    options.scoring.tag(describe_model(resolve_model(options.model, say=print)).metadata.feature_config)
    check_output_dir(options.output_dir, "--output-dir")
    # Every field of each typed parameter, so the UI's form shows what runs.
    run = RunSettings(settle_seconds=options.settle_seconds, fail_on_drift=options.fail_on_drift)
    common = {"model": options.model, "output_dir": options.output_dir, "engine": dataclasses.asdict(options.engine),
              "options": dataclasses.asdict(options.scoring), "run": dataclasses.asdict(run)}
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
        check_folder(options.inbox, "--inbox")
        deployments.append(
            score_inbox_flow.to_deployment(
                name=ON_ARRIVAL_DEPLOYMENT,
                parameters={**common, "inbox": options.inbox, "drain": True},
                description=f"Score the new files of {options.inbox} when `toolchain watch` reports a folder ready: "
                "scans until nothing is ready.",
                tags=["scoring", "on-arrival"],
                entrypoint_type=EntrypointType.MODULE_PATH,
                triggers=[arrival_trigger(options.inbox)],
                # One draining scan at a time; an event during it is dropped, since the scan goes on until nothing
                # is ready (a folder that became ready in its last instant is reported again by the watcher).
                concurrency_limit=ConcurrencyLimitConfig(limit=1,
                                                         collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            )
        )
        deployments.append(
            score_inbox_flow.to_deployment(
                name=BACKFILL_DEPLOYMENT,
                parameters={**common, "inbox": options.inbox,
                            "backfill": dataclasses.asdict(Backfill())},
                description=f"Rescore the history of {options.inbox} with this model: the files it has not scored "
                "(backfill.since: only those first seen since then; backfill.folders: a subfolder name pattern).",
                tags=["scoring", "backfill"],
                entrypoint_type=EntrypointType.MODULE_PATH,
                # One backfill at a time; another waits its turn. serve() has a slot for it (`runner_limit`).
                concurrency_limit=ConcurrencyLimitConfig(limit=1,
                                                         collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            )
        )
        if options.cron is None and options.interval_seconds is None:
            raise ScoringError("the inbox scan needs a schedule: pass --interval SECONDS or --cron EXPR")
        schedule: dict[str, Any] = {"cron": options.cron} if options.cron else {"interval": options.interval_seconds}
        deployments.append(
            score_inbox_flow.to_deployment(
                name=INBOX_DEPLOYMENT,
                parameters={**common, "inbox": options.inbox},
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
    """The folders this server's runs may touch: the inbox, the output directory, the model's folder (the local
    cache of registered versions for a models:/ reference), the challenger's, and `allow_roots`."""
    models = [m for m in (options.model, options.scoring.challenger) if m]
    folders = [str(cache_root()) if is_registry_ref(m) else str(Path(m).expanduser().parent) for m in models]
    roots = [options.output_dir, *folders, *options.allow_roots]
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
    ensure_crash_automations()
    if options.inbox is not None:
        scan_now(next(d for d in deployments if d.name == INBOX_DEPLOYMENT))
    stop = threading.Event()
    threading.Thread(target=reap_dead_runs, args=(options.output_dir, stop), daemon=True,
                     name="ledger-reaper").start()
    try:
        serve(*deployments, limit=runner_limit(options), pause_on_shutdown=False,
              heartbeat_seconds=HEARTBEAT_SECONDS)
    finally:
        stop.set()


def runner_limit(options: ServeOptions) -> int:
    """Flow runs this process executes at once: `limit`, and with an inbox one more, so a running backfill (one
    at a time) still leaves `limit` slots to the scans and on-demand runs."""
    return options.limit + (1 if options.inbox is not None else 0)


def scan_now(deployment: RunnerDeployment) -> None:
    """Register the inbox scan and start one run of it now: its schedule's first run is a whole interval away (or
    at the cron's next time), and what arrived while no server ran should not wait for it. A scan already running
    (another serve process) makes this one a cancelled collision, as for any scheduled scan."""
    deployment.apply()
    run = run_deployment(f"{INBOX_FLOW}/{deployment.name}", timeout=0, tags=["scheduled", "at-start"])
    get_logger("toolchain.serve").info("inbox scan at start: flow run %s", run.name)
