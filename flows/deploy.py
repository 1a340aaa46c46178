"""Deployments of `score-folder`, served by one long-running process (`toolchain serve`).

  score-folder/inbox-scan   on a schedule (interval seconds or cron): scores each new subfolder of the inbox
  score-folder/on-demand    no schedule: `prefect deployment run 'score-folder/on-demand' --param 'folder="/x"'`
  score-folder/on-arrival   started by `toolchain watch` events: scans the inbox until no folder is ready

Both carry the model and output directory as default parameters, so a run needs only what differs. Schedules live
here, never in the flow. `serve()` registers the deployments with the server named by PREFECT_API_URL, starts one
inbox scan at once, and then polls it for runs, executing each in a child process. Stopping it leaves the schedules active (another serve
process may be serving them); the inbox scan allows one run at a time and cancels the ones that collide, so a
restart after downtime runs one scan, not the backlog. Runs are confined to the folders given to serve.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.automations import Automation
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy, StateType
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from flows.score_folder import FLOW_NAME, score_folder_flow
from flows.watch import arrival_trigger
from toolchain.errors import ScoringError, one_line
from toolchain.io import check_output_dir
from toolchain.scoring.engine import EngineConfig
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS, check_folder
from toolchain.scoring.folder import describe_model
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.roots import ALLOWED_ROOTS_ENV

INBOX_DEPLOYMENT = "inbox-scan"
ON_DEMAND_DEPLOYMENT = "on-demand"
ON_ARRIVAL_DEPLOYMENT = "on-arrival"
HEARTBEAT_SECONDS = 30  # Prefect's minimum: a flow run's process says it is alive this often.
ZOMBIE_AFTER_SECONDS = 90  # Three missed heartbeats: the run is Crashed in the UI (measured: docs/operations.md).
# A run left Pending/Submitting by a serve process stopped mid-submission holds the deployment's concurrency slot
# (every later scan is cancelled) until it is crashed: long enough for a busy box to start a flow-run process.
NEVER_STARTED_SECONDS = 120
REAP_SECONDS = 10.0
ZOMBIE_AUTOMATION = "toolchain: crash flow runs without heartbeats"
NEVER_STARTED_AUTOMATION = "toolchain: crash flow runs stuck in Pending"
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
    scoring: ScoringOptions = field(default_factory=ScoringOptions)  # Windows, aggregation, outputs, health.
    fail_on_drift: bool = False  # A drift verdict fails the flow run (for Prefect notifications).


def _engine_parameters(engine: EngineConfig) -> dict[str, Any]:
    """The deployment's default `engine` parameter: every field, so the UI form shows what runs."""
    return {"engine": dataclasses.asdict(engine)}


