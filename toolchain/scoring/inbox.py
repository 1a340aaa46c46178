"""Inbox scans: every subfolder of an inbox that holds audio files the model has not scored, once it is done being
written, scored by its own `run_folder` (the caller says how: in this thread, or as a Prefect child flow run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.audio.decode import is_hidden
from toolchain.errors import ScoringError, one_line
from toolchain.io import check_output_dir
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS, check_folder, files_to_score
from toolchain.scoring.folder import FolderOutcome
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import describe_model
from toolchain.scoring.roots import allowed_roots, confine, outside_roots
from toolchain.scoring.runs import scoring_run
from toolchain.scoring.steps import ScoringSteps


def folders_with_new_files(inbox: str | Path, ledger: Ledger, model_sha256: str,
                           settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                           log: Callable[[str], None] = lambda message: None) -> list[Path]:
    """Subfolders of `inbox` (sorted by name) holding audio files this model has not decided about yet that are
    done being written (`files_to_score`); files still being written are left for a later scan. A subfolder that
    links outside the folders this process may read is skipped with one logged line."""
    root = check_folder(inbox, "inbox")
    roots = allowed_roots()
    ready = []
    for entry in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)):
        if roots and outside_roots(entry, roots):
            log(f"skipped {entry}: it links to {entry.resolve()}, outside the folders this server may read")
            continue
        folder = entry.resolve()  # Resolved like `check_folder` does, so a symlinked subfolder matches its key.
        if files_to_score(folder, ledger, model_sha256, settle_seconds, log=log):
            ready.append(folder)
    return ready


@dataclass(frozen=True)
class InboxScan:
    """One scan of an inbox: the folders it found unscored and what became of each."""

    inbox: str
    run_id: str
    todo: tuple[str, ...]
    outcomes: tuple[FolderOutcome, ...]
    failed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"inbox": self.inbox, "run_id": self.run_id, "folders": [o.to_dict() for o in self.outcomes]}


def scan_inbox(model_path: str | Path, inbox: str | Path, out_dir: str | Path, steps: ScoringSteps,
               score_subfolder: Callable[[str, str], FolderOutcome], *, flow_run_id: str | None = None,
               report: Callable[[InboxScan], None] = lambda scan: None,
               settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> InboxScan:
    """Score each subfolder of `inbox` that holds audio files the model has not decided about and that are done
    being written (`files_to_score`), with `score_subfolder(folder, parent_run_id)` (a `run_folder` with `skip_scored=True`, possibly as a child flow
    run). One failed folder never stops the others; `report` sees the scan before a failure is raised
    (`ScoringError` naming the failed folders)."""
    confine(allowed_roots(), model=model_path, output_dir=out_dir, inbox=inbox)
    check_output_dir(out_dir, "output_dir")
    check_folder(inbox, "inbox")
    identity = describe_model(model_path)
    with scoring_run(out_dir, mode="inbox", target=inbox, model=identity, flow_run_id=flow_run_id) as run_id:
        todo = steps.run("find-unscored", lambda attempt: [
            str(p) for p in folders_with_new_files(inbox, Ledger.in_dir(out_dir), identity.sha256,
                                                   settle_seconds, steps.log)]).value
        steps.log(f"inbox {inbox}: {len(todo)} folder(s) with files not yet scored by model {identity.sha256[:12]}")
        outcomes, failed = [], []
        for sub in todo:
            try:
                outcomes.append(score_subfolder(sub, run_id))
            except Exception as exc:  # One folder's failure is recorded in its own run; the others go on.
                steps.log(f"{sub} failed: {one_line(exc)}")
                failed.append(sub)
        scan = InboxScan(str(inbox), run_id, tuple(todo), tuple(outcomes), tuple(failed))
        report(scan)
        if failed:
            raise ScoringError(f"{len(failed)} of {len(todo)} inbox folders failed: {', '.join(failed)}")
    return scan
