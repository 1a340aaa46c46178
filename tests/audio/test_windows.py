"""The window contract: short files as one clip, long files as one clip window on each sound (by default) or as
hopped windows in the original file's time (the grid), and a long file read in blocks giving the windows a whole
decode gives.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from toolchain.audio import windows as windows_module
from toolchain.audio.config import FeatureConfig
from toolchain.audio.decode import load_audio
from toolchain.audio.features import features_from_path
from toolchain.audio.windows import (
    LONG_FILE_SECONDS,
    WindowRule,
    file_windows,
    file_windows_or_plan,
    window_starts,
    windows_from_signal,
)
from toolchain.errors import FeatureConfigError

CONFIG = FeatureConfig()
GRID = WindowRule(sound_db=None)


def test_window_starts_hop_from_the_start_and_align_the_last_to_the_end():
    assert window_starts(100, 400, 500, 250) == [100]  # Fits in one window.
    assert window_starts(0, 1000, 500, 250) == [0, 250, 500]  # The hop lands on the end: no duplicate.
    assert window_starts(0, 1100, 500, 250) == [0, 250, 500, 600]  # The last is end-aligned, not padded.
    assert window_starts(0, 501, 500, 250) == [0, 1]


def test_a_file_within_one_window_is_featurized_exactly_as_a_clip(fsdd_clips):
    for path in fsdd_clips[:10]:
        windows = file_windows(path, CONFIG)
        assert windows.features.shape == (1, *CONFIG.input_shape[1:]) and windows.last
        np.testing.assert_array_equal(windows.features[0], features_from_path(path, CONFIG))
        assert 0 <= windows.starts_s[0] < windows.ends_s[0] <= windows.duration_s
        assert windows.scored_s == pytest.approx(windows.ends_s[0] - windows.starts_s[0])


def test_long_audio_is_trimmed_then_windowed_in_the_files_time(fsdd_clip):
    sr = CONFIG.sample_rate
    clip = load_audio(fsdd_clip, CONFIG)
    y = np.zeros(30 * sr, dtype=np.float32)
    y[2 * sr:2 * sr + clip.size] = clip  # Sound from 2 s ...
    y[20 * sr:20 * sr + clip.size] = clip  # ... to ~20.5 s; silence around.
    got = windows_from_signal(y, CONFIG, WindowRule(hop_seconds=2.0, sound_db=None))
    assert got.duration_s == pytest.approx(30.0)
    assert got.starts_s[0] == pytest.approx(2.0, abs=0.1) and got.ends_s[-1] == pytest.approx(20.5, abs=0.2)
    assert np.allclose(np.diff(got.starts_s[:-1]), 2.0)
    assert got.ends_s[-1] - got.starts_s[-1] == pytest.approx(CONFIG.clip_seconds)  # No padded tail.
    assert got.scored_s == pytest.approx(got.ends_s[-1] - got.starts_s[0])
    assert got.features.shape[0] == len(got.starts_s) and float(got.features.min()) >= 0.0


def test_a_hop_longer_than_the_window_and_bad_limits_are_refused():
    with pytest.raises(FeatureConfigError, match="hop_seconds=6 is longer than the model's 5-s window"):
        WindowRule(hop_seconds=6).hop_for(CONFIG)
    for bad in (0, -1, float("nan")):
        with pytest.raises(FeatureConfigError, match="must be a positive number"):
            WindowRule(hop_seconds=bad)
        with pytest.raises(FeatureConfigError, match="max_duration_s"):
            WindowRule(max_duration_s=bad)
    assert WindowRule().tag(CONFIG) == "windows-v2 5s/2.5s sound+6dB"
    assert GRID.tag(CONFIG) == "windows-v2 5s/2.5s end-aligned"
    assert WindowRule(sound_db=10).tag(CONFIG) == "windows-v2 5s/2.5s sound+10dB"
    with pytest.raises(FeatureConfigError, match="sound_db=0 must be a positive number of dB"):
        WindowRule(sound_db=0)


@pytest.mark.parametrize("rule", [GRID, WindowRule()], ids=["grid", "sound"])
def test_a_long_file_is_streamed_in_parts_that_match_a_whole_decode(fsdd_dir, tmp_path, monkeypatch, rule):
    """A 44.1 kHz stereo file longer than LONG_FILE_SECONDS: read in blocks (never whole), its windows are those
    of decoding it whole, up to the resampler's edges."""
    monkeypatch.setattr(windows_module, "PART_WINDOWS", 4)  # Several parts for the sparse sound windows too.
    sr = 44_100
    seconds = int(LONG_FILE_SECONDS) + 15
    rng = np.random.default_rng(1)
    y = np.zeros((seconds * sr, 2), dtype=np.float32)
    clips = sorted((fsdd_dir / "recordings").glob("*_nicolas_3.wav"))
    for i, offset in enumerate(range(4, seconds - 4, 9)):
        clip = load_audio(clips[i % len(clips)], FeatureConfig(sample_rate=sr))
        at = offset * sr
        y[at:at + clip.size, 0] += clip
        y[at:at + clip.size, 1] += 0.5 * clip
    y += rng.normal(0, 1e-3, y.shape).astype(np.float32)
    path = tmp_path / "long.wav"
    soundfile.write(path, y, sr, subtype="PCM_16")

    plan = file_windows_or_plan(path, CONFIG, rule)
    assert not hasattr(plan, "features") and len(plan.parts) > 1  # Planned, not decoded whole.
    streamed = file_windows(path, CONFIG, rule)
    whole = windows_from_signal(load_audio(path, CONFIG, max_seconds=None), CONFIG, rule)
    if rule.sound_db is not None:  # One window on each of the 15 digits, from its onset.
        assert len(whole.starts_s) == len(range(4, seconds - 4, 9))
        np.testing.assert_allclose(np.round(whole.starts_s), range(4, seconds - 4, 9))
    assert len(streamed.starts_s) == len(whole.starts_s)
    np.testing.assert_allclose(streamed.starts_s, whole.starts_s, atol=2 / CONFIG.sample_rate)
    np.testing.assert_allclose(streamed.ends_s, whole.ends_s, atol=2 / CONFIG.sample_rate)
    assert streamed.audible == whole.audible  # Every window marked on the grid; none needed on the sounds.
    assert len(streamed.audible) == (len(streamed.starts_s) if rule.sound_db is None else 0)
    assert streamed.duration_s == pytest.approx(seconds, abs=1e-3)
    assert float(np.abs(streamed.features - whole.features).max()) < 2e-2  # Resampler edges; same picture.
    assert float(np.abs(streamed.features - whole.features).mean()) < 1e-3

    limited = file_windows(path, CONFIG, WindowRule(max_duration_s=40, sound_db=rule.sound_db))
    assert limited.duration_s == pytest.approx(40, abs=1e-3) and limited.ends_s[-1] <= 40 + 1e-6


