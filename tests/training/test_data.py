"""Datasets and splits: both layouts, every error, stratified + group-aware + duplicate-aware splitting.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
from support import fsdd_files, write_fsdd_manifest

from toolchain.errors import DatasetError
from toolchain.training.data import Sample, list_inputs, load_dataset, split_dataset


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_folder_tree_finds_audio_recursively_case_insensitively(class_tree):
    samples = load_dataset(class_tree)
    assert Counter(s.label for s in samples) == {"one": 3, "two": 3}
    assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in samples)
    assert any(s.path.endswith(".WAV") for s in samples)
    assert any("/nested/" in s.path for s in samples)
    assert not any(".hidden" in s.path or s.path.endswith(".txt") for s in samples)
    assert all(s.group is None for s in samples)
    assert load_dataset(class_tree) == samples  # Deterministic order.


def test_csv_manifest_relative_absolute_and_groups(tmp_path, fsdd_dir):
    one, two = fsdd_files(fsdd_dir, "one", 1)[0], fsdd_files(fsdd_dir, "two", 1)[0]
    (tmp_path / "clips").mkdir()
    shutil.copyfile(one, tmp_path / "clips" / "a.wav")
    manifest = _write_csv(tmp_path / "m.csv", ["filename", "label", "group"],
                          [["clips/a.wav", "one", "g1"], [str(two), "two", "g2"]])
    samples = load_dataset(manifest)
    assert samples == [Sample(str((tmp_path / "clips" / "a.wav").resolve()), "one", "g1"),
                       Sample(str(two), "two", "g2")]


def test_csv_without_group_column_has_no_groups(tmp_path, fsdd_dir):
    rows = [[str(p), "one"] for p in fsdd_files(fsdd_dir, "one", 2)] + [[str(fsdd_files(fsdd_dir, "two", 1)[0]), "two"]]
    samples = load_dataset(_write_csv(tmp_path / "m.csv", ["filename", "label"], rows))
    assert len(samples) == 3 and all(s.group is None for s in samples)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_csv_missing_columns_are_named(tmp_path):
    manifest = _write_csv(tmp_path / "m.csv", ["file", "class"], [["a.wav", "x"]])
    with pytest.raises(DatasetError, match=r"lacks column\(s\) filename, label \(found: file, class\)"):
        load_dataset(manifest)


def test_unreadable_csv(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x81\x82")
    with pytest.raises(DatasetError, match="cannot read CSV manifest"):
        load_dataset(bad)


def test_listed_files_missing_are_counted_and_named(tmp_path, fsdd_dir):
    real = str(fsdd_files(fsdd_dir, "one", 1)[0])
    manifest = _write_csv(tmp_path / "m.csv", ["filename", "label"],
                          [[real, "one"], ["gone1.wav", "two"], ["gone2.wav", "two"]])
    with pytest.raises(DatasetError, match=r"2 file\(s\) listed in .*m.csv do not exist \(gone1.wav, gone2.wav\)"):
        load_dataset(manifest)


def test_folder_without_audio(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no audio files found"):
        load_dataset(tmp_path)


def test_one_class_only(tmp_path, fsdd_dir):
    for src in fsdd_files(fsdd_dir, "one", 2):
        (tmp_path / "one").mkdir(exist_ok=True)
        shutil.copyfile(src, tmp_path / "one" / src.name)
    with pytest.raises(DatasetError, match="only one class \\('one'\\)"):
        load_dataset(tmp_path)


def test_list_inputs_folder_csv_and_single_file(tmp_path, class_tree):
    files = list_inputs(class_tree)
    assert len(files) == 6
    manifest = _write_csv(tmp_path / "in.csv", ["filename"], [[files[0]], ["missing.wav"]])
    listed = list_inputs(manifest)
    assert listed == [files[0], str((tmp_path / "missing.wav").resolve())]  # Missing -> an error row later.
    assert list_inputs(files[1]) == [files[1]]


def _samples(n_per_class: dict[str, int], group_of=lambda label, i: None) -> list[Sample]:
    return [Sample(f"/x/{label}_{i}.wav", label, group_of(label, i)) for label, n in n_per_class.items()
            for i in range(n)]


def _hashes(samples):
    return {s.path: s.path for s in samples}  # Every file distinct.


def test_split_is_stratified_and_deterministic():
    samples = _samples({"a": 50, "b": 20, "c": 10})
    train, val = split_dataset(samples, 0.2, seed=1, hashes=_hashes(samples))
    assert Counter(s.label for s in val) == {"a": 10, "b": 4, "c": 2}
    assert sorted(train + val, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    assert split_dataset(samples, 0.2, seed=1, hashes=_hashes(samples)) == (train, val)
    assert split_dataset(samples, 0.2, seed=2, hashes=_hashes(samples))[1] != val


def test_split_keeps_speakers_whole(tmp_path, fsdd_dir):
    manifest = write_fsdd_manifest(fsdd_dir, tmp_path / "m.csv", speakers={"george", "jackson", "lucas", "nicolas",
                                                                          "theo"}, takes=range(2))
    samples = load_dataset(manifest)
    for seed in (0, 1, 2):
        train, val = split_dataset(samples, 0.2, seed=seed)
        train_groups, val_groups = {s.group for s in train}, {s.group for s in val}
        assert train_groups and val_groups and not train_groups & val_groups
        assert len(val_groups) == 1  # 20 % of five equal speakers = one speaker.
        assert {s.label for s in val} == {s.label for s in samples}


def test_byte_identical_files_never_straddle(tmp_path, fsdd_dir):
    """Copies under other names (and one inside another class folder) stay on one side, whatever the seed."""
    root = tmp_path / "data"
    for label in ("one", "two"):
        (root / label).mkdir(parents=True)
        for src in fsdd_files(fsdd_dir, label, 10):
            shutil.copyfile(src, root / label / src.name)
    original = fsdd_files(fsdd_dir, "one", 1)[0]
    for k in range(3):
        shutil.copyfile(original, root / "one" / f"copy{k}.wav")
    shutil.copyfile(original, root / "two" / "mislabelled_copy.wav")
    samples = load_dataset(root)
    copies = {s.path for s in samples if Path(s.path).read_bytes() == original.read_bytes()}
    assert len(copies) == 5
    for seed in range(8):
        train, val = split_dataset(samples, 0.3, seed=seed)
        sides = {"train" if s in train else "val" for s in samples if s.path in copies}
        assert len(sides) == 1, f"seed {seed}: duplicates on both sides"


def test_duplicates_merge_groups(tmp_path, fsdd_dir):
    """A file shared by two groups binds both groups to the same side."""
    clip = fsdd_files(fsdd_dir, "one", 1)[0]
    others = fsdd_files(fsdd_dir, "two", 8)
    rows = [[str(clip), "one", "A"], [str(clip), "one", "B"]]
    rows += [[str(p), "two" if i % 2 else "one", f"G{i}"] for i, p in enumerate(others)]
    samples = load_dataset(_write_csv(tmp_path / "m.csv", ["filename", "label", "group"], rows))
    for seed in range(6):
        train, val = split_dataset(samples, 0.25, seed=seed)
        side_a = {("train" if s in train else "val") for s in samples if s.group in ("A", "B")}
        assert len(side_a) == 1


def test_split_refuses_a_single_group():
    samples = _samples({"a": 3, "b": 3}, group_of=lambda label, i: "same")
    with pytest.raises(DatasetError, match="one group"):
        split_dataset(samples, 0.2, hashes=_hashes(samples))


def test_split_rejects_bad_fraction():
    samples = _samples({"a": 3, "b": 3})
    with pytest.raises(DatasetError, match="val_fraction=1.5"):
        split_dataset(samples, 1.5, hashes=_hashes(samples))


def test_a_file_listed_with_two_labels_is_refused_and_exact_duplicates_counted_once(tmp_path, fsdd_dir):
    one, two = fsdd_files(fsdd_dir, "one", 2)
    three = fsdd_files(fsdd_dir, "two", 1)[0]
    manifest = _write_csv(tmp_path / "dup.csv", ["filename", "label"],
                          [[str(one), "one"], [str(two), "one"], [str(three), "two"], [str(one), "one"]])
    notes: list[str] = []
    samples = load_dataset(manifest, notes=notes)
    assert [s.path for s in samples] == [str(one), str(two), str(three)]
    assert notes and "1 duplicate row(s)" in notes[0]
    conflicting = _write_csv(tmp_path / "conflict.csv", ["filename", "label"],
                             [[str(one), "one"], [str(two), "one"], [str(three), "two"], [str(one), "two"]])
    with pytest.raises(DatasetError, match=f"{one} as one and two"):
        load_dataset(conflicting)
