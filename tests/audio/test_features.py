"""The fast feature path against the librosa reference, on real FSDD recordings (CC BY-SA 4.0) and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.audio.decode import load_audio
from toolchain.audio.features import features_from_path, fix_length_fast, log_mel_fast, trim_bounds
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
