"""What a scoring run computes and writes beyond the model itself: how files are cut into windows, how window
probabilities become a file's, which detections are kept and which extra tables are written. One frozen config,
the same for `toolchain score`, `python -m flows` and the `score-folder` deployments (`EngineConfig` says how to
run; this says what comes out)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from toolchain.audio.config import FeatureConfig
from toolchain.audio.windows import SOUND_DB, WindowRule
from toolchain.errors import ScoringError
from toolchain.health.assess import HealthThresholds
from toolchain.inference.predictions import AGGREGATIONS, Aggregation
from toolchain.registry.refs import is_registry_ref, parse_ref


class WindowPlacement(str, Enum):
    """Where a long file's windows lie (the CLI's `--placement`; the library's `sound_db`, None for the grid)."""

    sounds = "sounds"
    grid = "grid"


def placement_sound_db(placement: WindowPlacement | str, sound_db: float | None) -> float | None:
    """`ScoringOptions.sound_db` for a placement and an optional `--sound-db`: None on the grid (where a
    `--sound-db` has no meaning and is refused), `sound_db` or the default on the sounds."""
    if WindowPlacement(placement) == WindowPlacement.grid:
        if sound_db is not None:
            raise ScoringError(f"--sound-db {sound_db:g} applies to --placement sounds; drop it, or drop "
                               "--placement grid")
        return None
    return SOUND_DB if sound_db is None else sound_db


class OutputFormat(str, Enum):
    """csv: predictions, detections and events CSVs; raven: those plus a Raven selection table."""

    csv = "csv"
    raven = "raven"


OUTPUT_FORMATS = tuple(f.value for f in OutputFormat)


class RavenRows(str, Enum):
    """What the Raven table's selections are: events (merged runs of windows) or every detection window."""

    events = "events"
    windows = "windows"


RAVEN_ROWS = tuple(r.value for r in RavenRows)


@dataclass(frozen=True)
class ScoringOptions:
    hop_seconds: float | None = None  # Seconds between window starts; None = half the model's window.
    # Windows on a file's sounds (this many dB over its own background), a clip window each; None = the grid.
    sound_db: float | None = SOUND_DB
    aggregation: Aggregation = Aggregation.mean  # File-level probabilities from the windows': mean or max.
    min_confidence: float = 0.0  # Detections rows below this confidence are left out (predictions keep every file).
    # Events (`toolchain.inference.events`): runs of one label this many seconds apart or less merge into one;
    # 0 bridges one weak window at the default hop, a negative value bridges nothing.
    merge_gap_s: float = 0.0
    raven_rows: RavenRows = RavenRows.events  # The Raven table's selections: events or detection windows.
    format: OutputFormat = OutputFormat.csv  # raven adds `raven_<UTC>.selections.txt` per folder run.
    max_duration_s: float | None = None  # Read at most this much of each file (a safety limit); None = all.
    health: HealthThresholds = HealthThresholds()  # When the run's health report says warn or drift.
    # A second model (a path or models:/NAME@ALIAS) that scores the same files in shadow: shadow_predictions_<UTC>.csv
    # and the comparison shadow_<UTC>.json beside the real outputs; "" = none.
    challenger: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.health, dict):  # From JSON (a Prefect parameter, a deployment's defaults).
            object.__setattr__(self, "health", HealthThresholds(**self.health))
        for name in ("aggregation", "format", "raven_rows"):  # Stored as plain strings: JSON-able for Prefect, like EngineConfig.
            value = getattr(self, name)
            if isinstance(value, Enum):
                object.__setattr__(self, name, value.value)
        if self.aggregation not in AGGREGATIONS:
            raise ScoringError(f"aggregation={self.aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        if self.format not in OUTPUT_FORMATS:
            raise ScoringError(f"format={self.format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        if self.raven_rows not in RAVEN_ROWS:
            raise ScoringError(f"raven_rows={self.raven_rows!r} is not one of {', '.join(RAVEN_ROWS)}")
        if not isinstance(self.merge_gap_s, (int, float)) or not math.isfinite(self.merge_gap_s):
            raise ScoringError(f"merge_gap_s={self.merge_gap_s!r} must be a number of seconds, e.g. 0 or 1.5")
        if not isinstance(self.min_confidence, (int, float)) or not 0.0 <= self.min_confidence <= 1.0 \
                or math.isnan(self.min_confidence):
            raise ScoringError(f"min_confidence={self.min_confidence!r} must be between 0 and 1")
        if self.challenger and is_registry_ref(self.challenger):
            parse_ref(self.challenger)  # A malformed reference is refused before any work.
        _ = self.rule  # Validates hop_seconds, max_duration_s and sound_db.

    @property
    def rule(self) -> WindowRule:
        try:
            return WindowRule(self.hop_seconds, self.max_duration_s, sound_db=self.sound_db)
        except Exception as exc:
            raise ScoringError(str(exc)) from None

    def tag(self, config: FeatureConfig) -> str:
        """The window rule and aggregation, e.g. `windows-v2 5s/2.5s sound+6dB, mean`: CSVs and the ledger."""
        try:
            return f"{self.rule.tag(config)}, {self.aggregation}"
        except Exception as exc:
            raise ScoringError(str(exc)) from None
