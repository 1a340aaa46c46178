"""The demo dataset: deterministic for a seed, the promised layout, real decodable audio."""

from __future__ import annotations

from toolchain.audio.features import features_from_path
from toolchain.training.data import load_dataset
from toolchain.training.synth import CLASSES, make_demo_data


def test_same_seed_same_files_and_the_promised_layout(tmp_path):
    a = make_demo_data(tmp_path / "a", per_class=2, test_per_class=1, seed=3)
    b = make_demo_data(tmp_path / "b", per_class=2, test_per_class=1, seed=3)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.wav"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    train = load_dataset(a.train)
    assert sorted({s.label for s in train}) == sorted(CLASSES) and len(train) == 2 * len(CLASSES)
    assert sorted(p.name for p in a.inbox.iterdir()) == ["2026-11-22", "2026-11-23"]
    features = features_from_path(train[0].path)
    assert features.shape == (128, 216) and 0.0 <= features.min() and features.max() <= 1.0
    assert b.test.is_dir()
