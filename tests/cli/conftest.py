"""Fixtures for tests/cli/."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_fsdd_manifest


@pytest.fixture(scope="module")
def parity_csv(tmp_path_factory, fsdd_dir) -> Path:
    """Labelled clips of one speaker, takes 4-5 (20 clips; the commands sample from them)."""
    return write_fsdd_manifest(fsdd_dir, tmp_path_factory.mktemp("parity") / "clips.csv", speakers={"yweweler"},
                               takes=range(4, 6))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, fsdd_dir) -> Path:
    """30 clips: 3 speakers x 10 digits x take 0."""
    root = tmp_path_factory.mktemp("cli_data")
    return write_fsdd_manifest(fsdd_dir, root / "tiny.csv", speakers={"george", "jackson", "lucas"}, takes=range(1))
