"""Feature cache: one decode per file content per fingerprint, parallel extraction, bad files set aside.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from support import fsdd_rows

import toolchain.training.cache as cache_module
from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.audio.features import features_from_path
from toolchain.training.cache import CHUNKSIZE, CachedFeatureDataset, FeatureCache


def _clips(fsdd: Path, n: int) -> list[str]:
    return [str(fsdd / r["filename"]) for r in fsdd_rows(fsdd)[:n]]


def _entries(cache: FeatureCache) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.folder.rglob("*.npy")}


def test_second_pass_is_all_hits_and_decodes_nothing(tmp_path, fsdd_dir, monkeypatch):
    clips = _clips(fsdd_dir, 4)
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    first = cache.ensure(clips, num_workers=0)
    assert (first.extracted, first.hits, first.failures) == (4, 0, {})
    before = _entries(cache)
    assert len(before) == 4

    calls: list[str] = []

    def counting(path, config):
        calls.append(path)
        return features_from_path(path, config)[np.newaxis]

    monkeypatch.setattr(cache_module, "extract_features", counting)
    again = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)  # A fresh object: nothing remembered in memory.
    second = again.ensure(clips, num_workers=0)
    arrays = [again.load(c) for c in clips]
    assert (second.extracted, second.hits) == (0, 4)
    assert calls == []  # No decode on the second pass, neither in ensure nor in load.
    assert _entries(again) == before  # Nothing rewritten.
    np.testing.assert_array_equal(arrays[0][0], features_from_path(clips[0]))  # A clip is one window.
    assert arrays[0].shape == (1, DEFAULT_CONFIG.n_mels, DEFAULT_CONFIG.num_frames) and arrays[0].dtype == np.float32


def test_parallel_workers_match_in_process_features(tmp_path, fsdd_dir):
    clips = _clips(fsdd_dir, 2 * CHUNKSIZE + 2)  # Enough to use the process pool.
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    report = cache.ensure(clips, num_workers=2)
    assert (report.extracted, report.failures) == (len(clips), {})
    for clip in (clips[0], clips[-1]):
        # Workers run single-threaded BLAS: summation order may differ from this process in the last bit.
        np.testing.assert_allclose(cache.load(clip)[0], features_from_path(clip), atol=1e-6)


def test_undecodable_files_are_reported_not_raised(tmp_path, fsdd_dir):
    empty, garbage = tmp_path / "empty.wav", tmp_path / "garbage.wav"
    empty.write_bytes(b"")
    garbage.write_bytes(b"\x00\x01not audio" * 50)
    clips = _clips(fsdd_dir, 2) + [str(empty), str(garbage), str(tmp_path / "vanished.wav")]
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    report = cache.ensure(clips, num_workers=0)
    assert set(report.failures) == {str(empty), str(garbage), str(tmp_path / "vanished.wav")}
    assert "empty" in report.failures[str(empty)]
    assert "cannot read file" in report.failures[str(tmp_path / "vanished.wav")]
    assert set(report.hashes) == set(clips[:2])


def test_identical_bytes_decode_once(tmp_path, fsdd_dir):
    clip = Path(_clips(fsdd_dir, 1)[0])
    copy = tmp_path / "renamed_copy.wav"
    shutil.copyfile(clip, copy)
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    report = cache.ensure([str(clip), str(copy)], num_workers=0)
    assert report.extracted == 1 and len(_entries(cache)) == 1
    np.testing.assert_array_equal(cache.load(str(copy)), cache.load(str(clip)))


def test_other_fingerprint_is_a_miss(tmp_path, fsdd_dir):
    clips = _clips(fsdd_dir, 2)
    FeatureCache(tmp_path / "cache", DEFAULT_CONFIG).ensure(clips, num_workers=0)
    small = FeatureConfig(n_mels=64)
    other = FeatureCache(tmp_path / "cache", small)
    report = other.ensure(clips, num_workers=0)
    assert report.extracted == 2
    assert other.load(clips[0]).shape == (1, 64, small.num_frames)


def test_damaged_entry_is_recomputed(tmp_path, fsdd_dir):
    clip = _clips(fsdd_dir, 1)[0]
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    cache.ensure([clip], num_workers=0)
    entry = next(cache.folder.rglob("*.npy"))
    entry.write_bytes(entry.read_bytes()[:100])  # As if the disk filled up mid-write by another tool.
    np.testing.assert_array_equal(cache.load(clip)[0], features_from_path(clip))
    assert np.load(entry).shape == (1, DEFAULT_CONFIG.n_mels, DEFAULT_CONFIG.num_frames)


def test_dataset_items_are_three_channel_images(tmp_path, fsdd_dir):
    clips = _clips(fsdd_dir, 2)
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    cache.ensure(clips, num_workers=0)
    dataset = CachedFeatureDataset(cache, clips, [3, 7])
    image, target = dataset[1]
    assert len(dataset) == 2 and target == 7
    assert image.shape == DEFAULT_CONFIG.input_shape and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], image[2])
    with pytest.raises(ValueError):
        CachedFeatureDataset(cache, clips, [1])


def test_long_clips_train_on_a_random_window_and_evaluate_on_all_of_them(tmp_path, fsdd_dir):
    """A 12-s recording with three digits is 3 windows, one on each digit (as scoring cuts it): training draws
    one of them per item (a seeded draw repeats), evaluation lists every window with its file, and per-file
    aggregation gives one probability vector per file by scoring's rule."""
    import soundfile
    import torch

    from toolchain.audio.decode import load_audio
    from toolchain.training.epochs import per_file

    sr = DEFAULT_CONFIG.sample_rate
    clips = _clips(fsdd_dir, 3)
    y = np.random.default_rng(0).normal(0, 1e-3, 12 * sr).astype(np.float32)
    for k, clip in enumerate(clips):
        audio = load_audio(clip)
        y[(1 + 4 * k) * sr:(1 + 4 * k) * sr + audio.size] += audio
    long = tmp_path / "long.wav"
    soundfile.write(long, y, sr)
    files = [str(long), clips[0]]
    cache = FeatureCache(tmp_path / "cache", DEFAULT_CONFIG)
    cache.ensure(files, num_workers=0)
    assert [cache.window_count(f) for f in files] == [3, 1]

    evaluation = CachedFeatureDataset(cache, files, [1, 0], windows="all")
    assert len(evaluation) == 4 and evaluation.file_index.tolist() == [0, 0, 0, 1]
    windows = cache.load(str(long))
    np.testing.assert_array_equal(evaluation[2][0][0], windows[2])

    training = CachedFeatureDataset(cache, files, [1, 0], windows="random")
    assert len(training) == 2
    torch.manual_seed(0)
    draws = [training[0][0][0] for _ in range(12)]
    picked = {next(k for k in range(3) if np.array_equal(d, windows[k])) for d in draws}
    assert len(picked) > 1  # Different windows across draws...
    torch.manual_seed(0)
    assert all(np.array_equal(d, training[0][0][0]) for d in draws)  # ...and the same ones under the same seed.

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    merged, targets = per_file(probs, np.array([1, 1, 1, 0]), evaluation.file_index)
    np.testing.assert_allclose(merged, [[0.5, 0.5], [0.6, 0.4]], atol=1e-6)
    assert targets.tolist() == [1, 0]
