"""Fixtures for tests/audio/."""

from __future__ import annotations

import pytest


@pytest.fixture
def fsdd_clip(fsdd_dir):
    return fsdd_dir / "recordings" / "3_jackson_7.wav"


@pytest.fixture(scope="module")
def fsdd_clips(fsdd_dir):
    """Every 25th recording: 120 clips over all speakers and digits."""
    return sorted((fsdd_dir / "recordings").glob("*.wav"))[::25]
