"""Calls inside long recordings against the same calls alone: clips of held-out FSDD speakers planted at random
offsets and gaps in long noise beds at several SNRs, scored by the engine as a user's long recording would be.

    .venv/bin/python benchmarks/calls_in_noise.py --model run/model.onnx --speakers george,nicolas \
        [--snr 20,10,5] [--files 4] [--seconds 60] [--hop-seconds H] [--placement sounds|grid] [--sound-db D] \
        [--min-confidence 0.5] [--background pink|babble|rain] [--seed S] [--work DIR]

The model must not have trained on `--speakers` (e.g. a `benchmarks/cv.py` fold's model, exported). Per SNR it
prints, for the same calls: the share labelled right alone and clean (the clip file as it is), alone at the same
SNR (the call's own span cut from the long file: the short-clip path), and inside the long file, by the windows
(the most confident audible window over the call's midpoint, as a reviewer scanning the windows would take it)
and by the events (the event overlapping the call most; an event needs a window at --min-confidence, so it is
set against the calls labelled right alone at that confidence); and for right events the share whose onset and
offset lie within half a hop of the truth. Targets (long vs alone at the same SNR): >= 95 % at 20 dB, >= 90 % at 10 dB.

A call's truth span is its clip trimmed at 30 dB below the clip's loudest 512-sample chunk; its SNR is its power
over that span against the bed's RMS (`--background`: stationary pink noise; babble, 8 of the other
speakers at once; or rain, loud drops over a quiet floor). Gaps between calls are uniform in [--min-gap,
--max-gap] seconds. Everything is drawn from `--seed`.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolchain.audio.decode import load_audio  # noqa: E402
from toolchain.audio.features import chunk_energy, trim_from_energy  # noqa: E402
from toolchain.audio.windows import WindowRule  # noqa: E402
from toolchain.inference.events import find_events  # noqa: E402
from toolchain.scoring.engine import load_model, score_files  # noqa: E402
from toolchain.scoring.engine_config import EngineConfig  # noqa: E402
from toolchain.scoring.options import WindowPlacement, placement_sound_db  # noqa: E402

TRUTH_TOP_DB = 30.0
TARGETS = {20.0: 0.95, 10.0: 0.90}  # Long by windows against alone at the same SNR.
ONSET_TARGET = 0.90  # Right events whose onset lies within half a hop of the truth.


@dataclass(frozen=True)
class Call:
    clip: str  # The FSDD file.
    label: str
    long_file: str
    onset_s: float  # Truth span in the long file.
    offset_s: float
    alone_file: str  # The same span cut from the long file (noise included).


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (y / np.sqrt(np.mean(y**2))).astype(np.float32)


def babble(n: int, rng: np.random.Generator, voices: list[np.ndarray], streams: int = 8) -> np.ndarray:
    """Unit-RMS babble: `streams` talkers each saying random clips back to back (a crowd, or a chorus of the
    same kind of call as the ones to find)."""
    y = np.zeros(n, dtype=np.float64)
    for _ in range(streams):
        t = int(rng.integers(0, 4000))
        while t < n:
            v = voices[int(rng.integers(len(voices)))]
            v = v / max(float(np.sqrt(np.mean(v**2))), 1e-12) * 10 ** rng.uniform(-0.3, 0.3)
            m = min(v.size, n - t)
            y[t:t + m] += v[:m]
            t += v.size + int(rng.integers(0, 2000))
    return (y / np.sqrt(np.mean(y**2))).astype(np.float32)


def rain(n: int, rng: np.random.Generator, sr: int, drops_per_s: float = 400.0) -> np.ndarray:
    """Unit-RMS rain: drops (a few ms of decaying noise, log-normal loudness) at random, over a pink floor
    10 dB down. Not stationary at the scale of frames: the loud drops stand out of the floor."""
    y = pink_noise(n, rng).astype(np.float64) * 10 ** (-10 / 20)
    for t in rng.integers(0, n, size=int(drops_per_s * n / sr)):
        length = int(rng.uniform(0.002, 0.012) * sr)
        drop = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4)) * rng.lognormal(0.0, 1.0)
        m = min(length, n - int(t))
        y[t:t + m] += drop[:m]
    return (y / np.sqrt(np.mean(y**2))).astype(np.float32)


def truth_span(y: np.ndarray) -> tuple[int, int]:
    return trim_from_energy(chunk_energy(y), y.size, TRUTH_TOP_DB)


def fsdd_clips(fsdd: Path, speakers: set[str], of: bool = True) -> list[tuple[str, str]]:
    """(path, label) of the clips of `speakers` (`of=False`: of every other speaker)."""
    with (fsdd / "labels.csv").open(newline="") as f:
        return [(str(fsdd / r["filename"]), r["label"]) for r in csv.DictReader(f) if (r["speaker"] in speakers) == of]


def build(clips: list[tuple[str, str]], work: Path, snr_db: float, args, config, rng,
          voices: list[np.ndarray]) -> list[Call]:
    """`args.files` long files at `snr_db` under `work`, and each call's alone cut; returns the calls."""
    sr, noise_rms = config.sample_rate, 10 ** (-30 / 20)  # The bed at -30 dBFS RMS.
    calls: list[Call] = []
    work.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(len(clips))
    used = 0
    for k in range(args.files):
        n = int(args.seconds * sr)
        if args.background == "babble":
            bed = babble(n, rng, voices) * noise_rms
        elif args.background == "rain":
            bed = rain(n, rng, sr) * noise_rms
        else:
            bed = pink_noise(n, rng) * noise_rms
        placed: list[tuple[int, int, str, str]] = []
        t = int(rng.uniform(args.min_gap, args.max_gap) * sr)
        while used < len(order):
            path, label = clips[order[used]]
            y = load_audio(path, config)
            a, b = truth_span(y)
            y = y[a:b]
            if t + y.size > n - sr:
                break
            gain = noise_rms * 10 ** (snr_db / 20) / max(float(np.sqrt(np.mean(y**2))), 1e-12)
            bed[t:t + y.size] += gain * y
            placed.append((t, t + y.size, path, label))
            used += 1
            t += y.size + int(rng.uniform(args.min_gap, args.max_gap) * sr)
        peak = float(np.max(np.abs(bed)))
        if peak > 0.99:
            bed *= 0.99 / peak
        long_file = work / f"long{k:02d}.wav"
        soundfile.write(long_file, bed, sr, subtype="PCM_16")
        for i, (s, e, path, label) in enumerate(placed):
            alone = work / f"alone{k:02d}_{i:03d}.wav"
            soundfile.write(alone, bed[s:e], sr, subtype="PCM_16")
            calls.append(Call(path, label, str(long_file), s / sr, e / sr, str(alone)))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model.onnx not trained on --speakers.")
    parser.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd")
    parser.add_argument("--speakers", required=True, help="Held-out FSDD speakers, comma-separated.")
    parser.add_argument("--snr", default="20,10,5", help="SNRs in dB, comma-separated.")
    parser.add_argument("--files", type=int, default=4, help="Long files per SNR.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of each long file.")
    parser.add_argument("--background", choices=["pink", "babble", "rain"], default="pink",
                        help="The bed: stationary pink noise, babble of the other speakers (8 at once), or rain "
                             "(loud drops over a quiet floor).")
    parser.add_argument("--min-gap", type=float, default=0.5)
    parser.add_argument("--max-gap", type=float, default=4.0)
    parser.add_argument("--hop-seconds", type=float, default=None, help="Window hop (default: half a window).")
    parser.add_argument("--placement", choices=[p.value for p in WindowPlacement], default="sounds",
                        help="Windows on the sounds (the default, as in `toolchain score`) or the regular grid.")
    parser.add_argument("--sound-db", type=float, default=None, help="With --placement sounds (default: 6).")
    parser.add_argument("--min-confidence", type=float, default=0.5, help="Events: the windows' threshold.")
    parser.add_argument("--merge-gap", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("artifacts/calls-in-noise"))
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: WORK/results.json).")
    args = parser.parse_args()
    model = load_model(args.model, EngineConfig())
    config, classes = model.feature_config, model.classes
    rule = WindowRule(hop_seconds=args.hop_seconds, sound_db=placement_sound_db(args.placement, args.sound_db))
    hop = rule.hop_for(config)
    speakers = set(args.speakers.split(","))
    clips = [c for c in fsdd_clips(args.fsdd, speakers) if c[1] in classes]
    if not clips:
        sys.exit(f"no FSDD clips of speakers {args.speakers} with the model's labels")
    rng = np.random.default_rng(args.seed)
    voices: list[np.ndarray] = []
    if args.background == "babble":  # Other speakers' clips, trimmed: the crowd the calls are found in.
        others = fsdd_clips(args.fsdd, speakers, of=False)
        if not others:
            sys.exit("--background babble needs FSDD speakers outside --speakers to talk in the background")
        for i in rng.choice(len(others), size=min(200, len(others)), replace=False):
            y = load_audio(others[int(i)][0], config)
            a, b = truth_span(y)
            voices.append(y[a:b])
    results = {"model": str(args.model), "window_rule": rule.tag(config), "background": args.background,
               "seed": args.seed, "cpu": platform.processor() or platform.machine(), "snr": {}}
    print(f"{args.model}: {len(classes)} classes, {config.clip_seconds:g}-s windows, {rule.tag(config)}, "
          f"{args.background} background, seed {args.seed}")
    for snr in (float(s) for s in args.snr.split(",")):
        calls = build(clips, args.work / f"snr{snr:g}", snr, args, config, rng, voices)

        def labels(files: list[str], rule: WindowRule = rule):
            return {row.file: row for row in score_files(model, "/", files, rule=rule)}

        clean = labels(sorted({c.clip for c in calls}))
        alone = labels([c.alone_file for c in calls])
        started = time.perf_counter()
        long_rows = labels(sorted({c.long_file for c in calls}))
        long_seconds = time.perf_counter() - started
        by_window = by_event = onset_ok = offset_ok = 0
        onset_errors: list[float] = []
        events_of = {file: find_events([w.start_s for w in row.windows], [w.end_s for w in row.windows],
                                       [w.probabilities for w in row.windows], classes, args.min_confidence,
                                       args.merge_gap, [w.audible for w in row.windows])
                     for file, row in long_rows.items()}  # Once per long file, not once per call.
        for c in calls:
            row = long_rows[c.long_file]
            middle = (c.onset_s + c.offset_s) / 2
            over = [w for w in row.windows if w.audible and w.start_s <= middle < w.end_s]
            if over:
                best = max(over, key=lambda w: max(w.probabilities))
                by_window += classes[int(np.argmax(best.probabilities))] == c.label
            overlap = [(min(e.end_s, c.offset_s) - max(e.start_s, c.onset_s), e) for e in events_of[c.long_file]]
            overlap = [(o, e) for o, e in overlap if o > 0]
            if overlap:
                _, event = max(overlap, key=lambda oe: oe[0])
                if event.label == c.label:
                    by_event += 1
                    onset_errors.append(abs(event.start_s - c.onset_s))
                    onset_ok += abs(event.start_s - c.onset_s) <= hop / 2
                    offset_ok += abs(event.end_s - c.offset_s) <= hop / 2
        n = len(calls)
        share = {"alone_clean": sum(clean[c.clip].label == c.label for c in calls) / n,
                 "alone_same_snr": sum(alone[c.alone_file].label == c.label for c in calls) / n,
                 "alone_confident": sum(alone[c.alone_file].label == c.label
                                        and alone[c.alone_file].confidence >= args.min_confidence for c in calls) / n,
                 "long_windows": by_window / n, "long_events": by_event / n}
        windows = sum(len(r.windows) for r in long_rows.values())
        audio_s = sum(r.duration_s for r in long_rows.values())
        results["snr"][f"{snr:g}"] = {
            "calls": n, **share, "ratio_windows": share["long_windows"] / max(share["alone_same_snr"], 1e-9),
            "ratio_events": share["long_events"] / max(share["alone_confident"], 1e-9),
            "onset_within_half_hop": onset_ok / max(by_event, 1), "offset_within_half_hop": offset_ok / max(by_event, 1),
            "onset_error_median_s": statistics.median(onset_errors) if onset_errors else None,
            "windows_scored": windows, "long_windows_per_s": windows / long_seconds,
            "long_audio_s_per_s": audio_s / long_seconds}
        r = results["snr"][f"{snr:g}"]
        print(f"SNR {snr:g} dB, {n} calls: alone clean {share['alone_clean']:.3f}, alone {share['alone_same_snr']:.3f}"
              f" (confident {share['alone_confident']:.3f}) | long by windows {share['long_windows']:.3f} "
              f"({r['ratio_windows']:.0%} of alone), by events {share['long_events']:.3f} ({r['ratio_events']:.0%} "
              f"of alone confident) | right events with onset within "
              f"{hop / 2:g} s: {r['onset_within_half_hop']:.0%}, offset {r['offset_within_half_hop']:.0%} | "
              f"{windows} windows, {r['long_audio_s_per_s']:.0f} s of audio/s", flush=True)
        target = TARGETS.get(snr)
        if target is not None:
            met = r["ratio_windows"] >= target and r["onset_within_half_hop"] >= ONSET_TARGET
            print(f"  targets at {snr:g} dB: long >= {target:.0%} of alone ({r['ratio_windows']:.0%}), onsets within "
                  f"half a hop >= {ONSET_TARGET:.0%} ({r['onset_within_half_hop']:.0%}): "
                  f"{'met' if met else 'missed'}", flush=True)
    out = args.out or args.work / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
