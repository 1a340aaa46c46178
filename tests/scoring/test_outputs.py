"""Prediction CSV parts and their publication: rows as written, assembly in shard order, clean-up."""

from __future__ import annotations

import numpy as np
import soundfile
from support import read_rows

from toolchain.scoring.engine import ScoredRow, WindowScore
from toolchain.scoring.outputs import (
    DETECTIONS_PREFIX,
    EVENTS_PREFIX,
    RAVEN_COLUMNS,
    assemble_csv,
    assemble_raven,
    csv_columns,
    detection_columns,
    detections_part,
    event_columns,
    events_part,
    new_csv_path,
    part_path,
    publish_csv,
    remove_run_files,
    sibling_outputs,
    write_part,
)

CLASSES = ("cat", "dog")


def scored(name: str, windows: list[tuple[float, float, tuple[float, float]]], duration: float) -> ScoredRow:
    probs = tuple(sum(w[2][i] for w in windows) / len(windows) for i in range(2))
    label = CLASSES[int(probs[1] > probs[0])]
    return ScoredRow(name, "ok", label, max(probs), "", probs, duration, windows[-1][1] - windows[0][0],
                     tuple(WindowScore(*w) for w in windows), "mean")


def test_parts_assemble_in_the_order_given_and_publish_whole(tmp_path):
    out = tmp_path / "day1"
    first = write_part(part_path(out, "run1", 0), [scored("a.wav", [(0.5, 3.0, (0.25, 0.75))], 3.0)],
                       CLASSES, "sha", "run1", "rule-x")
    second = write_part(part_path(out, "run1", 1), [ScoredRow("b.wav", "error", error="EOFError")],
                        CLASSES, "sha", "run1", "rule-x")
    assert (first.files_ok, first.files_error, first.label_counts, first.windows) == (1, 0, {"dog": 1}, 1)
    assert (second.files_ok, second.files_error, second.windows) == (0, 1, 0)
    final = publish_csv(assemble_csv(out, "run1", [first.path, second.path]), new_csv_path(out))
    rows = read_rows(final)
    assert list(rows[0]) == csv_columns(CLASSES)
    assert rows[0] == {"file": "a.wav", "label": "dog", "confidence": "0.750000", "status": "ok", "error": "",
                       "duration_s": "3.000", "scored_s": "2.500", "windows": "1", "aggregation": "mean",
                       "window_rule": "rule-x", "prob_cat": "0.250000", "prob_dog": "0.750000",
                       "model_version": "", "model_sha256": "sha", "run_id": "run1"}
    assert (rows[1]["status"], rows[1]["error"], rows[1]["label"], rows[1]["prob_cat"], rows[1]["windows"]) == (
        "error", "EOFError", "", "", "0")
    # Clean-up removes the run's parts and temporary CSV, never a published one.
    assert remove_run_files(out, "run1") and sorted(p.name for p in out.iterdir()) == [final.name]


def test_detections_have_one_row_per_window_above_min_confidence_and_raven_counts_time_across_files(tmp_path):
    out = tmp_path / "day1"
    rows = [scored("a.wav", [(0.0, 5.0, (0.9, 0.1)), (2.5, 7.5, (0.4, 0.6)), (4.0, 9.0, (0.55, 0.45))], 9.5),
            ScoredRow("bad.wav", "error", error="not audio"),
            scored("b.wav", [(1.0, 6.0, (0.2, 0.8))], 6.0)]
    part = write_part(part_path(out, "run1", 0), rows, CLASSES, "sha", "run1", "rule-x", min_confidence=0.58)
    assert part.windows == 4 and part.audio_s == 15.5
    predictions = assemble_csv(out, "run1", [part.path])
    detections = assemble_csv(out, "run1", [str(detections_part(part.path))], prefix=DETECTIONS_PREFIX)
    kept = read_rows(detections)
    assert list(kept[0]) == detection_columns(CLASSES)
    assert [(r["file"], r["start_s"], r["end_s"], r["label"], r["confidence"]) for r in kept] == [
        ("a.wav", "0.000", "5.000", "cat", "0.900000"), ("a.wav", "2.500", "7.500", "dog", "0.600000"),
        ("b.wav", "1.000", "6.000", "dog", "0.800000")]  # 0.55 is below 0.58: left out.
    raven = assemble_raven(out, "run1", predictions, detections, "/data/day1", 11025).read_text().splitlines()
    assert raven[0].split("\t") == RAVEN_COLUMNS
    last = dict(zip(RAVEN_COLUMNS, raven[-1].split("\t")))
    # b.wav starts after a.wav's 9.5 s in Raven's multi-file timeline; its own offset stays 1.0 s.
    assert (last["Selection"], last["Begin Time (s)"], last["End Time (s)"], last["Begin Path"],
            last["File Offset (s)"], last["Label"], last["High Freq (Hz)"]) == (
        "3", "10.500", "15.500", "/data/day1/b.wav", "1.000", "dog", "11025")


