"""Where the runs of a server may read and write: the allowed roots, and the check made before anything is touched."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from toolchain.errors import ScoringError

ALLOWED_ROOTS_ENV = "TOOLCHAIN_ALLOWED_ROOTS"  # os.pathsep-separated folders; set by `toolchain serve`.


def allowed_roots() -> tuple[Path, ...]:
    """The folders runs of this process are confined to (resolved), or () when unconfined.

    `toolchain serve` sets them in its own environment, which the flow runs it starts inherit; anyone who can
    reach the Prefect API can set a run's parameters, but not this.
    """
    value = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return tuple(Path(p).resolve() for p in value.split(os.pathsep) if p)


def outside_roots(path: str | Path, roots: Sequence[Path]) -> bool:
    """True when `path` (symlinks followed) is not under any of `roots`."""
    real = Path(path).expanduser().resolve()
    return not any(real == root or real.is_relative_to(root) for root in roots)


def confine(roots: Sequence[Path], **paths: str | Path | None) -> None:
    """Refuse, before anything is read or written, a run parameter that leads outside the allowed roots."""
    if not roots:
        return
    for name, path in paths.items():
        if path is not None and outside_roots(path, roots):
            raise ScoringError(
                f"{name} {path} is outside the folders this server may touch ({', '.join(map(str, roots))}): "
                f"use a path under them, or restart `toolchain serve` with --allow-root for its folder"
            )
