"""The files of a folder as scoring sees them: which are audio, how they were when scored, which are new, and
which are done being written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.audio.decode import audio_relative_paths
from toolchain.errors import ScoringError
from toolchain.io import file_sha256
from toolchain.scoring.ledger import FileStamp, Ledger


def check_folder(folder: str | Path, what: str = "input folder") -> Path:
    """`folder` resolved, or a one-line `ScoringError` naming it (`what`: the option or parameter, e.g.
    "--inbox") when it is missing or not a directory."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        what_is = "is not a directory" if path.exists() else "does not exist"
        raise ScoringError(f"{what} {path} {what_is}: pass a directory of audio files")
    return path.resolve()


def discover_audio_files(folder: str | Path) -> list[str]:
    """Audio files under `folder`, recursively, as sorted posix paths relative to it."""
    return audio_relative_paths(check_folder(folder))


READY_MARKER = "_READY"  # A producer that writes (or touches) this file says: every file older than it is here.


DEFAULT_SETTLE_SECONDS = 5.0  # A file not covered by a marker is ready once nothing in its folder changed this long.
FUTURE_SLACK_SECONDS = 60.0  # Clocks of producers on other machines drift; an mtime this far ahead is "future".


def stamp_files(folder: str | Path, files: Sequence[str], *, content: bool = False) -> list[FileStamp]:
    """Size and mtime of each file (relative posix paths), and with `content` its sha256 ("" when it cannot be
    read); files that vanished meanwhile are left out."""
    root, stamps = os.fspath(folder), []
    for f in files:
        try:
            st = os.stat(os.path.join(root, f))
        except OSError:
            continue
        stamps.append(FileStamp(f, st.st_size, st.st_mtime_ns, _sha256_or_empty(Path(root) / f) if content else "",
                                st.st_ctime_ns))
    return stamps


