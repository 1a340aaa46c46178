"""Events in a long recording: twelve real spoken digits in 60 s become about twelve events, each within one
window of where its digit is, and the Raven table lists them.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import csv

import numpy as np
from support import fsdd_rows, read_rows

from toolchain.audio.decode import load_audio
from toolchain.audio.features import trim_bounds
from toolchain.scoring.engine import score_files
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.folder import score_folder
from toolchain.scoring.options import ScoringOptions

ENGINE = EngineConfig(batch_size=8, decode_workers=1, intra_op_threads=1)
SPACING_S = 5.0  # One digit every 5 s: 12 in 60 s.


def test_twelve_digits_in_a_minute_become_twelve_events_where_they_are(model, onnx_model, fsdd_dir, tmp_path):
    cfg = model.feature_config
    window = cfg.clip_seconds
    truth = {r["filename"]: r["label"] for r in fsdd_rows(fsdd_dir) if int(r["take"]) >= 40}
    candidates = sorted(truth)[::7]
    alone = zip(candidates, score_files(model, fsdd_dir, candidates, EngineConfig(decode_workers=0,
                                                                                    intra_op_threads=1)))
    # Clips the model recognises alone with confidence, one digit after another: what the recording is made of.
    by_label: dict[str, list[str]] = {}
    for f, r in alone:
        if r.label == truth[f] and r.confidence >= 0.7:
            by_label.setdefault(r.label, []).append(f)
    chosen = [f for k in range(2) for label in sorted(by_label) if len(by_label[label]) > k
              for f in [by_label[label][k]]][:12]
    assert len(chosen) == 12 and len({truth[f] for f in chosen}) >= 6, chosen
    # Between the digits, faint noise 80 dB below them (16-bit dither): silence by the trim's rule, so those
    # windows are silent and never become events (noise closer to the calls is sound: the model decides).
    recording = np.random.default_rng(0).normal(0, 1e-5, int(60 * cfg.sample_rate)).astype(np.float32)
    spans = []
    for k, f in enumerate(chosen):
        clip = load_audio(fsdd_dir / f, cfg)
        lo, hi = trim_bounds(clip, cfg)
        at = int((1.0 + k * SPACING_S) * cfg.sample_rate)
        recording[at:at + hi - lo] += clip[lo:hi]
        spans.append((at / cfg.sample_rate, (at + hi - lo) / cfg.sample_rate, truth[f]))
    folder = tmp_path / "field"
    folder.mkdir()
    import soundfile

    soundfile.write(folder / "minute.wav", recording, cfg.sample_rate, subtype="FLOAT")

    # Windows a whole window apart: each digit starts a window, as a training clip does. (At the default half-window
    # hop each digit is also seen late in the window before it, where this model often names another digit.)
    summary = score_folder(onnx_model, folder, tmp_path / "out", ENGINE,
                           options=ScoringOptions(min_confidence=0.6, format="raven",
                                                  hop_seconds=window))
    events = read_rows(summary.events_path)
    assert summary.events_path.startswith(summary.csv_path.rsplit("/", 1)[0]) and events
    found = [(float(e["start_s"]), float(e["end_s"]), e["label"]) for e in events]
    matched = 0
    for start, end, label in spans:
        near = [e for e in found if e[2] == label and abs(e[0] - start) <= window and abs(e[1] - end) <= window]
        matched += bool(near)
    assert matched >= 11, (spans, found)  # Within one window of each true onset and offset.
    assert 11 <= len(found) <= 14, found  # About one event per digit, none from the silence between them.
    # The Raven table lists the events (not the windows), over the file's own band.
    raven = summary.csv_path.replace("predictions_", "raven_").replace(".csv", ".selections.txt")
    with open(raven, newline="") as f:
        selections = list(csv.DictReader(f, delimiter="\t"))
    assert [(s["Begin Time (s)"], s["End Time (s)"], s["Label"]) for s in selections] == [
        (e["start_s"], e["end_s"], e["label"]) for e in events]
    assert {s["High Freq (Hz)"] for s in selections} == {f"{cfg.sample_rate / 2:g}"}
