"""Detections as events: a file's windows turned into what a reviewer works with (one row per call, with a start
and an end), the same for every output that lists events (`events_<UTC>.csv`, the Raven table).

An event is a run of consecutive windows whose top label is the same and whose confidence is at least
`min_confidence`; a window below it, a silent window (`toolchain.audio.windows`), one with another top label, or
one that starts more than max(`merge_gap_s`, 0) after the run's last window ended (windows placed on separate
sounds; overlapping or touching windows never part) ends the run. Two runs of one label merge into one event when the gap between them (the next run's first window
start minus the previous run's last window end) is at most `merge_gap_s`; with overlapping windows (the default
hop is half a window) that gap is negative or zero when one window between them fell out, so the default 0 s
bridges a single weak or silent window and no more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Event:
    start_s: float  # The first window's start, in seconds of the file.
    end_s: float  # The last window's end.
    label: str
    max_confidence: float
    mean_confidence: float  # Over the event's windows (those at or above the threshold).
    windows: int


def find_events(starts: Sequence[float], ends: Sequence[float], probabilities: np.ndarray | Sequence,
                classes: Sequence[str], min_confidence: float = 0.0, merge_gap_s: float = 0.0,
                audible: Sequence[bool] | None = None) -> list[Event]:
    """The events of one file from its windows in time order (`starts`, `ends` in seconds, `probabilities`
    (windows, classes), `audible` (default: all)); see the module docstring for the rule."""
    probs = np.asarray(probabilities, dtype=np.float64)
    audible = [True] * len(starts) if audible is None else list(audible)
    if len(starts) != len(ends) or len(starts) != len(probs) or len(starts) != len(audible):
        raise ValueError(f"{len(starts)} starts, {len(ends)} ends, {len(probs)} probability rows and "
                         f"{len(audible)} audible flags")
    events: list[Event] = []
    run: list[tuple[float, float, float]] = []  # (start, end, confidence) of the open run's windows.
    run_label = ""

    def close() -> None:
        if not run:
            return
        confidences = [c for _, _, c in run]
        previous = events[-1] if events else None
        if previous is not None and previous.label == run_label and run[0][0] - previous.end_s <= merge_gap_s:
            n = previous.windows + len(run)
            events[-1] = Event(previous.start_s, run[-1][1], run_label, max(previous.max_confidence, *confidences),
                               (previous.mean_confidence * previous.windows + sum(confidences)) / n, n)
        else:
            events.append(Event(run[0][0], run[-1][1], run_label, max(confidences),
                                sum(confidences) / len(confidences), len(run)))
        run.clear()

    for start, end, p, sound in zip(starts, ends, probs, audible):
        best = int(np.argmax(p))
        confidence, label = float(p[best]), classes[best]
        kept = sound and confidence >= min_confidence
        if not kept or (run and (label != run_label or start - run[-1][1] > max(merge_gap_s, 0.0))):
            close()
        if kept:
            run_label = label
            run.append((float(start), float(end), confidence))
    close()
    return events


def uninformative_threshold(min_confidence: float, n_classes: int) -> str:
    """A one-line warning when `min_confidence` cannot filter anything (the top probability of `n_classes`
    classes is never below 1 / n_classes), else ""."""
    if n_classes > 0 and min_confidence <= 1.0 / n_classes:
        return (f"--min-confidence {min_confidence:g} keeps every window: the top probability of {n_classes} "
                f"classes is never below 1/{n_classes} = {1.0 / n_classes:.3f}; pass a higher value to filter")
    return ""
