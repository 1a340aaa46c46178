"""Every exception class of the library, in one small hierarchy, and the one way to say an exception in one line.

Every error a user can cause derives from `ToolchainError`; its message is one line that names the bad value
and the way out. The CLI prints it and exits 2 without a traceback. Errors that carry a report (a failed parity
gate, a rejected variant) take it in their constructor, so the field always exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Exit codes of every command (CLI and `python -m flows`).
EXIT_USER_ERROR = 2  # A `ToolchainError`: its one line says what to fix.
EXIT_DRIFT = 3  # Asked to fail on drift (`--fail-on-drift`), and a folder drifted; every output is written.
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it).


def one_line(exc: BaseException, limit: int = 500) -> str:
    """`TypeName: first line of the message` (or just `TypeName`), at most `limit` characters; an interruption
    says so in words."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGINT)"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return (f"{type(exc).__name__}: {first}" if first else type(exc).__name__)[:limit]


class ToolchainError(Exception):
    """A user-facing error: the message names the culprit and the fix."""


class AudioDecodeError(ToolchainError):
    """An audio file could not be turned into a clip (empty, garbage, header-only, truncated, ...)."""

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode audio file {self.path}: {cause}")


class OutputPathError(ToolchainError):
    """An output path that cannot take our files: a file where a folder must go, no permission, read-only."""


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
    """An ONNX model does not compute what its checkpoint computes.

    `report` is the gate's `ParityReport` when the gate got far enough to write one, else None.
    """

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


class ParityDataError(ParityError):
    """No usable clips to compare on."""


class ParityDescriptionError(ParityError):
    """The model describes something other than the checkpoint: labels, feature config, provenance, I/O."""


class ParityToleranceError(ParityError):
    """Outputs differ from the checkpoint's beyond the thresholds."""


class VariantRejectedError(ExportError):
    """A reduced-precision variant failed its report's threshold (or could not be built); it was deleted.

    `report`: the rejected variant's `VariantReport` (None when no report could be made, e.g. a bad recipe).
    `reports`: every variant report of the export, kept ones included. `result`: the export's `ExportResult`
    (model.onnx is kept when only a variant failed), when the error comes from `export_and_certify`.
    """

    def __init__(self, message: str, report: Any = None, reports: tuple = (), result: Any = None):
        super().__init__(message)
        self.report = report
        self.reports = tuple(reports) or ((report,) if report is not None else ())
        self.result = result


class ModelMetadataError(ToolchainError):
    """An ONNX model lacks (or has unreadable) toolchain metadata."""


class ScoringError(ToolchainError):
    """Scoring cannot run: missing input folder, unreadable or incompatible model, busy output folder."""


class LedgerError(ScoringError):
    """The run ledger (`ledger.sqlite`) cannot be read or written: read-only, locked too long, damaged."""


class FolderBusyError(ScoringError):
    """Another live run holds the output folder's lock."""


class RegistryError(ToolchainError):
    """The model registry or the tracking server cannot do what was asked: unreachable, unknown model, version or
    alias, a bundle whose gate did not pass, a fetched model whose sha256 is not the registered one."""


class RegistryUnreachableError(RegistryError):
    """The tracking server did not answer (a scoring run may fall back to the version it resolved last)."""


class HealthError(ToolchainError):
    """A health setting or record that cannot be used (bad threshold, unreadable reference)."""


class DriftError(ScoringError):
    """A run asked to fail on drift (`fail_on_drift`) found it; its outputs are all written and recorded."""
