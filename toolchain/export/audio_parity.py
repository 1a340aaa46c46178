"""The gate of `model.audio.onnx`: on real clips, its in-graph features equal the library's and its labels equal the
PyTorch checkpoint's, at batch sizes 1, 2 and 3 with rows of unequal length.

Each clip is decoded once by the library (`load_audio`: mono at the model's rate); the reference features are the
library's (`fix_length_fast` + `log_mel_fast`, themselves held to librosa within 1e-3 by the tests) and the
reference labels are the checkpoint's on those features. The graph gets the raw decoded samples, rows zero-padded
to the longest in the batch with their `lengths`. Every failure is collected before the verdict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.audio.decode import load_audio
from toolchain.audio.features import fix_length_fast, log_mel_fast, stack_channels
from toolchain.errors import AudioDecodeError, VariantRejectedError
from toolchain.export.audio_graph import FEATURES, LENGTHS, LOGITS, WAVEFORM
from toolchain.export.clips import Clip
from toolchain.export.parity import run_torch
from toolchain.export.versions import library_versions
from toolchain.inference.providers import CPU_EP
from toolchain.inference.session import open_session, softmax
from toolchain.io import write_json
from toolchain.progress import NullProgress, ProgressReporter

DEFAULT_BATCH_SIZES = (1, 2, 3)


@dataclass(frozen=True)
class AudioThresholds:
    max_feature_diff: float = 1e-3  # On the [0, 1] log-mel scale, against the library's features.
    min_label_agreement: float = 1.0  # With the PyTorch checkpoint, every clip, every batch size.


@dataclass(frozen=True)
class AudioParityReport:
    model_path: str
    passed: bool
    reason: str
    n_clips: int
    clip_source: str
    batch_sizes: tuple[int, ...]
    max_feature_diff: dict[str, float] = field(default_factory=dict)  # Per batch size.
    label_agreement: dict[str, float] = field(default_factory=dict)
    max_abs_prob_diff: dict[str, float] = field(default_factory=dict)  # Against the checkpoint's softmax.
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # Up to 20: clip, batch size, labels.
    skipped: list[dict[str, str]] = field(default_factory=list)  # Clips that did not decode.
    thresholds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _decoded(clips: Sequence[Clip], config, progress: ProgressReporter):
    waves, used, skipped = [], [], []
    progress.start("audio-decode", "audio model: decoding parity clips", len(clips))
    for clip in clips:
        try:
            waves.append(load_audio(clip.path, config))
            used.append(clip)
        except AudioDecodeError as exc:
            skipped.append({"clip": str(clip.path), "cause": exc.cause})
        progress.advance("audio-decode")
    progress.finish("audio-decode")
    return waves, used, skipped


def _reference(ckpt, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(library features (n, n_mels, frames), checkpoint probabilities (n, classes))."""
    config = ckpt.feature_config
    features = np.stack([log_mel_fast(fix_length_fast(y, config), config) for y in waves])
    images = np.stack([stack_channels(f, config) for f in features])
    return features, softmax(run_torch(ckpt.build_model(), images))


def _batches(waves: list[np.ndarray], size: int):
    for i in range(0, len(waves), size):
        rows = waves[i:i + size]
        width = max(len(r) for r in rows)
        batch = np.zeros((len(rows), width), dtype=np.float32)
        for k, r in enumerate(rows):
            batch[k, :len(r)] = r
        yield i, batch, np.array([len(r) for r in rows], dtype=np.int64)


def check_audio_model(model_path: str | Path, ckpt, clips: Sequence[Clip], *, clip_source: str = "",
                      batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
                      thresholds: AudioThresholds = AudioThresholds(), report_path: str | Path | None = None,
                      progress: ProgressReporter | None = None,
                      published_as: str | Path | None = None) -> AudioParityReport:
    """Gate `model_path` (a `model.audio.onnx`, or its temporary file that will be `published_as`) on `clips`;
    writes the report (when `report_path`) and returns it, or raises `VariantRejectedError` carrying it."""
    progress = progress or NullProgress()
    waves, used, skipped = _decoded(clips, ckpt.feature_config, progress)
    if not waves:
        raise VariantRejectedError(f"none of the {len(clips)} clips from {clip_source} decode: the audio model "
                                   "cannot be checked; pass real audio with --parity-data")
    features, reference = _reference(ckpt, waves)
    labels = reference.argmax(axis=1)
    session = open_session(model_path, CPU_EP)
    worst: dict[str, float] = {}
    agreement: dict[str, float] = {}
    prob_diff: dict[str, float] = {}
    disagreements: list[dict[str, Any]] = []
    progress.start("audio-parity", "audio model: parity at batch sizes " + ", ".join(map(str, batch_sizes)),
                   sum(-(-len(waves) // b) for b in batch_sizes))
    for size in batch_sizes:
        diffs, agree, probs = [], 0, []
        for start, batch, lengths in _batches(waves, size):
            logits, graph_features = session.run([LOGITS, FEATURES], {WAVEFORM: batch, LENGTHS: lengths})
            diffs.append(float(np.abs(graph_features[:, 0] - features[start:start + len(batch)]).max()))
            p = softmax(logits)
            probs.append(float(np.abs(p - reference[start:start + len(batch)]).max()))
            for k, label in enumerate(p.argmax(axis=1)):
                if label == labels[start + k]:
                    agree += 1
                elif len(disagreements) < 20:
                    disagreements.append({"clip": str(used[start + k].path), "batch_size": size,
                                          "checkpoint": ckpt.classes[labels[start + k]],
                                          "audio_model": ckpt.classes[label]})
            progress.advance("audio-parity")
        worst[str(size)], agreement[str(size)], prob_diff[str(size)] = max(diffs), agree / len(waves), max(probs)
    progress.finish("audio-parity")
    failures = [f"features differ by {worst[s]:.2e} > {thresholds.max_feature_diff:g} at batch size {s}"
                for s in worst if worst[s] > thresholds.max_feature_diff]
    failures += [f"labels agree with the checkpoint on {agreement[s]:.2%} < {thresholds.min_label_agreement:.0%} "
                 f"at batch size {s}" for s in agreement if agreement[s] < thresholds.min_label_agreement]
    passed = not failures
    reason = (f"features within {max(worst.values()):.2e} and labels 100 % equal to the checkpoint on {len(waves)} "
              f"clips at batch sizes {', '.join(map(str, batch_sizes))}") if passed else "; ".join(failures)
    report = AudioParityReport(
        model_path=str(published_as or model_path), passed=passed, reason=reason, n_clips=len(waves), clip_source=clip_source,
        batch_sizes=tuple(batch_sizes), max_feature_diff=worst, label_agreement=agreement,
        max_abs_prob_diff=prob_diff, disagreements=disagreements, skipped=skipped,
        thresholds=dataclasses.asdict(thresholds), versions=library_versions(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    if report_path is not None:
        write_json(report.to_dict(), report_path)
    if not passed:
        where = f" (report: {report_path})" if report_path else ""
        raise VariantRejectedError(f"audio model deleted: {reason}{where}", report=report)
    return report
