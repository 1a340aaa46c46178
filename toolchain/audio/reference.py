"""The librosa reference implementation of the feature contract: slower than `toolchain.audio.features`, and the
definition of correct (a test holds the fast path to it within 1e-3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.audio.decode import load_audio


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


def reference_features_from_path(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The librosa reference for `toolchain.audio.features.features_from_path`: slower, the definition of correct."""
    return extract_log_mel(load_and_fix_length(path, config), config)