def test_events_merge_windows_of_one_label_and_raven_lists_events(tmp_path):
    out = tmp_path / "day1"
    windows = [(0.0, 5.0, (0.9, 0.1)), (2.5, 7.5, (0.8, 0.2)), (5.0, 10.0, (0.5, 0.5)), (7.5, 12.5, (0.7, 0.3)),
               (10.0, 15.0, (0.2, 0.8)), (12.5, 17.5, (0.1, 0.9), False), (15.0, 20.0, (0.1, 0.9), False)]
    rows = [scored("a.wav", windows, 20.0), ScoredRow("bad.wav", "error", error="not audio")]
    part = write_part(part_path(out, "run1", 0), rows, CLASSES, "sha", "run1", "rule-x", min_confidence=0.6,
                      merge_gap_s=0.0)
    predictions = assemble_csv(out, "run1", [part.path])
    events = assemble_csv(out, "run1", [str(events_part(part.path))], prefix=EVENTS_PREFIX)
    found = read_rows(events)
    assert list(found[0]) == event_columns()
    # The weak window at 5 s (0.5 < 0.6) is bridged: the two cat runs touch (gap 0 s).
    assert [(r["file"], r["start_s"], r["end_s"], r["label"], r["confidence"], r["windows"]) for r in found] == [
        ("a.wav", "0.000", "12.500", "cat", "0.900000", "3"), ("a.wav", "10.000", "15.000", "dog", "0.800000", "1")]
    assert found[0]["mean_confidence"] == "0.800000"
    apart = write_part(part_path(out, "run2", 0), rows, CLASSES, "sha", "run2", "rule-x", min_confidence=0.6,
                       merge_gap_s=-1.0)
    assert len(read_rows(events_part(apart.path))) == 3  # A negative gap bridges nothing.
    # The silent windows (confident "dog" on faint noise) are neither events nor detections.
    assert [r["start_s"] for r in read_rows(detections_part(part.path))] == ["0.000", "2.500", "7.500", "10.000"]
    # The Raven table lists the events over the band the model saw of each file: an 8 kHz recording's 4 kHz.
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "a.wav", np.zeros(8000 * 20, dtype=np.float32), 8000)
    raven = assemble_raven(out, "run1", predictions, events, folder, 11025).read_text().splitlines()
    assert [line.split("\t")[3:7] + line.split("\t")[9:10] for line in raven[1:]] == [
        ["0.000", "12.500", "0", "4000", "cat"], ["10.000", "15.000", "0", "4000", "dog"]]
    soundfile.write(folder / "a.wav", np.zeros(48000 * 20, dtype=np.float32), 48000)  # Above the model's rate.
    raven = assemble_raven(out, "run1", predictions, events, folder, 11025).read_text().splitlines()
    assert {line.split("\t")[6] for line in raven[1:]} == {"11025"}


def test_sibling_outputs_share_the_predictions_stamp_and_block_it(tmp_path):
    (tmp_path / "x").mkdir()
    first = new_csv_path(tmp_path / "x")
    detections, raven = sibling_outputs(first)
    assert detections.name == first.name.replace("predictions_", "detections_")
    assert raven.name == first.name.replace("predictions_", "raven_").replace(".csv", ".selections.txt")
    detections.write_text("")  # Left by a run killed between its detections and its predictions.
    assert new_csv_path(tmp_path / "x") > first


def test_a_second_csv_in_the_same_second_gets_the_next_second(tmp_path):
    (tmp_path / "x").mkdir()
    first = new_csv_path(tmp_path / "x")
    first.write_text("")
    assert new_csv_path(tmp_path / "x") > first


def test_health_reports_never_hold_nan(tmp_path):
    import json

    from toolchain.scoring.outputs import write_health

    tmp = write_health(tmp_path, "r1", {"verdict": "ok", "figures": {"psi": float("nan"), "js_distance": 0.1},
                                        "shares": {"class_mix": [0.5, float("inf")]}})
    data = json.loads(tmp.read_text())
    assert data["figures"] == {"psi": None, "js_distance": 0.1} and data["shares"]["class_mix"] == [0.5, None]
