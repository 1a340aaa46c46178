"""Scoring: folders of audio -> timestamped prediction CSVs and a run ledger, through ONNX Runtime.

Never imports torch, `toolchain.training` or `toolchain.export` (a test checks it), so a scoring-only install
can stay small.
"""

from toolchain.scoring.engine import (
    ScoredRow,
    ScoringModel,
    load_model,
    score_files,
)
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.folder import FolderOutcome, run_folder, score_folder
from toolchain.scoring.inbox import scan_inbox
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.publish import FolderSummary
from toolchain.scoring.steps import LocalSteps

__all__ = [
    "EngineConfig", "FolderOutcome", "FolderSummary", "Ledger", "LocalSteps", "ScoredRow", "ScoringModel",
    "load_model", "run_folder", "scan_inbox", "score_files", "score_folder",
]
