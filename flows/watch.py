"""`toolchain watch`: an `InboxWatcher` whose reports become Prefect events that start `score-inbox/on-arrival`.

Event `toolchain.folder.ready` on resource `toolchain.folder.<absolute folder>` (label `toolchain.folder` = the
folder). `toolchain serve --inbox I` registers the on-arrival deployment with a `DeploymentEventTrigger` on those
events for folders under I; its run scans I until no folder is ready (one process and one model load for a burst
of arrivals) and scores only files the model has not scored, so any number of events give one row per file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prefect.events import DeploymentEventTrigger, emit_event

from toolchain.errors import ScoringError
from toolchain.scoring.watch import InboxWatcher

READY_EVENT = "toolchain.folder.ready"
FOLDER_LABEL = "toolchain.folder"


def folder_resource(folder: Path) -> dict[str, str]:
    return {"prefect.resource.id": f"{FOLDER_LABEL}.{folder}", FOLDER_LABEL: str(folder)}


def emit_folder_ready(folder: Path) -> None:
    if emit_event(event=READY_EVENT, resource=folder_resource(Path(folder).absolute())) is None:
        raise ScoringError("Prefect did not accept the event: is PREFECT_API_URL set to a running server?")


def arrival_trigger(inbox: str) -> DeploymentEventTrigger:
    """Start the deployment when a folder under `inbox` is reported ready."""
    return DeploymentEventTrigger(
        name=f"audio arrived in {inbox}",
        expect={READY_EVENT},
        match={"prefect.resource.id": f"{FOLDER_LABEL}.{Path(inbox).absolute()}/*"},
    )


def watch_inbox(inbox: Path, out_dir: Path, model: Path | str, settle_seconds: float, reconcile_seconds: float,
                log=print, stop: threading.Event | None = None) -> None:
    """Watch until interrupted (or `stop` is set), emitting one event per folder that becomes ready."""
    if not os.environ.get("PREFECT_API_URL"):
        raise ScoringError("toolchain watch sends events to a Prefect server: set PREFECT_API_URL (e.g. "
                           "http://127.0.0.1:4200/api) to the server `toolchain serve` uses")
    watcher = InboxWatcher(inbox, out_dir, model, emit_folder_ready, settle_seconds=settle_seconds,
                           reconcile_seconds=reconcile_seconds, log=log)
    log(f"watching {watcher.inbox} (settle {settle_seconds:g} s, full sweep every {reconcile_seconds:g} s)")
    watcher.run(stop or threading.Event())
