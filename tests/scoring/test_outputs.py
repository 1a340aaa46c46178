"""Prediction CSV parts and their publication: rows as written, assembly in shard order, clean-up, fault injection."""

from __future__ import annotations

import pytest
from support import read_rows

from toolchain.errors import InjectedFault, ScoringError
from toolchain.scoring.engine import ScoredRow
from toolchain.scoring.outputs import (
    FAULT_ENV,
    assemble_csv,
    csv_columns,
    inject_fault,
    new_csv_path,
    part_path,
    publish_csv,
    remove_run_files,
    write_part,
)

CLASSES = ("cat", "dog")


def test_parts_assemble_in_the_order_given_and_publish_whole(tmp_path):
    out = tmp_path / "day1"
    first = write_part(part_path(out, "run1", 0), [ScoredRow("a.wav", "ok", "dog", 0.75, "", (0.25, 0.75))],
                       CLASSES, "sha", "run1")
    second = write_part(part_path(out, "run1", 1), [ScoredRow("b.wav", "error", error="EOFError")],
                        CLASSES, "sha", "run1")
    assert (first.files_ok, first.files_error, first.label_counts) == (1, 0, {"dog": 1})
    assert (second.files_ok, second.files_error) == (0, 1)
    final = publish_csv(assemble_csv(out, "run1", [first.path, second.path]), new_csv_path(out))
    rows = read_rows(final)
    assert list(rows[0]) == csv_columns(CLASSES)
    assert rows[0] == {"file": "a.wav", "label": "dog", "confidence": "0.750000", "status": "ok", "error": "",
                       "prob_cat": "0.250000", "prob_dog": "0.750000", "model_sha256": "sha", "run_id": "run1"}
    assert (rows[1]["status"], rows[1]["error"], rows[1]["label"], rows[1]["prob_cat"]) == ("error", "EOFError", "", "")
    # Clean-up removes the run's parts and temporary CSV, never a published one.
    assert remove_run_files(out, "run1") and sorted(p.name for p in out.iterdir()) == [final.name]


def test_a_second_csv_in_the_same_second_gets_the_next_second(tmp_path):
    (tmp_path / "x").mkdir()
    first = new_csv_path(tmp_path / "x")
    first.write_text("")
    assert new_csv_path(tmp_path / "x") > first


def test_fault_injection_fails_the_first_attempts_only(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "write:1")
    with pytest.raises(InjectedFault, match="attempt 1"):
        inject_fault("write", 1)
    inject_fault("write", 2)
    inject_fault("score", 1)
    monkeypatch.setenv(FAULT_ENV, "write=1")
    with pytest.raises(ScoringError, match="malformed"):
        inject_fault("write", 1)
