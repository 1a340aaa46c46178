"""From labelled samples to what a run trains on: warnings the user gets before training."""

from __future__ import annotations

from support import fsdd_files

from toolchain.audio.config import FeatureConfig
from toolchain.progress import NullProgress
from toolchain.training.cache import FeatureCache
from toolchain.training.data import Sample
from toolchain.training.prepared import prepare_data


def test_classes_without_validation_clips_and_undecodable_files_are_announced(tmp_path, fsdd_dir):
    samples = [Sample(str(p), "one") for p in fsdd_files(fsdd_dir, "one", 5)]
    samples += [Sample(str(fsdd_files(fsdd_dir, "two", 1)[0]), "two")]  # One clip: it cannot be in both splits.
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio")
    samples.append(Sample(str(broken), "one"))
    cache = FeatureCache(tmp_path / "cache", FeatureConfig(clip_seconds=1.0))
    data = prepare_data(samples, [], ["one", "two"], cache, val_fraction=0.2, seed=0, num_workers=0,
                        progress=NullProgress())
    assert "two" not in {s.label for s in data.val}
    assert any("['two'] have no validation clips" in n and "--val-fraction" in n for n in data.notes), data.notes
    assert any(n.startswith("1 of 7 training file(s) cannot be decoded") and str(broken) in n for n in data.notes)
