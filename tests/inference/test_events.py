"""Windows into events: runs, thresholds, merging, and the threshold that filters nothing."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.inference.events import find_events, uninformative_threshold

CLASSES = ("a", "b", "c")
HOP, SIZE = 2.5, 5.0


def _windows(tops: str, confidence: float = 0.8):
    """Windows at the default hop whose top class is each letter of `tops` ("." = a weak window, top "a" at 0.34)."""
    rows = []
    for t in tops:
        if t == ".":
            rows.append([0.34, 0.33, 0.33])
        else:
            p = np.full(3, (1 - confidence) / 2)
            p[CLASSES.index(t)] = confidence
            rows.append(p)
    starts = [i * HOP for i in range(len(tops))]
    return starts, [s + SIZE for s in starts], np.array(rows)


def test_runs_of_one_label_become_one_event_with_its_times_and_confidences():
    starts, ends, probs = _windows("aaabbc")
    probs[1, 0] = 0.9
    events = find_events(starts, ends, probs, CLASSES, min_confidence=0.5)
    assert [(e.label, e.start_s, e.end_s, e.windows) for e in events] == [
        ("a", 0.0, 10.0, 3), ("b", 7.5, 15.0, 2), ("c", 12.5, 17.5, 1)]
    assert events[0].max_confidence == pytest.approx(0.9)
    assert events[0].mean_confidence == pytest.approx((0.8 + 0.9 + 0.8) / 3)


def test_weak_windows_end_a_run_and_one_weak_window_is_bridged_by_default():
    starts, ends, probs = _windows("aa.aa..aa")
    events = find_events(starts, ends, probs, CLASSES, min_confidence=0.5)
    # One weak window at 50 % overlap leaves a gap of 0 s: merged; two leave 2.5 s: separate.
    assert [(e.start_s, e.end_s, e.windows) for e in events] == [(0.0, 15.0, 4), (17.5, 25.0, 2)]
    assert len(find_events(starts, ends, probs, CLASSES, min_confidence=0.5, merge_gap_s=-0.1)) == 3
    assert len(find_events(starts, ends, probs, CLASSES, min_confidence=0.5, merge_gap_s=2.5)) == 1


def test_another_label_between_two_runs_keeps_them_apart():
    starts, ends, probs = _windows("aabaa")
    events = find_events(starts, ends, probs, CLASSES, min_confidence=0.5, merge_gap_s=10.0)
    assert [e.label for e in events] == ["a", "b", "a"]


def test_without_a_threshold_every_window_belongs_to_an_event():
    starts, ends, probs = _windows("a.b")
    events = find_events(starts, ends, probs, CLASSES)
    assert sum(e.windows for e in events) == 3 and [e.label for e in events] == ["a", "b"]
    assert find_events([], [], np.zeros((0, 3)), CLASSES) == []
    with pytest.raises(ValueError, match="2 starts, 1 ends"):
        find_events([0.0, 1.0], [1.0], np.zeros((2, 3)), CLASSES)


def test_a_threshold_at_or_below_chance_is_called_out():
    assert "never below 1/6" in uninformative_threshold(0.16, 6)
    assert uninformative_threshold(0.2, 6) == ""
    assert "1/10" in uninformative_threshold(0.0, 10)


def test_silent_windows_end_a_run_and_never_join_an_event():
    starts, ends, probs = _windows("aaaaaaa")  # Confident "a" everywhere, but windows 2-4 are silence.
    audible = [True, True, False, False, False, True, True]
    events = find_events(starts, ends, probs, CLASSES, min_confidence=0.5, audible=audible)
    assert [(e.start_s, e.end_s, e.windows) for e in events] == [(0.0, 7.5, 2), (12.5, 20.0, 2)]
    one = [True, True, False, True, True, True, True]  # One silent window is bridged like one weak window.
    assert [e.windows for e in find_events(starts, ends, probs, CLASSES, 0.5, audible=one)] == [6]
    with pytest.raises(ValueError, match="audible"):
        find_events(starts, ends, probs, CLASSES, audible=[True])


def test_windows_on_separate_sounds_are_separate_events_unless_within_the_merge_gap():
    # Windows placed on sounds: three calls of "a" (the second 0.3 s after the first ends), then one of "b".
    starts, ends = [1.0, 2.1, 6.0, 9.0], [1.8, 2.6, 6.9, 9.5]
    probs = np.array([[0.8, 0.1, 0.1]] * 3 + [[0.1, 0.8, 0.1]])
    events = find_events(starts, ends, probs, CLASSES, min_confidence=0.5)
    assert [(e.label, e.start_s, e.end_s) for e in events] == [
        ("a", 1.0, 1.8), ("a", 2.1, 2.6), ("a", 6.0, 6.9), ("b", 9.0, 9.5)]
    merged = find_events(starts, ends, probs, CLASSES, min_confidence=0.5, merge_gap_s=0.5)
    assert [(e.label, e.start_s, e.end_s, e.windows) for e in merged] == [
        ("a", 1.0, 2.6, 2), ("a", 6.0, 6.9, 1), ("b", 9.0, 9.5, 1)]
    # However negative the merge gap, overlapping grid windows of one label stay one run.
    starts, ends, probs = _windows("aaa")
    assert [e.windows for e in find_events(starts, ends, probs, CLASSES, 0.5, merge_gap_s=-4.0)] == [3]
