"""One small exception hierarchy.

Every error a user can cause derives from `ToolchainError`; its message is one line that names the bad value
and the way out. The CLI prints it and exits non-zero without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ToolchainError(Exception):
    """A user-facing error: the message names the culprit and the fix."""


class AudioDecodeError(ToolchainError):
    """An audio file could not be turned into a clip (empty, garbage, header-only, truncated, ...)."""

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode audio file {self.path}: {cause}")


class DatasetError(ToolchainError):
    """The dataset (folder tree or CSV manifest) is unusable."""


class FeatureConfigError(ToolchainError):
    """A feature config that this library cannot reproduce."""


class WeightsUnavailableError(ToolchainError):
    """Pretrained weights are neither cached nor downloadable."""


class TrainingError(ToolchainError):
    """Training settings or state that cannot work (bad config value, CUDA asked for but absent, bad --resume)."""


class CheckpointError(ToolchainError):
    """A checkpoint file is missing, unreadable or not one of ours."""


class ExportError(ToolchainError):
    """Exporting a checkpoint to ONNX failed."""


class ParityError(ToolchainError):
    """An ONNX model does not compute what its checkpoint computes."""


class ModelMetadataError(ToolchainError):
    """An ONNX model lacks (or has unreadable) toolchain metadata."""


class ScoringError(ToolchainError):
    """Scoring cannot run: missing input folder, unreadable or incompatible model, busy output folder."""
