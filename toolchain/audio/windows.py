"""Whole recordings as windows: the feature contract for audio of any length.

A window is the model's clip (`clip_seconds`, 5 s = 216 frames at the defaults). A file whose non-silent part fits
in one window is featurized exactly as a training clip (trim, pad, peak-normalize): short-clip results never change.
A longer file gets windows on its sounds (below) or, on the grid, is silence-trimmed at both ends, then cut into
windows every `hop` seconds from the start of the trimmed audio, the last window aligned to its end (no zero-padded
tail); each window is peak-normalized and turned into a log-mel image like any clip. Every window knows where it
lies in the original file (seconds from the file's first sample: the trim offset is included), so a detection can be
found again in the recording.

Silence inside a recording is judged by the same rule that trims its ends: a window none of whose trim frames
comes within `trim_top_db` of the file's loudest frame is silent (`FileWindows.audible`). Peak normalization would
blow its faint noise up into a full-scale image the model never saw in training, so a silent window is left out of
the file's label, its detections and its events (`windows-v2`; `windows-v1` counted every window).

Placement (`WindowRule.sound_db`). By default (`SOUND_DB`, 6 dB) a long file's windows lie on its sounds: each
stretch whose trim frames stand `sound_db` over the file's own background (`features.sound_spans`) gets one window
from its onset holding only that stretch, featurized as a clip, so a call inside a recording is scored exactly as
the same call cut out and scored alone; stretches less than `SOUND_BRIDGE_S` apart are one sound, a stretch longer
than a window gets the grid within it, and nothing between sounds is scored. A file in which nothing stands out
(steady sound), or whose sounds would need more windows than the grid (a dense chorus), keeps the grid: placement
never costs more windows than the grid. `sound_db=None` is the grid over the whole trimmed file.

Decoding: a file up to `LONG_FILE_SECONDS` (or in a format libsndfile cannot read) is decoded whole. A longer one
is read in blocks, twice: one streaming pass (libsndfile blocks, a streaming soxr resampler) finds the trim bounds
from per-chunk energies, then each part of `PART_WINDOWS` windows is read back by seeking, with a margin so the
resampler's edges fall outside it. Memory stays flat whatever the file's length; `WindowRule.max_duration_s` is a
safety limit (default off) on how much of a file is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.audio.config import FeatureConfig
from toolchain.audio.decode import AudioInfo, audio_info, check_audio_file, load_audio, read_mono, stream_mono
from toolchain.audio.features import (
    audible_spans,
    chunk_energy,
    log_mel_fast,
    padded_clip,
    sound_spans,
    trim_from_energy,
)
from toolchain.errors import FeatureConfigError

WINDOW_RULE_VERSION = "windows-v2"
LONG_FILE_SECONDS = 120.0  # Longer files are streamed (never whole in memory); shorter ones decoded whole.
PART_WINDOWS = 32  # Windows per part of a long file: one unit of decode work, ~80 s of audio at the default hop.
RESAMPLE_MARGIN = 4096  # Original-rate frames read either side of a part (soxr HQ's filter is far shorter).
SOUND_BRIDGE_S = 0.25  # Sound placement: runs of sound closer than this are one sound (a call's own pauses).
SOUND_DB = 6.0  # Default placement: windows on what stands this many dB over the file's background.


@dataclass(frozen=True)
class WindowRule:
    """How a file longer than one clip is cut into windows. Part of every CSV row and ledger run (`tag`)."""

    hop_seconds: float | None = None  # Seconds between window starts; None = half a clip (2.5 s at the defaults).
    max_duration_s: float | None = None  # Read at most this much of each file; None = all of it.
    # Windows as clip samples (num_samples,), cut, padded and peak-normalized, for a model that computes its own
    # log-mel (`model.audio.onnx`), instead of log-mel images. Which windows, and where, does not change.
    samples: bool = False
    # Windows placed on the file's sounds: each sound whose level stands this many dB over the file's own
    # background gets one window from its onset holding only that sound (a clip, as in training), a sound longer
    # than a window the grid within it; nothing between. None: windows on a regular grid over the trimmed file.
    sound_db: float | None = SOUND_DB

    def __post_init__(self) -> None:
        for name in ("hop_seconds", "max_duration_s", "sound_db"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0):
                unit = "dB" if name == "sound_db" else "seconds"
                raise FeatureConfigError(f"{name}={value!r} must be a positive number of {unit} (or unset)")

    def hop_for(self, config: FeatureConfig) -> float:
        hop = self.hop_seconds if self.hop_seconds is not None else config.clip_seconds / 2
        if hop > config.clip_seconds:
            raise FeatureConfigError(
                f"hop_seconds={hop:g} is longer than the model's {config.clip_seconds:g}-s window: audio between "
                f"windows would never be scored; pass at most {config.clip_seconds:g}")
        return hop

    def hop_samples(self, config: FeatureConfig) -> int:
        return max(1, int(round(self.hop_for(config) * config.sample_rate)))

    @property
    def placement_tag(self) -> str:
        """`sound+6dB` (windows on the sounds, the grid where they fall back to it) or `end-aligned` (the grid, its
        last window aligned to the end)."""
        return "end-aligned" if self.sound_db is None else f"sound+{self.sound_db:g}dB"

    def tag(self, config: FeatureConfig) -> str:
        """Compact and complete, e.g. `windows-v2 5s/2.5s sound+6dB` or `windows-v2 5s/2.5s end-aligned`: which
        rule scored a file."""
        limit = f" max {self.max_duration_s:g}s" if self.max_duration_s is not None else ""
        return f"{WINDOW_RULE_VERSION} {config.clip_seconds:g}s/{self.hop_for(config):g}s {self.placement_tag}{limit}"


@dataclass(frozen=True)
class FileWindows:
    """Windows of one file (all of them, or one part of a long file's), in time order."""

    features: np.ndarray  # (n, n_mels, frames) float32 in [0, 1]; (n, num_samples) clips with `WindowRule.samples`.
    starts_s: tuple[float, ...]  # Window starts, seconds into the original file.
    ends_s: tuple[float, ...]
    duration_s: float  # The decoded file's length (up to max_duration_s).
    scored_s: float  # Seconds of audio the file's windows cover (the non-silent span, or its sounds).
    last: bool = True  # False for every part of a long file but its final one.
    # Per window: does it hold sound by the silence trim's rule (`audible_spans`)? () = every window does.
    audible: tuple[bool, ...] = ()


def window_starts(start: int, end: int, size: int, hop: int) -> list[int]:
    """Window start samples over [start, end): every `hop` from `start`, the last aligned to `end`; one window
    (at `start`) when the span fits in `size`."""
    if end - start <= size:
        return [start]
    starts = list(range(start, end - size, hop))
    if starts[-1] != end - size:
        starts.append(end - size)
    return starts


@dataclass(frozen=True)
class PlacedWindows:
    """Where a signal's windows lie, in samples: each window [starts[i], ends[i]), its silence mark (`audible`,
    () = all sound) and how many samples the windows cover."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    audible: tuple[bool, ...]
    scored: int


def place_windows(energy: np.ndarray, n: int, config: FeatureConfig, rule: WindowRule) -> PlacedWindows:
    """The windows of an `n`-sample signal from its chunk energies (`chunk_energy`), by `rule`."""
    size, hop = config.num_samples, rule.hop_samples(config)
    start, end = trim_from_energy(energy, n, config.trim_top_db) if energy.any() else (0, min(n, size))
    grid = window_starts(start, end, size, hop)
    spans = None
    if rule.sound_db is not None and end - start > size:
        spans = sound_spans(energy, n, config.trim_top_db, rule.sound_db, SOUND_BRIDGE_S, config.sample_rate)
    if spans is not None:
        starts, ends = [], []
        for a, b in spans:
            for s in window_starts(a, b, size, hop):
                starts.append(s)
                ends.append(min(b, s + size))
        if len(starts) <= len(grid):  # Sounds denser than the grid's windows (a chorus): the grid, at its cost.
            return PlacedWindows(tuple(starts), tuple(ends), (), sum(b - a for a, b in spans))
    ends = [min(end, s + size) for s in grid]
    audible = audible_spans(energy, n, config.trim_top_db, grid, ends) if len(grid) > 1 else ()
    return PlacedWindows(tuple(grid), tuple(ends), audible, end - start)


def window_input(segment: np.ndarray, config: FeatureConfig, samples: bool = False) -> np.ndarray:
    """One window's model input: its log-mel image, or (`samples`) its padded, peak-normalized clip."""
    clip = padded_clip(segment, config)
    return clip if samples else log_mel_fast(clip, config)


def windows_from_signal(y: np.ndarray, config: FeatureConfig, rule: WindowRule = WindowRule()) -> FileWindows:
    """Every window of a decoded mono signal at config.sample_rate."""
    y = np.asarray(y, dtype=np.float32)
    sr = config.sample_rate
    at = place_windows(chunk_energy(y), y.size, config, rule)  # One pass over the samples places every window.
    features = np.stack([window_input(y[s:e], config, rule.samples) for s, e in zip(at.starts, at.ends)])
    return FileWindows(features, tuple(s / sr for s in at.starts), tuple(e / sr for e in at.ends),
                       y.size / sr, at.scored / sr, audible=at.audible)


@dataclass(frozen=True)
class LongPlan:
    """A long file after its streaming pass: where its windows lie, in samples at the model's rate."""

    path: str
    info: AudioInfo
    max_frames: int  # Original-rate frames that count (the file's, or max_duration_s's).
    n_samples: int  # Its length at the model's rate.
    at: PlacedWindows
    window: int  # The model's clip, in samples.
    samples: bool = False  # `WindowRule.samples`.

    @property
    def starts(self) -> tuple[int, ...]:
        return self.at.starts

    @property
    def parts(self) -> list[tuple[int, int]]:
        """Windows k0..k1-1 per part: at most PART_WINDOWS, over at most PART_WINDOWS clips' worth of samples
        (windows placed on sparse sounds lie far apart; a part is read whole)."""
        parts, k0 = [], 0
        for k, e in enumerate(self.at.ends):
            if k > k0 and (k - k0 == PART_WINDOWS or e - self.at.starts[k0] > PART_WINDOWS * self.window):
                parts.append((k0, k))
                k0 = k
        return parts + [(k0, len(self.starts))] if self.starts else parts


def plan_long(path: str | Path, info: AudioInfo, config: FeatureConfig, rule: WindowRule) -> LongPlan:
    """The streaming pass over a long file: its length and trim bounds at the model's rate, hence its windows."""
    max_frames = info.frames if rule.max_duration_s is None else min(
        info.frames, int(rule.max_duration_s * info.sample_rate))
    energies: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    n = 0
    for block in stream_mono(path, info, config.sample_rate, max_frames):
        n += block.size
        buf = np.concatenate([carry, block])
        whole = buf.size - buf.size % 512
        energies.append(chunk_energy(buf[:whole]))
        carry = buf[whole:]
    energies.append(chunk_energy(carry))
    return LongPlan(str(path), info, max_frames, n, place_windows(np.concatenate(energies), n, config, rule),
                    config.num_samples, rule.samples)


def long_part(plan: LongPlan, k0: int, k1: int, config: FeatureConfig) -> FileWindows:
    """Windows k0..k1-1 of a planned long file, read back by seeking (plus a resampling margin)."""
    sr_in, sr = plan.info.sample_rate, config.sample_rate
    starts, ends = plan.at.starts[k0:k1], plan.at.ends[k0:k1]
    first, stop = starts[0], max(ends)
    if sr_in == sr:
        segment, offset = read_mono(plan.path, first, stop), float(first)
    else:
        import soxr

        o0 = max(0, math.floor(first * sr_in / sr) - RESAMPLE_MARGIN)
        o1 = min(plan.max_frames, math.ceil(stop * sr_in / sr) + RESAMPLE_MARGIN)
        segment = soxr.resample(read_mono(plan.path, o0, o1), sr_in, sr, quality="HQ")
        offset = o0 * sr / sr_in
    clips = []
    for s, e in zip(starts, ends):
        i = max(0, int(round(s - offset)))
        clips.append(window_input(segment[i:i + e - s], config, plan.samples))
    return FileWindows(np.stack(clips), tuple(s / sr for s in starts), tuple(e / sr for e in ends),
                       plan.n_samples / sr, plan.at.scored / sr, last=k1 == len(plan.starts),
                       audible=plan.at.audible[k0:k1])


def file_windows_or_plan(path: str | Path, config: FeatureConfig,
                         rule: WindowRule = WindowRule()) -> FileWindows | LongPlan:
    """A file's windows (decoded whole), or the plan to read a long one in parts (`long_part`)."""
    path = Path(path)
    check_audio_file(path)
    info = audio_info(path)
    if info is None or info.duration_s <= LONG_FILE_SECONDS:
        return windows_from_signal(load_audio(path, config, max_seconds=rule.max_duration_s), config, rule)
    return plan_long(path, info, config, rule)


def file_windows(path: str | Path, config: FeatureConfig, rule: WindowRule = WindowRule()) -> FileWindows:
    """Every window of one file, in this thread, whole (for callers that want them all at once)."""
    found = file_windows_or_plan(path, config, rule)
    if isinstance(found, FileWindows):
        return found
    parts = [long_part(found, k0, k1, config) for k0, k1 in found.parts]
    return FileWindows(np.concatenate([p.features for p in parts]), sum((p.starts_s for p in parts), ()),
                       sum((p.ends_s for p in parts), ()), parts[0].duration_s, parts[0].scored_s,
                       audible=sum((p.audible for p in parts), ()))
