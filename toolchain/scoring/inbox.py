"""Inbox scans: every subfolder of an inbox that holds audio files no model has decided about, once they are done
being written, scored by its own `run_folder` (the caller says how: in this thread, or as a Prefect child flow run);
or, for a backfill, every matching subfolder holding files the given model has not decided about.

A scan costs what arrives, not what is stored: a subfolder whose listing (`toolchain.scoring.listings`) is as it
was when all its files were last found decided is skipped after one stat per directory, without looking at its
files; the ledger's listings come in one query. Each scan also looks at the files of the subfolders verified
longest ago, up to `reconcile_files` files: a file rewritten in place, which no listing shows, is found within
(files in the inbox / reconcile_files) scans, and at once when the watcher saw it happen. Inbox scans are
forward-only: a new serving model is recorded in the ledger's `inbox_history` and scores what no model decided yet;
`toolchain backfill` rescores history on request.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.audio.decode import is_hidden
from toolchain.errors import ScoringError, one_line
from toolchain.io import check_output_dir
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import (
    DEFAULT_SETTLE_SECONDS,
    Backfill,
    check_folder,
    look_into,
    ready_files,
)
from toolchain.scoring.folder import FolderOutcome, run_folder
from toolchain.scoring.ledger import Ledger, Listing
from toolchain.scoring.listings import listing_unchanged, take_listing
from toolchain.scoring.models import describe_model, load_model_cached, resolve_model
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.roots import allowed_roots, confine, outside_roots
from toolchain.scoring.runs import scoring_run
from toolchain.scoring.shards import DEFAULT_SHARD_SIZE
from toolchain.scoring.steps import LocalSteps, ScoringSteps

DEFAULT_RECONCILE_FILES = 4000  # Files of unchanged-looking folders each scan looks at anyway (about 0.1 s).


def subfolders(inbox: str | Path, pattern: str = "*",
               log: Callable[[str], None] = lambda message: None) -> list[Path]:
    """The visible subfolders of `inbox` whose name matches `pattern`, resolved and sorted by name; one that links
    outside the folders this process may read is skipped with one logged line."""
    root = check_folder(inbox, "inbox")
    roots = allowed_roots()
    found = []
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if is_hidden(entry.name) or not fnmatch.fnmatchcase(entry.name, pattern) or not entry.is_dir():
                continue
            path = root / entry.name  # `root` is resolved: only a symlinked entry can lead elsewhere.
            if entry.is_symlink():
                if roots and outside_roots(path, roots):
                    log(f"skipped {path}: it links to {path.resolve()}, outside the folders this server may read")
                    continue
                path = path.resolve()  # Resolved like `check_folder` does, so it matches its ledger key.
            found.append(path)
    return found


def folders_with_new_files(inbox: str | Path, ledger: Ledger, model_sha256: str,
                           settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                           log: Callable[[str], None] = lambda message: None, *,
                           reconcile_files: int = DEFAULT_RECONCILE_FILES,
                           backfill: Backfill | None = None) -> list[Path]:
    """Subfolders of `inbox` (sorted by name) holding audio files not decided yet (`look_into`: by any model, or
    with `backfill` by this one, in the subfolders it names) that are done being written; files still being
    written are left for a later scan.

    Without `backfill`, a subfolder whose recorded listing is unchanged is not looked into, except those verified
    longest ago, up to `reconcile_files` files (at least one folder when it is above 0); a subfolder found with
    every file decided has its listing recorded.
    """
    root = check_folder(inbox, "inbox")
    candidates = subfolders(root, backfill.folders if backfill else "*", log)
    known = {} if backfill else ledger.listings(str(f) for f in candidates)
    look, unchanged = [], []
    for folder in candidates:
        recorded = known.get(str(folder))
        if recorded is not None and listing_unchanged(folder, recorded.directories):
            unchanged.append((recorded.verified_ns, str(folder), folder, recorded.files))
        else:
            look.append(folder)
    budget = reconcile_files
    for _, _, folder, files in sorted(unchanged):  # The deep reconcile: longest unverified first.
        if budget <= 0 or (files > budget and budget < reconcile_files):
            break
        look.append(folder)
        budget -= files
    ready, dirty = [], []
    for folder in look:
        directories = take_listing(folder)  # Before the files: a change while they are looked at makes it stale.
        pending, files = look_into(folder, ledger, model_sha256, backfill)
        if not pending:
            if directories is not None and backfill is None:
                ledger.record_listing(str(folder), Listing(directories, time.time_ns(), files))
            continue
        dirty.append(str(folder))  # Looked into at every scan until all of it is decided.
        if ready_files(folder, pending, settle_seconds, log=log):
            ready.append(folder)
    if dirty:
        ledger.forget_listings(dirty)
    return sorted(ready, key=lambda p: p.name)


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
               settle_seconds: float = DEFAULT_SETTLE_SECONDS,
               reconcile_files: int = DEFAULT_RECONCILE_FILES, backfill: Backfill | None = None) -> InboxScan:
    """Score each subfolder of `inbox` that holds audio files not decided yet and done being written
    (`folders_with_new_files`), with `score_subfolder(folder, parent_run_id)` (a `run_folder` with
    `skip_scored=True` and the same `backfill`, possibly as a child flow run). One failed folder never stops the
    others; `report` sees the scan before a failure is raised (`ScoringError` naming the failed folders).

    An inbox scan records the model as the inbox's serving model (forward-only) when it is a new one; a
    `backfill` is recorded with what it covers."""
    confine(allowed_roots(), model=model_path, output_dir=out_dir, inbox=inbox)
    check_output_dir(out_dir, "output_dir")
    root = str(check_folder(inbox, "inbox"))
    identity = describe_model(model_path)
    ledger = Ledger.in_dir(out_dir)
    mode = "backfill" if backfill else "inbox"
    with scoring_run(out_dir, mode=mode, target=root, model=identity, flow_run_id=flow_run_id) as run_id:
        if backfill:
            ledger.record_history(root, identity.sha256, identity.path, "backfill", since=backfill.since,
                                  folders=backfill.folders)
        else:
            replaced = ledger.adopt_model(root, identity.sha256, identity.path)
            if replaced:
                steps.log(f"inbox {inbox}: model {identity.sha256[:12]} replaces {replaced[:12]}: it scores what "
                          f"arrives from now on; files already scored stay with the model that scored them "
                          f"(`toolchain backfill` rescores them)")
        todo = steps.run("find-unscored", lambda attempt: [
            str(p) for p in folders_with_new_files(inbox, ledger, identity.sha256, settle_seconds, steps.log,
                                                   reconcile_files=reconcile_files,
                                                   backfill=backfill)]).value
        what = f"not yet scored by model {identity.sha256[:12]}" if backfill else "no model has scored"
        steps.log(f"inbox {inbox}: {len(todo)} folder(s) with files {what}")
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


def backfill_inbox(model_path: str | Path, inbox: str | Path, out_dir: str | Path, backfill: Backfill,
                   config: EngineConfig = EngineConfig(), progress: ProgressReporter = NullProgress(), *,
                   shard_size: int = DEFAULT_SHARD_SIZE, options: ScoringOptions = ScoringOptions(),
                   settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                   log: Callable[[str], None] = lambda message: None) -> InboxScan:
    """Rescore an inbox's history with this model, in this thread (`toolchain backfill`): every subfolder
    matching `backfill.folders` gets a CSV of the files another model decided about and this one has not (files
    first recorded before `backfill.since` excepted), so every file the backfill covers ends with exactly one row
    from it; files no model decided yet are the inbox scans'. Killed at any point, the same call resumes: folders
    it completed are decided, the one it was in is scored again from its start."""
    check_output_dir(out_dir, "--output-dir")
    check_folder(inbox, "--inbox")
    model_path = resolve_model(model_path, say=log)  # models:/NAME@ALIAS: the version it names now.
    options.tag(load_model_cached(model_path, config).feature_config)  # Refused before any ledger row.
    steps = LocalSteps(model_path, config, progress, say=log)

    def score(sub: str, parent: str) -> FolderOutcome:
        return run_folder(model_path, sub, out_dir, steps, shard_size=shard_size, skip_scored=True,
                          parent_run_id=parent, options=options, settle_seconds=settle_seconds, backfill=backfill)

    return scan_inbox(model_path, inbox, out_dir, steps, score, settle_seconds=settle_seconds, backfill=backfill)
