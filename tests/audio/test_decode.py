"""The feature contract: invariants on real FSDD recordings and on files written here in every awkward format.

FSDD recordings: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
import soundfile as sf

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig, check_reproducible
from toolchain.audio.decode import find_audio_files, is_audio_path, load_audio
from toolchain.audio.features import features_from_path, stack_channels
from toolchain.audio.reference import (
    extract_log_mel,
    fix_length,
    load_and_fix_length,
    reference_features_from_path,
)
from toolchain.errors import AudioDecodeError, FeatureConfigError

SR = DEFAULT_CONFIG.sample_rate


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_config_derived_sizes_match_the_seed_recipe():
    assert DEFAULT_CONFIG.num_samples == 110_250
    assert DEFAULT_CONFIG.num_frames == 216
    assert DEFAULT_CONFIG.input_shape == (3, 128, 216)


def test_config_is_frozen_and_fingerprint_is_stable_and_sensitive():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.n_mels = 64  # type: ignore[misc]
    same = FeatureConfig.from_dict(DEFAULT_CONFIG.to_dict())
    assert same.fingerprint == DEFAULT_CONFIG.fingerprint
    assert len(DEFAULT_CONFIG.fingerprint) == 16
    assert FeatureConfig(n_mels=64).fingerprint != DEFAULT_CONFIG.fingerprint
    assert FeatureConfig(hop_length=256).fingerprint != DEFAULT_CONFIG.fingerprint


def test_config_rejects_bad_values_naming_them():
    with pytest.raises(FeatureConfigError, match="n_mels=0"):
        FeatureConfig(n_mels=0)
    with pytest.raises(FeatureConfigError, match="clip_seconds"):
        FeatureConfig(clip_seconds=float("nan"))
    with pytest.raises(FeatureConfigError, match="unknown fields"):
        FeatureConfig.from_dict({**DEFAULT_CONFIG.to_dict(), "pre_emphasis": 0.97})
    with pytest.raises(FeatureConfigError, match="does not match"):
        check_reproducible(DEFAULT_CONFIG.to_dict(), "0" * 16)


def test_real_clip_shape_range_dtype(fsdd_clip):
    y = load_and_fix_length(fsdd_clip)
    assert y.shape == (DEFAULT_CONFIG.num_samples,) and y.dtype == np.float32
    assert np.max(np.abs(y)) == pytest.approx(1.0)
    mel = extract_log_mel(y)
    assert mel.shape == (128, 216) and mel.dtype == np.float32
    assert mel.min() == pytest.approx(0.0) and mel.max() == pytest.approx(1.0)
    image = stack_channels(mel)
    assert image.shape == DEFAULT_CONFIG.input_shape
    assert np.array_equal(image[0], image[2])


def test_features_are_deterministic_and_path_equals_array(fsdd_clip):
    first = reference_features_from_path(fsdd_clip)
    assert np.array_equal(first, reference_features_from_path(fsdd_clip))
    assert np.array_equal(features_from_path(fsdd_clip), features_from_path(fsdd_clip))
    # Features from a path equal features from the same decoded array.
    import librosa

    raw, _ = librosa.load(fsdd_clip, sr=SR, mono=True)
    assert np.array_equal(extract_log_mel(fix_length(raw)), first)


def test_leading_silence_is_trimmed_and_short_clips_are_padded(tmp_path):
    voice = tone(1.0, SR)
    padded = np.concatenate([np.zeros(SR, np.float32), voice])
    sf.write(tmp_path / "late.wav", padded, SR)
    y = load_and_fix_length(tmp_path / "late.wav")
    # The tone starts at once (silence trimmed) and the rest is zero padding.
    assert np.max(np.abs(y[: SR // 10])) > 0.5
    assert not np.any(y[int(1.1 * SR):])


def test_long_clips_are_truncated(tmp_path):
    sf.write(tmp_path / "long.wav", tone(12.0, SR), SR)
    assert load_and_fix_length(tmp_path / "long.wav").shape == (DEFAULT_CONFIG.num_samples,)


def test_silent_clip_gives_zero_features_not_nan(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    y = load_and_fix_length(tmp_path / "silent.wav")
    assert not np.any(y)
    mel = extract_log_mel(y)
    assert np.all(np.isfinite(mel)) and not np.any(mel)


@pytest.mark.parametrize(
    "name, fmt, subtype, sr, channels",
    [
        ("pcm8.wav", "WAV", "PCM_U8", 8_000, 1),
        ("pcm16.wav", "WAV", "PCM_16", 16_000, 1),
        ("pcm24.wav", "WAV", "PCM_24", 44_100, 1),
        ("stereo.wav", "WAV", "PCM_16", 48_000, 2),
        ("odd_rate.wav", "WAV", "PCM_16", 11_025, 1),
        ("odd_rate2.wav", "WAV", "FLOAT", 37_000, 1),
        ("alaw.wav", "WAV", "ALAW", 8_000, 1),
        ("UPPER.WAV", "WAV", "PCM_16", 22_050, 1),
        ("clip.flac", "FLAC", "PCM_16", 32_000, 1),
        ("clip.ogg", "OGG", "VORBIS", 44_100, 1),
        ("clip.mp3", "MP3", "MPEG_LAYER_III", 24_000, 1),
    ],
)
def test_every_supported_format_decodes_to_the_same_contract(tmp_path, name, fmt, subtype, sr, channels):
    y = tone(1.5, sr)
    data = np.stack([y, 0.5 * y], axis=1) if channels == 2 else y
    path = tmp_path / name
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    assert is_audio_path(path)
    clip = load_and_fix_length(path)
    assert clip.shape == (DEFAULT_CONFIG.num_samples,) and clip.dtype == np.float32
    assert np.max(np.abs(clip)) == pytest.approx(1.0)
    # A 440 Hz tone stays a 440 Hz tone whatever the container, rate or bit depth.
    window = clip[:SR]
    peak_hz = np.argmax(np.abs(np.fft.rfft(window))) * SR / len(window)
    assert abs(peak_hz - 440) < 5


def write_mp3_in_wav(path, mp3_bytes: bytes, sr: int) -> None:
    """A RIFF/WAVE file whose fmt is WAVE_FORMAT_MPEGLAYER3 (0x55) around raw MP3 frames, as some recorders write."""
    fmt = struct.pack("<HHIIHHH", 0x55, 1, sr, 4000, 1, 0, 12) + struct.pack("<HIHHH", 1, 2, 144, 1, 1393)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"fact" + struct.pack("<II", 4, sr) + b"data" + struct.pack("<I", len(mp3_bytes)) + mp3_bytes
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_mp3_inside_wav_decodes(tmp_path):
    sf.write(tmp_path / "src.mp3", tone(1.0, 16_000), 16_000, format="MP3", subtype="MPEG_LAYER_III")
    write_mp3_in_wav(tmp_path / "mp3.wav", (tmp_path / "src.mp3").read_bytes(), 16_000)
    assert sf.info(tmp_path / "mp3.wav").subtype == "MPEG_LAYER_III"
    clip = load_and_fix_length(tmp_path / "mp3.wav")
    assert np.max(np.abs(clip)) == pytest.approx(1.0)


def header_only_wav(sr: int = 8_000, declared_bytes: int = 0) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, sr, sr * 2, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + declared_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", declared_bytes)
    )


@pytest.mark.parametrize(
    "name, content, cause",
    [
        ("empty.wav", b"", "empty"),
        ("garbage.wav", bytes(range(256)) * 40, "no decoder recognises|Error"),
        ("notes.WAV", b"meeting notes, not audio\n" * 50, "no decoder recognises|Error"),
        ("header_only.wav", header_only_wav(), "no audio samples"),
        ("header_claims_data.wav", header_only_wav(declared_bytes=16_000), "truncated"),
    ],
)
def test_undecodable_files_raise_the_project_error_naming_the_file(tmp_path, name, content, cause):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=cause) as info:
        load_and_fix_length(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_truncated_real_recording_is_an_error(tmp_path, fsdd_clip):
    data = fsdd_clip.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_and_fix_length(tmp_path / "cut.wav")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_and_fix_length(tmp_path / "absent.wav")


def test_find_audio_files_has_one_hidden_rule_for_everyone(tmp_path):
    for name in ("b.wav", "A.WAV", "sub/c.flac", "._b.wav", ".hidden/d.wav", "sub/.e.wav", "notes.txt", "x.wav.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_audio_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["A.WAV", "b.wav", "sub/c.flac"]
    assert all(p.is_absolute() for p in found)


def test_missing_paths_say_what_they_are(tmp_path):
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (tmp_path / "dir.wav").mkdir()
    for name, cause in (("loop.wav", "leads nowhere"), ("dangling.wav", "leads nowhere"), ("dir.wav", "a folder"),
                        ("absent.wav", "no such file")):
        with pytest.raises(AudioDecodeError, match=cause):
            load_audio(tmp_path / name)