def build_deployments(options: ServeOptions) -> list[RunnerDeployment]:
    """The RunnerDeployments to serve (validated: the model must load its metadata, the inbox must exist)."""
    options.scoring.tag(describe_model(options.model).metadata.feature_config)
    check_output_dir(options.output_dir, "--output-dir")
    common = {"model": options.model, "output_dir": options.output_dir, **_engine_parameters(options.engine),
              "options": dataclasses.asdict(options.scoring), "fail_on_drift": options.fail_on_drift}
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
            score_folder_flow.to_deployment(
                name=ON_ARRIVAL_DEPLOYMENT,
                parameters={**common, "inbox": options.inbox, "settle_seconds": options.settle_seconds,
                            "drain": True},
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
    ensure_crash_automations()
    if options.inbox is not None:
        scan_now(next(d for d in deployments if d.name == INBOX_DEPLOYMENT))
    stop = threading.Event()
    threading.Thread(target=_reap_dead_runs, args=(options.output_dir, stop), daemon=True,
                     name="ledger-reaper").start()
    try:
        serve(*deployments, limit=options.limit, pause_on_shutdown=False, heartbeat_seconds=HEARTBEAT_SECONDS)
    finally:
        stop.set()


def scan_now(deployment: RunnerDeployment) -> None:
    """Register the inbox scan and start one run of it now: its schedule's first run is a whole interval away (or
    at the cron's next time), and what arrived while no server ran should not wait for it. A scan already running
    (another serve process) makes this one a cancelled collision, as for any scheduled scan."""
    from prefect.deployments import run_deployment
    from prefect.logging import get_logger

    deployment.apply()
    run = run_deployment(f"{FLOW_NAME}/{deployment.name}", timeout=0, tags=["scheduled", "at-start"])
    get_logger("toolchain.serve").info("inbox scan at start: flow run %s", run.name)


def _reap_dead_runs(output_dir: str, stop: threading.Event) -> None:
    """Runs whose process died on this host (kill -9, OOM, a killed serve before this one started): crashed in
    the ledger within REAP_SECONDS, and in Prefect too (which also frees their concurrency slots at once rather
    than when the zombie automation fires). Also runs left Pending/Submitting for NEVER_STARTED_SECONDS by a
    serve process stopped mid-submission: each holds a concurrency slot, so every later scan would be cancelled
    as a collision (the Pending automation did not fire on such a run in Prefect 3.8.8; this does, from any serve
    process still running)."""
    logger = logging.getLogger(__name__)
    while True:
        try:
            for run in Ledger.in_dir(output_dir).reap_dead_runs():
                if run.flow_run_id:
                    _crash_flow_run(run.flow_run_id, f"its process {run.pid} on {run.host} died (ledger run "
                                    f"{run.run_id})")
            _crash_stuck_submissions(NEVER_STARTED_SECONDS)
        except Exception as exc:  # A locked ledger or an unreachable server is retried; serving goes on.
            logger.warning("ledger reaper: %s", one_line(exc))
        if stop.wait(REAP_SECONDS):
            return


def _crash_stuck_submissions(after_seconds: float) -> list[str]:
    """Crash `score-folder` runs whose Pending-type state (Pending, Submitting) is older than `after_seconds`."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.states import Crashed

    crashed = []
    now = dt.datetime.now(dt.UTC)
    with get_client(sync_client=True) as client:
        stuck = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.PENDING]))))
        for run in stuck:
            since = run.state.timestamp if run.state is not None else None
            if since is not None and (now - since).total_seconds() > after_seconds:
                client.set_flow_run_state(run.id, Crashed(message=(
                    f"still {run.state.name} after {after_seconds:.0f} s: its submission was interrupted (a "
                    "serve process stopped while starting it)")), force=True)
                crashed.append(str(run.id))
    return crashed


def _crash_flow_run(flow_run_id: str, message: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


def crash_automations() -> list[Automation]:
    """Automations that make a dead run visible in Prefect (it has no zombie detection of its own).

    - A flow run that stops sending heartbeats (every HEARTBEAT_SECONDS, from its own process) for
      ZOMBIE_AFTER_SECONDS is marked Crashed: a kill -9, an OOM kill, a lost machine.
    - A flow run that stays Pending for NEVER_STARTED_SECONDS (its submission was interrupted) is marked Crashed.
    """
    terminal = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    flow_runs = ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})

    def crash(message: str) -> list[ChangeFlowRunState]:
        return [ChangeFlowRunState(state=StateType.CRASHED, message=message)]

    return [
        Automation(
            name=ZOMBIE_AUTOMATION, description="toolchain: a flow run whose heartbeats stopped is crashed",
            # Armed by Running as well as by each heartbeat: a run killed before its first heartbeat went out too.
            trigger=EventTrigger(after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
                                 expect={"prefect.flow-run.heartbeat", *terminal},
                                 match=flow_runs, for_each={"prefect.resource.id"}, posture=Posture.Proactive,
                                 threshold=1, within=timedelta(seconds=ZOMBIE_AFTER_SECONDS)),
            actions=crash(f"no heartbeat for {ZOMBIE_AFTER_SECONDS} s: the process running it died"),
        ),
        Automation(
            name=NEVER_STARTED_AUTOMATION, description="toolchain: a flow run stuck in Pending is crashed",
            trigger=EventTrigger(after={"prefect.flow-run.Pending"},
                                 expect={"prefect.flow-run.Running", *terminal}, match=flow_runs,
                                 for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                                 within=timedelta(seconds=NEVER_STARTED_SECONDS)),
            actions=crash(f"still Pending after {NEVER_STARTED_SECONDS} s: its submission was interrupted"),
        ),
    ]


def ensure_crash_automations() -> None:
    """Create `crash_automations()` on the server unless they exist (any number of serve processes, one copy)."""
    for automation in crash_automations():
        try:
            Automation.read(name=automation.name)
        except ValueError:
            automation.create()