def test_silent_windows_inside_a_recording_are_marked_by_the_trims_rule():
    rng = np.random.default_rng(0)
    sr = CONFIG.sample_rate
    y = rng.normal(0, 1e-4, 30 * sr).astype(np.float32)  # -80 dB noise: silence to a 60-dB trim.
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    y[:sr] += tone  # A tone at the start, one at 21.2 s, digital silence from 25 s to 29 s, a tone at the end.
    at = int(21.2 * sr)
    y[at:at + sr] += tone
    y[25 * sr:29 * sr] = 0
    y[29 * sr:] += tone
    w = windows_from_signal(y, CONFIG, WindowRule(hop_seconds=2.5, sound_db=None))
    assert len(w.audible) == len(w.starts_s)
    for start, end, audible in zip(w.starts_s, w.ends_s, w.audible):
        holds_tone = start < 1.0 or (start < 22.2 and end > 21.2) or end > 29.0
        assert audible == holds_tone, (start, end)
    one = windows_from_signal(tone, CONFIG)
    assert one.audible == ()  # A clip that fits one window is scored as in training: always counted.


def _calls_in_noise(fsdd_dir, offsets, noise_rms=1e-3, seconds=30):
    sr = CONFIG.sample_rate
    y = np.random.default_rng(2).normal(0, noise_rms, seconds * sr).astype(np.float32)
    clips = sorted((fsdd_dir / "recordings").glob("*_george_5.wav"))
    for clip_path, offset in zip(clips, offsets):
        clip = load_audio(clip_path, CONFIG)
        at = int(offset * sr)
        y[at:at + clip.size] += clip / np.abs(clip).max() * 0.5
    return y


