"""Crash recovery for served runs: dead runs become Crashed in Prefect and in the ledger, and a run stuck in
Pending stops holding its deployment's concurrency slot.

Prefect has no zombie detection of its own: `toolchain serve` installs `crash_automations()` on the server (once,
whatever the number of serve processes) and runs `reap_dead_runs` in a thread of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.states import Crashed

from flows.score_folder import FLOW_NAME as FOLDER_FLOW
from flows.score_inbox import FLOW_NAME as INBOX_FLOW
from toolchain.errors import one_line
from toolchain.scoring.ledger import Ledger

HEARTBEAT_SECONDS = 30  # Prefect's minimum: a flow run's process says it is alive this often.
ZOMBIE_AFTER_SECONDS = 90  # Three missed heartbeats: the run is Crashed in the UI (measured: docs/operations.md).
# A run left Pending/Submitting by a serve process stopped mid-submission holds the deployment's concurrency slot
# (every later scan is cancelled) until it is crashed: long enough for a busy box to start a flow-run process.
NEVER_STARTED_SECONDS = 120
REAP_SECONDS = 10.0
ZOMBIE_AUTOMATION = "toolchain: crash flow runs without heartbeats"
NEVER_STARTED_AUTOMATION = "toolchain: crash flow runs stuck in Pending"


def reap_dead_runs(output_dir: str, stop: threading.Event) -> None:
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
    """Crash scoring runs (`score-folder`, `score-inbox`) whose Pending-type state (Pending, Submitting) is older than `after_seconds`."""
    crashed = []
    now = dt.datetime.now(dt.UTC)
    with get_client(sync_client=True) as client:
        stuck = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FOLDER_FLOW, INBOX_FLOW])),
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
