"""Files and hashes: the one atomic writer, output-path checks and content hashes.

CPU facts (cores, instruction sets) live in `toolchain.cpu`, the spawn pool in `toolchain.pool`.

Atomic writes: every output (checkpoint, model, report, CSV, cache entry) is written under a temporary name in
its destination folder and renamed into place, so a killed run leaves the old file or none, never half a file.
The temporary file is created with mode 0o666 and the kernel applies the process umask, exactly as for a plain
`open(path, "w")`; nothing here reads or changes the umask (changing it is process-wide and racy under threads).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import OutputPathError, one_line

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _new_temp(path: Path, suffix: str) -> Path:
    """Create (O_EXCL) an empty hidden file beside `path`; mode 0o666 minus the umask, like any new file."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path`, else it is removed.

    `suffix` lets writers that choose a format by extension (matplotlib, `np.save`) see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _output_problem(path: Path, folder: Path) -> str:
    """Why `folder` (which is `path` or its parent) cannot take our files, or ""."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return "is a file: pass a folder" if ancestor == path else f"is inside {ancestor}, which is a file"
    try:
        with tempfile.TemporaryFile(dir=ancestor):  # Tried for real: root ignores permissions, read-only FS do not.
            pass
    except OSError as exc:
        return f"is not writable ({one_line(exc, 200)}): pass a folder you can write to"
    return ""


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse, before any work starts, a folder our outputs cannot go to; returns it absolute. Creates nothing.

    `what` names the option in the message (e.g. "--out"). A folder that does not exist yet is fine when its
    nearest existing ancestor is a folder this process can write to.
    """
    path = Path(path).expanduser().absolute()
    problem = _output_problem(path, path)
    if problem:
        raise OutputPathError(f"{what} {path} {problem}")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """`check_output_dir` for a file's folder; the file itself must not be a folder."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder: pass a file name, e.g. {path / 'predictions.csv'}")
    problem = _output_problem(path, path.parent)
    if problem:
        raise OutputPathError(f"{what} {path} {problem}")
    return path


def write_text(text: str, path: str | Path) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Indented JSON with a trailing newline, atomically."""
    return write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems refuse fsync on directories)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