def test_sound_placement_gives_each_call_one_window_scored_as_the_call_alone(fsdd_dir):
    offsets = [2.0, 9.3, 17.1, 24.6]
    y = _calls_in_noise(fsdd_dir, offsets)
    grid = windows_from_signal(y, CONFIG, GRID)
    sound = windows_from_signal(y, CONFIG)  # The default placement.
    assert len(grid.starts_s) > 8 and len(sound.starts_s) == len(offsets) and sound.audible == ()
    sr = CONFIG.sample_rate
    for i, offset in enumerate(offsets):
        # The window starts where the digit does (FSDD clips begin within a few hundredths of their sound) and
        # holds only that digit: exactly the image of the same samples cut out and scored as a short file.
        assert sound.starts_s[i] == pytest.approx(offset, abs=0.1)
        assert sound.ends_s[i] - sound.starts_s[i] < 1.0
        alone = windows_from_signal(y[round(sound.starts_s[i] * sr):round(sound.ends_s[i] * sr)], CONFIG)
        np.testing.assert_array_equal(sound.features[i], alone.features[0])
    assert sound.scored_s == pytest.approx(sum(e - s for s, e in zip(sound.starts_s, sound.ends_s)))


def test_sound_placement_falls_back_to_the_grid_where_nothing_stands_out():
    sr = CONFIG.sample_rate
    steady = np.random.default_rng(3).normal(0, 0.1, 12 * sr).astype(np.float32)  # Steady noise: no sound stands out.
    grid = windows_from_signal(steady, CONFIG, GRID)
    sound = windows_from_signal(steady, CONFIG, WindowRule(sound_db=10))
    assert sound.starts_s == grid.starts_s and sound.ends_s == grid.ends_s
    np.testing.assert_array_equal(sound.features, grid.features)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)  # One window: the clip path.
    np.testing.assert_array_equal(windows_from_signal(tone, CONFIG, WindowRule(sound_db=10)).features,
                                  windows_from_signal(tone, CONFIG, GRID).features)


def test_a_sound_longer_than_a_window_gets_the_grid_within_it():
    sr = CONFIG.sample_rate
    y = np.random.default_rng(4).normal(0, 1e-3, 30 * sr).astype(np.float32)
    y[3 * sr:15 * sr] += 0.3 * np.sin(2 * np.pi * 300 * np.arange(12 * sr) / sr).astype(np.float32)
    w = windows_from_signal(y, CONFIG, WindowRule(sound_db=10))
    assert w.starts_s[0] == pytest.approx(3.0, abs=0.1) and w.ends_s[-1] == pytest.approx(15.0, abs=0.1)
    assert np.allclose(np.diff(w.starts_s[:-1]), 2.5) and w.ends_s[-1] - w.starts_s[-1] == pytest.approx(5.0)


def test_sounds_denser_than_the_grid_get_the_grid():
    """A chorus: a 0.2-s call every 0.6 s over 22 s would need 33 windows on the sounds, more than the grid's 8
    five-second windows, so the file is scored on the grid (never at more than the grid's cost); the same calls
    every 3 s get a window each."""
    sr = CONFIG.sample_rate
    call = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(int(0.2 * sr)) / sr).astype(np.float32)

    def calls_every(seconds: float) -> np.ndarray:
        y = np.random.default_rng(7).normal(0, 1e-3, 22 * sr).astype(np.float32)
        for at in np.arange(1, 21, seconds):
            y[int(at * sr):int(at * sr) + call.size] += call
        return y

    chorus, grid = windows_from_signal(calls_every(0.6), CONFIG), windows_from_signal(calls_every(0.6), CONFIG, GRID)
    assert len(grid.starts_s) == 8 and chorus.starts_s == grid.starts_s and chorus.audible == grid.audible
    np.testing.assert_array_equal(chorus.features, grid.features)
    sparse = windows_from_signal(calls_every(3.0), CONFIG)
    np.testing.assert_allclose(sparse.starts_s, np.arange(1, 21, 3.0), atol=0.05)
