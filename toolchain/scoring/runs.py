"""The bookkeeping around a scoring run: its id, its `runs` row in the ledger (`scoring_run`), and the claim on a
folder (`folder_job`: the output folder's lock, what killed runs left settled, the `folder_runs` row)."""

from __future__ import annotations

import datetime as dt
import fcntl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toolchain.audio.config import FeatureConfig
from toolchain.errors import FolderBusyError, OutputPathError, one_line
from toolchain.inference.contract import ModelMetadata
from toolchain.scoring.files import (
    DEFAULT_SETTLE_SECONDS,
    Backfill,
    check_folder,
    files_to_score,
)
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import ModelIdentity
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.outputs import (
    out_folder_for,
    remove_run_files,
)


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 8 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class FolderJob:
    """One folder being scored by one run, while that run holds the output folder's lock."""

    folder: str  # Absolute input folder.
    out_folder: str
    out_dir: str
    run_id: str
    folder_run_id: int
    model_sha256: str
    flow_run_id: str | None = None
    options: ScoringOptions = ScoringOptions()
    window_rule: str = ""  # `options.tag(...)` for the model's feature config.
    metadata: ModelMetadata | None = None  # The model's: its classes, sample rate, health reference.
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # Inbox runs: files newer than the _READY marker wait this long.
    backfill: Backfill | None = None  # Inbox runs: which decisions count (None: any model's, forward-only).
    model_version: str = ""  # NAME/VERSION of a registered model ("" for a model file): CSV rows name it.

    @property
    def sample_rate(self) -> int:
        """The model's (the Raven table's frequency range is half of it); the default contract's without one."""
        return self.metadata.feature_config.sample_rate if self.metadata else FeatureConfig().sample_rate

    @property
    def ledger(self) -> Ledger:
        return Ledger.in_dir(self.out_dir)


@contextmanager
def folder_lock(out_folder: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `<out_folder>/.lock`; the kernel drops it if the holder dies (kill -9)."""
    try:
        out_folder.mkdir(parents=True, exist_ok=True)
        handle = open(out_folder / ".lock", "a+")  # Closed by the `with` below.
    except OSError as exc:
        raise OutputPathError(f"cannot create the lock file {out_folder / '.lock'} ({exc.strerror}): make "
                              f"{out_folder} writable, or pass another output folder") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"{out_folder} is being written by another scoring run right now: wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def folder_job(ledger: Ledger, folder: str | Path, out_dir: str | Path, run_id: str, model_sha256: str, *,
               flow_run_id: str | None = None, skip_if_scored: bool = False,
               settle_seconds: float = DEFAULT_SETTLE_SECONDS, options: ScoringOptions = ScoringOptions(),
               window_rule: str = "", metadata: ModelMetadata | None = None,
               backfill: Backfill | None = None, model_version: str = "") -> Iterator[FolderJob | None]:
    """Claim a folder: lock it, settle what killed runs left, start its ledger row; yields None when skipped
    (`skip_if_scored` and no file of the folder is both undecided (`backfill`: by this model) and done being
    written).

    On an exception inside the block the row is marked 'failed' with the one-line reason and this run's temporary
    files are removed; the exception propagates.
    """
    folder = check_folder(folder)
    out_folder = out_folder_for(out_dir, folder)
    with folder_lock(out_folder):
        ledger.reconcile_folder(str(out_folder))
        remove_run_files(out_folder)  # Leftovers of killed runs: we hold the lock, so nobody else is writing.
        if skip_if_scored and not files_to_score(folder, ledger, model_sha256, settle_seconds, backfill=backfill):
            yield None
            return
        folder_run_id = ledger.start_folder(run_id, str(folder), str(out_folder), model_sha256, flow_run_id)
        job = FolderJob(str(folder), str(out_folder), str(out_dir), run_id, folder_run_id, model_sha256, flow_run_id,
                        options, window_rule, metadata, settle_seconds, backfill, model_version)
        try:
            yield job
        except BaseException as exc:
            ledger.finish_folder(folder_run_id, "failed", error=one_line(exc))
            remove_run_files(out_folder, run_id)
            raise


@contextmanager
def scoring_run(out_dir: str | Path, *, mode: str, target: str | Path, model: ModelIdentity,
                flow_run_id: str | None = None, parent_run_id: str | None = None,
                run_id: str | None = None, window_rule: str | None = None) -> Iterator[str]:
    """A ledger `runs` row around a block: yields the run id; 'completed', or 'failed' with the reason."""
    run_id = run_id or new_run_id()
    ledger = Ledger.in_dir(out_dir)
    ledger.reap_dead_runs()
    ledger.start_run(run_id, mode=mode, target=str(target), model_path=model.path, model_sha256=model.sha256,
                     checkpoint_sha256=model.metadata.checkpoint_sha256, flow_run_id=flow_run_id,
                     parent_run_id=parent_run_id, window_rule=window_rule, model_version=model.version)
    try:
        yield run_id
    except BaseException as exc:
        ledger.finish_run(run_id, "failed", one_line(exc))
        raise
    ledger.finish_run(run_id, "completed")
