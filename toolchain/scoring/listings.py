"""A folder's listing: the modification time of the folder and of every directory under it that scoring walks.

Creating, removing or renaming a file anywhere in the folder changes one of those times, so a folder whose listing
is what it was when every audio file in it was decided holds no new file, and an inbox scan skips it without
looking at its files (`toolchain.scoring.inbox`). What a listing cannot see (a file rewritten in place, a file
system that does not keep directory times) is caught by the watcher's events, which drop the folder's listing, and
by the deep reconcile, which looks at the oldest-verified folders one file at a time on every scan.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from toolchain.audio.decode import is_hidden

RACY_SECONDS = 2.0  # A directory changed this recently may change again within the same clock tick: not recorded.


def take_listing(folder: Path, now: float | None = None) -> dict[str, int] | None:
    """{directory relative to `folder` ("" for itself): mtime in ns} over the directories `find_audio_files` walks
    (hidden ones and symlinked ones are not), or None when one changed within `RACY_SECONDS` (a file created in
    the same clock tick as that change would leave its time as it is) or vanished meanwhile."""
    now = time.time() if now is None else now
    listing: dict[str, int] = {}
    try:
        for dirpath, dirnames, _ in os.walk(folder, onerror=_raise):
            dirnames[:] = [d for d in dirnames if not is_hidden(d)]
            mtime = os.stat(dirpath).st_mtime_ns
            if mtime / 1e9 > now - RACY_SECONDS:
                return None
            listing[Path(dirpath).relative_to(folder).as_posix().removeprefix(".")] = mtime
    except OSError:
        return None
    return listing


def listing_unchanged(folder: Path, listing: dict[str, int]) -> bool:
    """Whether every directory of `listing` still has its recorded time (one stat per directory, none per file);
    a new directory changes its parent's time."""
    try:
        return all(os.stat(folder / relative).st_mtime_ns == mtime for relative, mtime in listing.items())
    except OSError:
        return False


def _raise(exc: OSError) -> None:
    raise exc