def _sha256_or_empty(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:  # Unreadable: scoring gives it an error row; a later scan cannot tell its bytes apart.
        return ""


@dataclass(frozen=True)
class Backfill:
    """An explicit rescoring of an inbox's history by one model (`toolchain backfill`): in the subfolders whose
    name matches `folders` (a glob), every file this model has not decided about, except files the ledger first
    recorded before `since` (a UTC ISO-8601 time; None: the whole history)."""

    since: str | None = None
    folders: str = "*"

    def __post_init__(self) -> None:
        if not self.folders:
            raise ScoringError("backfill folders is empty: pass a subfolder name pattern such as '2026-05-*' (or '*')")
        if self.since is not None:  # Normalized to the ledger's own time format, so times compare as text.
            object.__setattr__(self, "since", utc_time(self.since, "backfill since"))


def utc_time(text: str, what: str) -> str:
    """`text` (a date, or an ISO-8601 time; without a zone: UTC) as the ledger writes times, or a one-line
    `ScoringError` naming `what`."""
    try:
        when = dt.datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ScoringError(f"{what} {text!r} is not a date: pass YYYY-MM-DD or an ISO-8601 time such as "
                           "2026-05-01T12:00:00Z (UTC unless it names a zone)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def new_files(folder: str | Path, ledger: Ledger, model_sha256: str,
              backfill: Backfill | None = None) -> list[FileStamp]:
    """`look_into(...)`'s undecided files."""
    return look_into(folder, ledger, model_sha256, backfill)[0]


def look_into(folder: str | Path, ledger: Ledger, model_sha256: str,
              backfill: Backfill | None = None) -> tuple[list[FileStamp], int]:
    """The audio files of `folder` not decided as they are now, and how many audio files the folder holds.

    Without `backfill` (inbox scans, forward-only): files no model has decided about, i.e. new files and files
    whose bytes changed; a file scored by an earlier model stays with it. With `backfill`: files some model has
    decided about as they are now and this model has not (files the ledger first recorded before
    `backfill.since` excepted); files nobody decided yet are left to the inbox scans and their serving model.
    A file whose size or mtime changed (a re-copy, `touch`) is hashed; the same bytes as when it was decided
    leave it decided (and its ledger stamp is updated, so it is not hashed again)."""
    anyone = ledger.decided_files(str(folder))
    mine = None if backfill is None else ledger.decided_files(str(folder), model_sha256, backfill.since)
    pending, stamps = [], stamp_files(folder, discover_audio_files(folder))
    for stamp in stamps:
        decided = _still_decided(folder, ledger, anyone.get(stamp.file), stamp)
        if mine is None:
            if decided:
                continue
        elif not decided or _still_decided(folder, ledger, mine.get(stamp.file), stamp):
            continue  # Nobody decided about it yet (the inbox scans' file), or this model has.
        pending.append(stamp)
    return pending, len(stamps)


def _still_decided(folder: str | Path, ledger: Ledger, before: FileStamp | None, stamp: FileStamp) -> bool:
    """Whether the file `stamp`, decided as `before` (None: never), is still as it was: the same size and mtime,
    or (hashed now) the same bytes, in which case its ledger stamp is updated."""
    if before is None:
        return False
    if before.matches(stamp):
        return True
    if before.sha256 and before.size == stamp.size:
        same = dataclasses.replace(stamp, sha256=_sha256_or_empty(Path(folder) / stamp.file))
        if same.sha256 == before.sha256:
            ledger.restamp(str(folder), same)
            return True
    return False


def ready_files(folder: Path, stamps: Sequence[FileStamp], settle_seconds: float, now: float | None = None,
                log: Callable[[str], None] = lambda message: None) -> list[FileStamp]:
    """Those of `stamps` (files of `folder`, as `stamp_files` saw them) that are done being written.

    A file is judged by its change time (ctime): the kernel sets it on every write, rename or touch, and neither
    a producer's clock nor `touch -d` can put it in the future, as they can an mtime. A file that changed no later
    than the `_READY` marker is ready at once (the producer said so); the others are ready once neither they nor
    the folder's listing changed for `settle_seconds`. So a second batch written into a folder that already holds
    `_READY` waits for quiet, or for the marker to be touched again. Future mtimes are logged (they do not delay a
    file)."""
    now = time.time() if now is None else now
    changed = {s.file: s.ctime_ns for s in stamps}  # From the stat that made the stamp (`stamp_files`).
    future = [s for s in stamps if s.mtime_ns / 1e9 > now + FUTURE_SLACK_SECONDS]
    if future:
        when = dt.datetime.fromtimestamp(future[0].mtime_ns / 1e9, dt.UTC).isoformat(timespec="seconds")
        log(f"{len(future)} file(s) in {folder} have a modification time in the future (e.g. {future[0].file}: "
            f"{when}; producer clock or `touch -d`?): judged by when they were written here")
    try:
        marker = (folder / READY_MARKER).stat().st_ctime_ns
    except OSError:
        marker = None
    ready = {f for f, when in changed.items() if marker is not None and when <= marker}
    rest = [when for f, when in changed.items() if f not in ready]
    if rest:
        try:
            quiet = now - max(folder.stat().st_mtime_ns, *rest) / 1e9 >= settle_seconds  # The listing counts too.
        except OSError:
            quiet = False
        if quiet:
            ready = set(changed)
    return [s for s in stamps if s.file in ready]  # In the given (sorted) order: CSV rows stay sorted.


def files_to_score(folder: Path, ledger: Ledger, model_sha256: str, settle_seconds: float,
                   now: float | None = None, log: Callable[[str], None] = lambda message: None,
                   backfill: Backfill | None = None) -> list[FileStamp]:
    """The files of `folder` an inbox run (or a `backfill`) scores now: not decided yet (`new_files`) and done
    being written (`ready_files`)."""
    pending = new_files(folder, ledger, model_sha256, backfill)
    return ready_files(folder, pending, settle_seconds, now, log) if pending else []
