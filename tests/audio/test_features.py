"""The fast feature path against the librosa reference, on real FSDD recordings (CC BY-SA 4.0) and edge cases;
where sound stands out of a recording's background."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.audio.decode import load_audio
from toolchain.audio.features import (
    chunk_energy,
    features_from_path,
    fix_length_fast,
    log_mel_fast,
    sound_spans,
    trim_bounds,
)
from toolchain.audio.reference import extract_log_mel, fix_length, reference_features_from_path

TOLERANCE = 1e-3  # Max abs diff on the normalized [0, 1] features.


def test_fast_features_match_librosa_on_real_clips(fsdd_clips):
    worst = 0.0
    for path in fsdd_clips:
        fast, reference = features_from_path(path), reference_features_from_path(path)
        assert fast.shape == reference.shape == (128, 216) and fast.dtype == np.float32
        worst = max(worst, float(np.max(np.abs(fast - reference))))
    print(f"fast vs librosa, {len(fsdd_clips)} FSDD clips: max abs diff {worst:.2e}")
    assert worst <= TOLERANCE


def test_fast_trim_finds_librosas_bounds(fsdd_clips):
    import librosa

    for path in fsdd_clips:
        raw = load_audio(path)
        _, (start, end) = librosa.effects.trim(raw, top_db=DEFAULT_CONFIG.trim_top_db)
        assert trim_bounds(raw) == (start, end), path.name


@pytest.mark.parametrize(
    "name, signal",
    [
        ("noise longer than a clip", np.random.default_rng(0).standard_normal(150_000)),
        ("quiet tone after silence", np.concatenate([np.zeros(30_000), 1e-3 * np.sin(np.arange(20_000) / 7)])),
        ("single click", np.eye(1, 40_000, 12_345)[0]),
        ("silence", np.zeros(50_000)),
    ],
)
def test_fast_path_matches_on_edge_signals(name, signal):
    signal = signal.astype(np.float32)
    assert np.max(np.abs(fix_length_fast(signal) - fix_length(signal))) <= 1e-6
    reference = extract_log_mel(fix_length(signal))
    assert np.max(np.abs(log_mel_fast(fix_length_fast(signal)) - reference)) <= TOLERANCE


def test_fast_path_follows_the_config():
    config = FeatureConfig(n_mels=64, hop_length=256, clip_seconds=2.0)
    signal = np.random.default_rng(1).standard_normal(30_000).astype(np.float32)
    fast = log_mel_fast(fix_length_fast(signal, config), config)
    assert fast.shape == (64, config.num_frames)
    assert np.max(np.abs(fast - extract_log_mel(fix_length(signal, config), config))) <= TOLERANCE


def _tone_calls(background: np.ndarray, onsets: list[float], seconds: float, rms: float) -> np.ndarray:
    sr = 22_050
    y = background.copy()
    t = np.arange(int(seconds * sr)) / sr
    for onset in onsets:
        at = int(onset * sr)
        y[at:at + t.size] += rms * np.sqrt(2) * np.sin(2 * np.pi * 800 * t).astype(np.float32)
    return y


def _spans_s(y: np.ndarray) -> list[tuple[float, float]]:
    spans = sound_spans(chunk_energy(y), y.size, 60.0, 6.0, 0.25, 22_050)
    return [(a / 22_050, b / 22_050) for a, b in spans or []]


def test_sounds_stand_out_from_a_swelling_background_not_its_swells():
    """Noise swelling by +-3.5 dB (a crowd, wind): its loud phases are background, not sounds; only the calls, 16 dB
    over its mean level, are found. (Measured from the 10th percentile, the swells would pass for sounds.)"""
    sr, seconds = 22_050, 30
    rng = np.random.default_rng(5)
    t = np.arange(seconds * sr) / sr
    swell = 10 ** (3.5 * np.sin(2 * np.pi * t / 1.3) / 20)
    background = (rng.normal(0, 0.01, t.size) * swell).astype(np.float32)
    onsets = [2.0, 7.5, 13.0, 21.2, 26.0]
    spans = _spans_s(_tone_calls(background, onsets, 0.4, 0.01 * 10 ** (16 / 20)))
    assert len(spans) == len(onsets), spans
    for (start, end), onset in zip(spans, onsets):
        assert start == pytest.approx(onset, abs=0.1) and end == pytest.approx(onset + 0.4, abs=0.1)


def test_sounds_that_fill_most_of_the_file_are_all_found():
    """Calls 12 dB over a steady background, filling 70 % of the file: the background is measured on the quiet
    frames, so each call is one span. (Measured from the median of all frames, which lies in the calls, few or
    none would be.)"""
    sr, seconds = 22_050, 20
    background = np.random.default_rng(6).normal(0, 0.01, seconds * sr).astype(np.float32)
    onsets = [0.5 + 1.0 * k for k in range(19)]  # 0.7-s calls every 1.0 s: gaps of 0.3 s.
    spans = _spans_s(_tone_calls(background, onsets, 0.7, 0.01 * 10 ** (12 / 20)))
    assert len(spans) == len(onsets), spans
    for (start, _), onset in zip(spans, onsets):
        assert start == pytest.approx(onset, abs=0.1)


def test_digital_silence_inside_a_recording_is_not_its_background():
    """A recorder that wrote zeros for a quarter of the file (a dropout, a muted channel): the background is still
    the noise floor, so each call is one span."""
    sr, seconds = 22_050, 60
    background = np.random.default_rng(8).normal(0, 0.01, seconds * sr).astype(np.float32)
    background[20 * sr:35 * sr] = 0.0
    onsets = [3.0, 11.0, 40.0, 52.0]
    spans = _spans_s(_tone_calls(background, onsets, 0.4, 0.01 * 10 ** (16 / 20)))
    assert len(spans) == len(onsets), spans
    for (start, _), onset in zip(spans, onsets):
        assert start == pytest.approx(onset, abs=0.1)
