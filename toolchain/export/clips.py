"""Which real clips certify an export: `--parity-data DIR_OR_CSV`, else the checkpoint's validation files.

INT8 calibration draws from the training clips when the training dataset is still readable, else from the parity
candidates, always disjoint from the evaluation clips when possible, so INT8 agreement is not measured on the very
clips the quantization ranges were fitted to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolchain.audio.config import FeatureConfig
from toolchain.audio.decode import find_audio_files
from toolchain.audio.features import features_from_path, stack_channels
from toolchain.errors import AudioDecodeError, DatasetError, ParityError
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.training.data import load_dataset

if TYPE_CHECKING:
    from toolchain.training.checkpoint import Checkpoint

DEFAULT_PARITY_SAMPLES = 16  # 3 batch sizes x 16 clips: quick even for a ResNet152, enough to catch a broken graph.
DEFAULT_CALIBRATION_SAMPLES = 32  # ORT's MinMax calibration settles within a few dozen clips on this data.
# Judging a variant against ">= 99 % agreement" needs more than the gate's 16 clips (16 clips resolve 6 %).
DEFAULT_VARIANT_SAMPLES = 200
SELECTION_SEED = 0


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str | None = None  # Known for CSV manifests and class-folder trees; None for the checkpoint's val_files.


@dataclass(frozen=True)
class ClipSelection:
    parity: tuple[Clip, ...]  # The fp32 gate's clips.
    calibration: tuple[Clip, ...]  # INT8 calibration, disjoint from `evaluation` whenever the data allows.
    source: str  # Human-readable origin, recorded in the reports.
    evaluation: tuple[Clip, ...] = ()  # Variant judging: `parity` first, then more clips from the same source.


def clips_from_parity_data(source: str | Path) -> list[Clip]:
    """Clips from a training-style dataset (`toolchain.training.data.load_dataset`: class folders or filename,label CSV).

    A folder with a top-level `labels.csv` (the FSDD layout) is read through that manifest; any other folder
    that is not a class tree (flat, one class) is walked for audio files, unlabelled: parity needs no labels.
    """
    source = Path(source).expanduser()
    if source.is_dir() and (source / "labels.csv").is_file():
        source = source / "labels.csv"
    if not source.exists():
        raise DatasetError(f"parity data {source} does not exist: pass a folder of audio files or a CSV manifest")
    try:
        clips = [Clip(Path(s.path), s.label) for s in load_dataset(source)]
    except DatasetError:
        if not source.is_dir():
            raise
        clips = [Clip(p) for p in find_audio_files(source)]
    if not clips:
        raise DatasetError(f"parity data {source} holds no audio files (.wav, .flac, .ogg, .mp3, ...)")
    return clips


def training_clips(ckpt: Checkpoint) -> list[Clip]:
    """The labelled dataset the checkpoint was trained on (`train_args["data"]`), if it is still readable here."""
    data = ckpt.train_args.get("data")
    if not data:
        return []
    try:
        return [Clip(Path(s.path), s.label) for s in load_dataset(data)]
    except DatasetError:  # Moved or edited since training: fall back to the parity candidates.
        return []


def select_clips(
    ckpt: Checkpoint,
    parity_data: str | Path | None = None,
    *,
    parity_samples: int = DEFAULT_PARITY_SAMPLES,
    calibration_samples: int = 0,
    variant_samples: int = 0,
) -> ClipSelection:
    """Draw `parity_samples` gate clips, up to `variant_samples` evaluation clips (a superset of the gate's) and
    `calibration_samples` calibration clips disjoint from those.

    Without `parity_data`, the checkpoint's `val_files` that still exist are used (labelled when the training
    dataset is still readable); none left is a `ParityError` asking for `--parity-data`. Calibration prefers the
    training clips (what the quantization ranges should describe), else the remaining parity candidates, else,
    when there are no others, the parity clips themselves.
    """
    if parity_samples < 1:
        raise ParityError(f"--parity-samples {parity_samples}: at least 1 clip is needed")
    training = training_clips(ckpt)
    if parity_data is not None:
        candidates = clips_from_parity_data(parity_data)
        source = str(parity_data)
    else:
        labels = {str(c.path): c.label for c in training}
        candidates = [Clip(Path(f), labels.get(str(f))) for f in ckpt.val_files if Path(f).is_file()]
        source = f"validation files of {ckpt.path.name}"
        if not candidates:
            raise ParityError(
                f"checkpoint {ckpt.path} lists {len(ckpt.val_files)} validation files and none exist here: "
                "pass real clips with --parity-data DIR_OR_CSV"
            )
    ordered = _shuffled(candidates)
    pool = [c for c in training if str(c.path) not in {str(v) for v in ckpt.val_files}]
    n_eval = max(parity_samples, variant_samples)
    if not pool and calibration_samples:
        # Calibration must come from the same candidates: leave it its share (never fewer than the gate's clips).
        n_eval = max(parity_samples, min(n_eval, len(ordered) - calibration_samples))
    evaluation = ordered[:n_eval]
    chosen = {str(c.path) for c in evaluation}
    pool = [c for c in pool if str(c.path) not in chosen] or [c for c in ordered if str(c.path) not in chosen]
    pool = pool or evaluation  # Nothing else exists: calibrating on the evaluation clips beats not at all.
    calibration = _shuffled(pool)[:calibration_samples] if calibration_samples else []
    return ClipSelection(tuple(evaluation[:parity_samples]), tuple(calibration), source, tuple(evaluation))


def _shuffled(clips: Sequence[Clip]) -> list[Clip]:
    """A reproducible sample order: the same command certifies and calibrates with the same clips."""
    ordered = sorted(clips, key=lambda c: str(c.path))
    random.Random(SELECTION_SEED).shuffle(ordered)
    return ordered


def featurize_clips(
    clips: Sequence[Clip | str | Path],
    config: FeatureConfig,
    progress: ProgressReporter | None = None,
    key: str = "features",
) -> tuple[np.ndarray, list[Clip], list[tuple[str, str]]]:
    """Decode and featurize clips with the feature contract, skipping undecodable ones.

    Returns `(features, used, skipped)`: float32 (n_used, channels, n_mels, frames), the used `Clip`s in order,
    and `(path, reason)` for every skipped file. One bad file never sinks the batch.
    """
    progress = progress or NullProgress()
    items = [c if isinstance(c, Clip) else Clip(Path(c)) for c in clips]
    used: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    arrays = []
    progress.start(key, "Computing features", len(items))
    try:
        for clip in items:
            try:
                arrays.append(stack_channels(features_from_path(clip.path, config), config))
                used.append(clip)
            except AudioDecodeError as exc:
                skipped.append((str(clip.path), exc.cause))
            progress.advance(key)
    finally:
        progress.finish(key)
    shape = (0, *config.input_shape)
    features = np.stack(arrays).astype(np.float32, copy=False) if arrays else np.zeros(shape, np.float32)
    return features, used, skipped
