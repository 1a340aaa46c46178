"""The feature contract's fast path: decoded audio -> fixed-length clip -> log-mel "image". What training,
prediction, parity and scoring all use, so a model is never paired with other preprocessing than it was trained on.

librosa computes the same quantities with general-purpose machinery (per-call filterbank construction, float64
intermediates, an STFT for the silence RMS). Here the mel filterbank and window are built once per config, the
trim energy comes from one cumulative sum, and the STFT is scipy's float32 rfft over strided frames. Parity with the
librosa reference (`toolchain.audio.reference`) is a test (`tests/audio/test_features.py`), not an assumption.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import as_strided

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.audio.decode import load_audio

AMIN = 1e-10  # librosa.power_to_db's floor on power.
TOP_DB = 80.0  # librosa.power_to_db's dynamic-range clamp.


@lru_cache(maxsize=8)
def window_and_filterbank(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Periodic Hann window (n_fft,) and Slaney mel filterbank transposed (n_fft // 2 + 1, n_mels), float32."""
    import librosa

    window = librosa.filters.get_window("hann", config.n_fft, fftbins=True).astype(np.float32)
    mel = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)
    return window, np.ascontiguousarray(mel.T, dtype=np.float32)


def _frames(y: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """Centered, zero-padded frames like librosa's `center=True, pad_mode="constant"`: (n_frames, frame_length)."""
    pad = frame_length // 2
    padded = np.pad(y, (pad, pad))
    n_frames = 1 + (padded.size - frame_length) // hop
    stride = padded.strides[0]
    return as_strided(padded, shape=(n_frames, frame_length), strides=(hop * stride, stride), writeable=False)


TRIM_FRAME, TRIM_HOP = 2048, 512  # librosa.effects.trim's defaults, which the reference uses.


def chunk_energy(y: np.ndarray) -> np.ndarray:
    """Sum of squares of each consecutive TRIM_HOP-sample chunk of `y` (the last one partial), float64: what the
    silence trim needs, additive over blocks, so a long file's trim is found while streaming it."""
    y = np.asarray(y, dtype=np.float64)
    n_chunks = -(-y.size // TRIM_HOP)
    padded = np.zeros(n_chunks * TRIM_HOP)
    padded[:y.size] = y
    return np.square(padded).reshape(n_chunks, TRIM_HOP).sum(axis=1)


def frame_db(chunks: np.ndarray, n_samples: int) -> np.ndarray:
    """The level (dB) of each trim frame of an `n_samples`-long signal from its chunk energies: frame i is centred
    on sample i*512 and covers [i*512 - 1024, i*512 + 1024) (chunks i-2 .. i+1, zero outside the signal)."""
    padded = np.concatenate([[0.0, 0.0], np.asarray(chunks, dtype=np.float64), [0.0, 0.0]])
    n_frames = 1 + n_samples // TRIM_HOP
    energy = padded[0:n_frames] + padded[1:n_frames + 1] + padded[2:n_frames + 2] + padded[3:n_frames + 3]
    return 10.0 * np.log10(np.maximum(AMIN, energy / TRIM_FRAME))


def trim_from_energy(chunks: np.ndarray, n_samples: int, top_db: float) -> tuple[int, int]:
    """(start, end) sample indices of `librosa.effects.trim(top_db=...)` (frame 2048, hop 512, centred frames)
    from the chunk energies of an `n_samples`-long signal; (0, 0) when every frame is below the threshold."""
    db = frame_db(chunks, n_samples)
    loud = np.flatnonzero(db > db.max() - top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * TRIM_HOP), int(min(n_samples, (loud[-1] + 1) * TRIM_HOP))


def audible_spans(chunks: np.ndarray, n_samples: int, top_db: float, starts: list[int] | tuple[int, ...],
                  ends: list[int] | tuple[int, ...]) -> tuple[bool, ...]:
    """Whether each span [start, end) of samples holds sound by the silence trim's own rule: a trim frame wholly
    inside it within `top_db` of the signal's loudest frame. A span with none is silence to the trim, which would
    cut it from a clip's ends (a frame reaching over its edge is the neighbour's sound, not its own)."""
    db = frame_db(chunks, n_samples)
    loud = np.concatenate([[0], np.cumsum(db > db.max() - top_db)])
    half = TRIM_FRAME // 2
    # Frame i covers [i*512 - 1024, i*512 + 1024): wholly inside from the first i with i*512 - 1024 >= start, to
    # (one past) the last with i*512 + 1024 <= end.
    first = -(-(np.asarray(starts, dtype=np.int64) + half) // TRIM_HOP)
    last = (np.asarray(ends, dtype=np.int64) - half) // TRIM_HOP + 1
    first, last = np.clip(first, 0, db.size), np.clip(last, 0, db.size)
    return tuple(bool(v) for v in (last > first) & (loud[last] > loud[first]))


def sound_spans(chunks: np.ndarray, n_samples: int, top_db: float, margin_db: float,
                bridge_s: float, sample_rate: int) -> list[tuple[int, int]] | None:
    """Where a signal's sound stands out from its own background: runs of trim frames louder than the trim's
    threshold (`top_db` below the loudest frame) and louder than the background by `margin_db`, runs less than
    `bridge_s` apart joined, as (start, end) samples with the trim's frame bounds. None when nothing stands out
    (steady sound).

    The background is the median level of the quiet frames, those within `margin_db` of the 10th percentile: not
    the 10th percentile itself, which sits under a fluctuating background (babble, rain) so that its swells pass
    for sounds, and not the median of all frames, which lies inside the calls when they fill most of the file.
    Both are taken over the frames within `top_db` of the loudest, so stretches of digital silence do not drag
    the background down to nothing."""
    db = frame_db(chunks, n_samples)
    peak = float(db.max())
    live = db[db > peak - top_db]
    if live.size == 0:
        return None
    floor = float(np.percentile(live, 10))
    background = float(np.median(live[live <= floor + margin_db]))
    if peak - background <= margin_db:
        return None
    loud = np.flatnonzero(db > max(peak - top_db, background + margin_db))
    breaks = np.flatnonzero(np.diff(loud) > max(1, int(bridge_s * sample_rate / TRIM_HOP)))
    firsts, lasts = loud[np.r_[0, breaks + 1]], loud[np.r_[breaks, loud.size - 1]]
    return [(int(a * TRIM_HOP), int(min(n_samples, (b + 1) * TRIM_HOP))) for a, b in zip(firsts, lasts)]


def trim_bounds(y: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> tuple[int, int]:
    """(start, end) sample indices of `librosa.effects.trim(y, top_db=config.trim_top_db)` (frame 2048, hop 512)."""
    return trim_from_energy(chunk_energy(y), int(np.asarray(y).size), config.trim_top_db)


def normalize_peak(y: np.ndarray) -> np.ndarray:
    """`y` / max|y| in place (float32); an all-zero signal stays zero."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0:
        y /= peak
    return y


def fix_length_fast(y: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """`reference.fix_length` semantics: trim silence, pad/truncate to num_samples, peak-normalize; float32."""
    y = np.asarray(y, dtype=np.float32)
    if np.any(y):
        start, end = trim_bounds(y, config)
        y = y[start:end]
    return padded_clip(y, config)


def padded_clip(segment: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """One clip's samples: cut or zero-padded to the clip length, peak-normalized (float32)."""
    out = np.zeros(config.num_samples, dtype=np.float32)
    n = min(segment.size, config.num_samples)
    out[:n] = segment[:n]
    return normalize_peak(out)


def log_mel_fast(y: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """`reference.extract_log_mel` semantics for one clip: (num_samples,) -> (n_mels, num_frames) float32 in [0, 1]."""
    window, filterbank = window_and_filterbank(config)
    y = np.asarray(y, dtype=np.float32)
    frames = _frames(y, config.n_fft, config.hop_length)
    # Short clips are mostly zero padding, whose frames have exactly zero power: transform only the frames that
    # touch a non-zero sample.
    nonzero = np.flatnonzero(y)
    active = 0 if nonzero.size == 0 else -(-(int(nonzero[-1]) + 1 + config.n_fft // 2) // config.hop_length)
    active = min(active, frames.shape[0])
    mel = np.zeros((config.n_mels, frames.shape[0]), dtype=np.float32)
    if active:
        spectrum = scipy.fft.rfft(frames[:active] * window, axis=-1)  # float32 pocketfft: ~10x numpy's here.
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        mel[:, :active] = (power @ filterbank).T
    db = 10.0 * np.log10(np.maximum(AMIN, mel))
    db -= 10.0 * np.log10(max(AMIN, float(mel.max())))
    db = np.maximum(db, db.max() - TOP_DB)
    lo, hi = float(db.min()), float(db.max())
    if hi - lo <= 0:
        return np.zeros(mel.shape, dtype=np.float32)
    return ((db - lo) / (hi - lo)).astype(np.float32)


def stack_channels(log_mel: np.ndarray, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """(n_mels, frames) -> (channels, n_mels, frames), the model's per-clip input."""
    return np.repeat(log_mel[np.newaxis], config.channels, axis=0)


def features_from_path(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Decode and featurize one file: (n_mels, num_frames) float32 in [0, 1].

    Held to the librosa reference (`reference_features_from_path`) within 1e-3 by the tests.
    """
    return log_mel_fast(fix_length_fast(load_audio(path, config), config), config)
