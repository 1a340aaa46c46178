"""The files of a folder as scoring sees them: which are audio, how they were when scored, which are new, and
whether the folder is done being written."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from toolchain.audio.decode import find_audio_files
from toolchain.errors import ScoringError
from toolchain.scoring.ledger import FileStamp, Ledger


def check_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ScoringError(f"input folder {path} {what}: pass a directory of audio files")
    return path.resolve()


def discover_audio_files(folder: str | Path) -> list[str]:
    """Audio files under `folder`, recursively, as sorted posix paths relative to it."""
    root = check_folder(folder)
    return [p.relative_to(root).as_posix() for p in find_audio_files(root)]


READY_MARKER = "_READY"  # A producer that writes this file into a folder says: every file is here.


DEFAULT_SETTLE_SECONDS = 5.0  # Without a marker, a folder is ready once nothing in it changed for this long.


def stamp_files(folder: str | Path, files: Sequence[str]) -> list[FileStamp]:
    """Size and mtime of each file (relative posix paths); files that vanished meanwhile are left out."""
    root, stamps = Path(folder), []
    for f in files:
        try:
            st = (root / f).stat()
        except OSError:
            continue
        stamps.append(FileStamp(f, st.st_size, st.st_mtime_ns))
    return stamps


def new_files(folder: str | Path, ledger: Ledger, model_sha256: str) -> list[FileStamp]:
    """The audio files of `folder` this model has not scored as they are now (new ones, changed ones)."""
    scored = ledger.scored_files(str(folder), model_sha256)
    stamps = stamp_files(folder, discover_audio_files(folder))
    return [s for s in stamps if not (s.file in scored and scored[s.file].matches(s))]


def folder_ready(folder: Path, stamps: Sequence[FileStamp], settle_seconds: float, now: float | None = None) -> bool:
    """Whether a folder is done being written: it holds `_READY`, or neither it nor any of `stamps` changed for
    `settle_seconds`."""
    if (folder / READY_MARKER).exists():
        return True
    newest = max([folder.stat().st_mtime_ns, *(s.mtime_ns for s in stamps)]) / 1e9
    return (time.time() if now is None else now) - newest >= settle_seconds
