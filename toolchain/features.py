"""The feature contract: audio file -> fixed-length clip -> log-mel "image".

This module is the only place that decodes audio or computes features. Training, prediction, export parity and
scoring all import it, so a model can never be paired with different preprocessing than it was trained with.
The frozen `FeatureConfig` travels inside every checkpoint and every ONNX model, with its fingerprint.

librosa is the reference implementation (and the decoder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import AudioDecodeError, FeatureConfigError

# Bumped whenever the meaning of a config field changes, so old fingerprints stop matching.
FEATURE_CONTRACT_VERSION = "logmel-v1"


@dataclass(frozen=True)
class FeatureConfig:
    """Every parameter of the front end, with the seed recipe's values as defaults."""

    sample_rate: int = 22_050  # Hz; every input is resampled to this.
    clip_seconds: float = 5.0  # Clips are padded or truncated to this length.
    n_mels: int = 128  # Mel bands: the image height.
    n_fft: int = 2048  # FFT window, samples (~93 ms at 22,050 Hz).
    hop_length: int = 512  # Samples between frames: 5 s -> 216 frames.
    trim_top_db: float = 60.0  # librosa.effects.trim threshold below peak for leading/trailing silence.
    channels: int = 3  # The log-mel image is stacked to 3 channels for ImageNet-style models.
    max_decode_seconds: float = 600.0  # Decode at most this much of a file: a 10-hour upload stays bounded.

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FeatureConfigError(f"feature config {name}={value!r} must be a positive integer")
        for name in ("clip_seconds", "trim_top_db", "max_decode_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise FeatureConfigError(f"feature config {name}={value!r} must be a positive number")
        if self.max_decode_seconds < self.clip_seconds:
            raise FeatureConfigError(
                f"feature config max_decode_seconds={self.max_decode_seconds} is shorter than "
                f"clip_seconds={self.clip_seconds}"
            )

    @property
    def num_samples(self) -> int:
        """Samples per clip after padding/truncation."""
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def num_frames(self) -> int:
        """Spectrogram frames per clip (librosa centers frames: 1 + samples // hop)."""
        return 1 + self.num_samples // self.hop_length

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Model input for one clip: (channels, n_mels, frames)."""
        return (self.channels, self.n_mels, self.num_frames)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (safe for `torch.load(weights_only=True)`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        """Rebuild a config; unknown keys mean a newer or foreign contract and are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FeatureConfigError(
                f"feature config has unknown fields {unknown}: it was made by another version of toolchain; "
                "re-export the model with this version"
            )
        return cls(**data)

    @property
    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the contract version and every parameter."""
        payload = json.dumps(
            {"contract": FEATURE_CONTRACT_VERSION, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


DEFAULT_CONFIG = FeatureConfig()


def check_reproducible(config_dict: dict[str, Any], fingerprint: str | None) -> FeatureConfig:
    """Rebuild a stored config and refuse it when this library would compute different features."""
    config = FeatureConfig.from_dict(config_dict)
    if fingerprint is not None and config.fingerprint != fingerprint:
        raise FeatureConfigError(
            f"feature fingerprint {fingerprint} does not match this library's {config.fingerprint} for the same "
            f"parameters (contract {FEATURE_CONTRACT_VERSION}): re-export the model with this toolchain version"
        )
    return config


def _wav_truncation(path: Path) -> str | None:
    """For RIFF/WAVE files, say how the data chunk is cut short (libsndfile silently returns what is there)."""
    try:
        with path.open("rb") as f:
            header = f.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            offset = 12
            while offset + 8 <= size:
                f.seek(offset)
                chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"data":
                    available = size - offset - 8
                    if chunk_size != 0xFFFFFFFF and available < chunk_size:
                        return f"truncated WAV: header declares {chunk_size} data bytes, file holds {available}"
                    return None
                offset += 8 + chunk_size + (chunk_size & 1)
            return "WAV file has no data chunk"
    except OSError:
        return None


def load_audio(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Decode `path` to float32 mono at config.sample_rate (at most `max_decode_seconds`), unmodified.

    Raises `AudioDecodeError` naming the file for anything that is not decodable audio: missing, empty, garbage,
    header-only or truncated files (librosa 0.11 raises EOFError / NoBackendError for some of these and silently
    returns short or empty arrays for others).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")
    truncation = _wav_truncation(path)
    if truncation:
        raise AudioDecodeError(path, truncation)

    import librosa  # Imported late: ~1 s, and worker processes only need it here.

    try:
        with warnings.catch_warnings():
            # librosa 0.11 warns (PySoundFile failed / audioread deprecated) before its audioread fallback.
            warnings.simplefilter("ignore")
            y, _ = librosa.load(path, sr=config.sample_rate, mono=True, duration=config.max_decode_seconds)
    except Exception as exc:  # librosa raises EOFError, NoBackendError, RuntimeError, LibsndfileError, ...
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AudioDecodeError(path, f"{type(exc).__name__}{': ' + cause if cause else ''}") from exc
    if y.size == 0:
        raise AudioDecodeError(path, "no audio samples (header only?)")
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError(path, "audio contains NaN or infinite samples")
    return np.asarray(y, dtype=np.float32)


def load_and_fix_length(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Decode `path` to a fixed-length clip (reference implementation).

    Returns float32 mono audio of shape (config.num_samples,) at config.sample_rate: leading/trailing silence
    trimmed, padded with zeros or truncated to `clip_seconds`, peak-normalized to 1 (all-zero stays zero).
    Raises `AudioDecodeError` naming the file for anything that is not decodable audio.
    """
    return fix_length(load_audio(path, config), config)


def fix_length(y: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Trim silence, pad/truncate and peak-normalize an already-decoded mono signal at config.sample_rate."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if np.any(y):
        y, _ = librosa.effects.trim(y, top_db=config.trim_top_db)
    y = librosa.util.fix_length(y, size=config.num_samples)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0:
        y = y / peak
    return y.astype(np.float32, copy=False)


def extract_log_mel(y: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Log-mel spectrogram of a fixed-length clip, min-max scaled to [0, 1].

    Input: (num_samples,) float32. Output: (n_mels, num_frames) float32; all zeros for a silent clip.
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32),
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
    )
    db = librosa.power_to_db(mel, ref=np.max)
    lo, hi = float(db.min()), float(db.max())
    if hi - lo <= 0:
        return np.zeros_like(db, dtype=np.float32)
    return ((db - lo) / (hi - lo)).astype(np.float32)


def stack_channels(log_mel: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """(n_mels, frames) -> (channels, n_mels, frames), the model's per-clip input."""
    return np.repeat(log_mel[np.newaxis], config.channels, axis=0)


def features_from_path(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Decode and featurize one file with the fast path: (n_mels, num_frames) float32 in [0, 1].

    What training, prediction, parity and scoring use; `tests/test_features_fast.py` holds it to the librosa
    reference (`extract_log_mel(load_and_fix_length(path))`) within 1e-3.
    """
    from toolchain.features_fast import fix_length_fast, log_mel_fast

    return log_mel_fast(fix_length_fast(load_audio(path, config), config), config)


def reference_features_from_path(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The librosa reference for `features_from_path`: slower, the definition of correct."""
    return extract_log_mel(load_and_fix_length(path, config), config)


AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif", ".au", ".opus", ".wma"})


def is_audio_path(path: str | Path) -> bool:
    """True for file names with a known audio extension, case-insensitively (`A.WAV` counts)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS
