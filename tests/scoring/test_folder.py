"""Folder scoring (`run_folder` through `score_folder`) on real FSDD clips and on generated bad input.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import published_csvs, read_rows

from toolchain.errors import OutputPathError, ScoringError
from toolchain.scoring.engine import load_model, score_files
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import discover_audio_files
from toolchain.scoring.folder import run_folder, score_folder
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import describe_model
from toolchain.scoring.outputs import csv_columns
from toolchain.scoring.publish import record_folder, write_predictions
from toolchain.scoring.roots import ALLOWED_ROOTS_ENV
from toolchain.scoring.runs import folder_job
from toolchain.scoring.shards import score_shard, shard
from toolchain.scoring.steps import LocalSteps

CONFIG = EngineConfig(batch_size=8, decode_workers=1, intra_op_threads=1)


def test_bad_input_folder_gives_one_row_per_audio_file(onnx_model, bad_input_folder, tmp_path):
    folder, expected = bad_input_folder
    summary = score_folder(onnx_model, folder, tmp_path / "out", CONFIG)

    rows = read_rows(summary.csv_path)
    identity = describe_model(onnx_model)
    assert [r["file"] for r in rows] == sorted(expected)  # Sorted, relative, posix; notes.txt ignored.
    assert {r["file"]: r["status"] for r in rows} == expected
    for r in rows:
        assert r["model_sha256"] == identity.sha256 and r["run_id"] == summary.run_id
        if r["status"] == "error":
            assert r["error"] and not r["label"] and not r["confidence"]
        else:
            assert not r["error"] and r["label"] and 0 < float(r["confidence"]) <= 1
    assert "empty" in next(r["error"] for r in rows if r["file"] == "empty.wav")
    assert "truncated" in next(r["error"] for r in rows if r["file"] == "truncated.wav")
    assert (summary.files_ok, summary.files_error) == (4, 5)
    assert Path(summary.csv_path).parent == tmp_path / "out" / "drop-2024-01-02"
    assert Path(summary.csv_path).name.startswith("predictions_") and Path(summary.csv_path).name.endswith("Z.csv")
    assert list(rows[0]) == csv_columns(identity.metadata.classes)
    detections = Path(summary.detections_path)
    assert detections.name == Path(summary.csv_path).name.replace("predictions_", "detections_")
    health = Path(summary.health["path"])
    assert health.name == Path(summary.csv_path).name.replace("predictions_", "health_").replace(".csv", ".json")
    events = Path(summary.events_path)
    assert events.name == Path(summary.csv_path).name.replace("predictions_", "events_")
    assert sorted(p.name for p in summary_dir_files(Path(summary.csv_path).parent)) == sorted(
        [Path(summary.csv_path).name, detections.name, events.name, health.name])
    assert summary.health["verdict"] == "insufficient"  # 4 files scored (and 5 errors): too few to judge.
    # One detection per window of every ok file (error files have none), and the windows add up.
    windows = read_rows(detections)
    assert {w["file"] for w in windows} == {f for f, status in expected.items() if status == "ok"}
    assert len(windows) == sum(int(r["windows"]) for r in rows) == summary.windows
    assert {r["window_rule"] for r in rows} == {"windows-v2 1s/0.5s sound+6dB, mean"}
    assert Ledger.in_dir(tmp_path / "out").run(summary.run_id).window_rule == "windows-v2 1s/0.5s sound+6dB, mean"


def test_shards_concatenate_to_the_single_pass_result(model, bad_input_folder, tmp_path):
    folder, expected = bad_input_folder
    files = discover_audio_files(folder)
    assert files == sorted(expected)
    ledger = Ledger.in_dir(tmp_path)
    ledger.start_run("r1", mode="folder", target=str(folder), model_path=str(model.path), model_sha256=model.sha256)
    with folder_job(ledger, folder, tmp_path, "r1", model.sha256) as job:
        shards = [score_shard(model, job, i, part, CONFIG) for i, part in enumerate(shard(files, 4))]
        assert len(shards) == 3
        path = write_predictions(job, list(reversed(shards)))  # Order comes from the shard index.
        record_folder(job, shards, path)
    sharded = read_rows(path)
    single = [s for s in score_files(model, folder, files, CONFIG)]
    assert [r["file"] for r in sharded] == files
    for row, s in zip(sharded, single):
        assert (row["status"], row["label"]) == (s.status, s.label)
        if s.status == "ok":
            assert float(row["confidence"]) == pytest.approx(s.confidence, abs=1e-6)
    assert ledger.scored_csv(str(folder), model.sha256) == str(path)


def test_rescoring_writes_a_new_csv_and_keeps_the_old(onnx_model, bad_input_folder, tmp_path):
    folder, _ = bad_input_folder
    first = score_folder(onnx_model, folder, tmp_path, EngineConfig(decode_workers=0, intra_op_threads=1))
    second = score_folder(onnx_model, folder, tmp_path, EngineConfig(decode_workers=0, intra_op_threads=1))
    assert first.csv_path != second.csv_path  # Same second: the name moves on by a second, never overwrites.
    assert published_csvs(Path(first.csv_path).parent) == sorted([Path(first.csv_path), Path(second.csv_path)])
    assert read_rows(first.csv_path)[0]["file"] == read_rows(second.csv_path)[0]["file"]


def test_two_runs_over_long_recordings_write_the_same_content_and_raven_reads_the_windows(onnx_model, fsdd_dir,
                                                                                         tmp_path):
    """Recordings of several lengths at several rates: two runs give identical predictions and detections (ids
    and stamps aside); --format raven --raven-rows windows adds a selection table with one selection per kept
    detection. (Other engine settings agree to float noise, not to every printed digit: decoding in a worker uses
    one BLAS thread.)"""
    import numpy as np
    import soundfile

    from toolchain.audio.config import FeatureConfig
    from toolchain.audio.decode import load_audio
    from toolchain.scoring.options import ScoringOptions

    folder = tmp_path / "field-day"
    folder.mkdir()
    clips = sorted((fsdd_dir / "recordings").glob("*_yweweler_2*.wav"))
    for n, (seconds, rate) in enumerate([(12, 16_000), (7, 44_100), (3, 8_000)]):
        y = np.random.default_rng(n).normal(0, 1e-3, seconds * rate).astype(np.float32)
        for k, at in enumerate(range(1, seconds - 1, 3)):
            clip = load_audio(clips[(n + k) % len(clips)], FeatureConfig(sample_rate=rate))
            y[at * rate:at * rate + clip.size] += clip[:y.size - at * rate]
        soundfile.write(folder / f"rec{n}.flac", y, rate)
    options = ScoringOptions(hop_seconds=0.25, aggregation="max", min_confidence=0.2, format="raven",
                             raven_rows="windows")
    runs = [score_folder(onnx_model, folder, tmp_path / f"out{i}", CONFIG, options=options) for i in range(2)]

    def content(path: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "run_id"} for r in read_rows(path)]

    assert content(runs[0].csv_path) == content(runs[1].csv_path)
    assert content(runs[0].detections_path) == content(runs[1].detections_path)
    rows = read_rows(runs[0].csv_path)
    assert [(r["file"], r["status"], r["aggregation"]) for r in rows] == [
        (f"rec{n}.flac", "ok", "max") for n in range(3)]
    assert [float(r["duration_s"]) for r in rows] == [12.0, 7.0, 3.0]
    detections = read_rows(runs[0].detections_path)
    assert detections and all(float(d["confidence"]) >= 0.2 for d in detections)
    for r in rows:  # The file's max-aggregated confidence is its best window's, and windows are 0.25 s apart.
        mine = [d for d in detections if d["file"] == r["file"]]
        assert max(float(d["confidence"]) for d in mine) == pytest.approx(float(r["confidence"]), abs=1e-6)
    raven = Path(runs[0].csv_path).with_name(
        Path(runs[0].csv_path).name.replace("predictions_", "raven_").replace(".csv", ".selections.txt"))
    lines = raven.read_text().splitlines()
    assert len(lines) == len(detections) + 1 and lines[0].startswith("Selection\tView\tChannel\tBegin Time (s)")


def test_missing_folder_and_unreadable_model_fail_with_one_line(onnx_model, tmp_path):
    with pytest.raises(ScoringError, match="does not exist: pass a directory"):
        score_folder(onnx_model, tmp_path / "nope", tmp_path / "out")
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00not a model")
    (tmp_path / "in").mkdir()
    with pytest.raises(ScoringError, match="cannot load ONNX model") as info:
        score_folder(garbage, tmp_path / "in", tmp_path / "out")
    assert "\n" not in str(info.value)
    with pytest.raises(ScoringError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    assert not (tmp_path / "out" / "in").exists() or not published_csvs(tmp_path / "out" / "in")


def summary_dir_files(folder: Path) -> list[Path]:
    """Everything in an output folder except its lock file: no temporary files may remain."""
    return [p for p in folder.iterdir() if p.name != ".lock"]


def test_runs_are_confined_to_the_allowed_roots_before_anything_is_touched(tmp_path, monkeypatch):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "inbox" / "day1").mkdir(parents=True)
    (outside / "day2").mkdir(parents=True)
    (allowed / "inbox" / "escape").symlink_to(outside / "day2", target_is_directory=True)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(allowed))
    model, out = allowed / "model.onnx", allowed / "out"  # Never read: refused first.
    steps = LocalSteps(model)
    cases = [
        dict(folder=outside / "day2", out_dir=out, name="folder"),
        dict(folder=allowed / "inbox" / "escape", out_dir=out, name="folder"),  # A symlink out counts as out.
        dict(folder=allowed / "inbox" / "day1", out_dir=outside / "out", name="output_dir"),
    ]
    for case in cases:
        with pytest.raises(ScoringError, match=f"{case['name']} .* is outside the folders this server may touch"):
            run_folder(model, case["folder"], case["out_dir"], steps)
    with pytest.raises(ScoringError, match="model .* is outside"):
        run_folder(outside / "model.onnx", allowed / "inbox" / "day1", out, steps)
    assert not out.exists() and not (outside / "out").exists()


def test_an_output_dir_that_is_a_file_is_one_line_before_any_work(tmp_path):
    folder, blocker = tmp_path / "day1", tmp_path / "a-file"
    folder.mkdir()
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=f"--out {blocker} is a file"):
        score_folder(tmp_path / "model.onnx", folder, blocker)
