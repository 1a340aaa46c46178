"""A messy dataset made reproducibly from FSDD, standing for what users bring: what real labelled audio has that the
clean spoken digits do not.

    .venv/bin/python benchmarks/messy.py --out artifacts/messy [--fsdd ../shared/data/fsdd] [--seed 0]

Writes OUT/audio/<speaker>/<name>.<ext> and OUT/manifest.csv (filename,label,group; group = speaker, so a
group-aware split or fold never puts a speaker on both sides) and OUT/messy.json (what was done to each file).
From every FSDD clip (takes 0-24 of each speaker and digit, 1,500 clips):
- class imbalance: digits 7, 8 and 9 keep 3 of their 25 takes, 12 % (as rare species or rare events do);
- background at a random SNR from 20 dB down to 0 dB: coloured noise (white, pink or brown) or babble (three
  other speakers' digits, looped), the kind of bed a field or phone recording has;
- mixed formats: sample rates 8, 16, 22.05, 44.1 and 48 kHz, a quarter stereo (the noise differs per channel),
  a tenth 8-bit PCM, the rest 16-bit PCM or float, WAV or FLAC;
- a fifth padded with 2-8 s of the background before and after the call (long recordings cut loosely);
- 3 % of the kept rows mislabelled (another digit), as hand labels are.
FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0 (the derived files keep that licence).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
RATES = (8_000, 16_000, 22_050, 44_100, 48_000)
RARE = {"seven", "eight", "nine"}


def _coloured(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise of unit RMS, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spectrum *= {"white": 1.0, "pink": f ** -0.5, "brown": f ** -1.0}[kind]
    y = np.fft.irfft(spectrum, n)
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def _babble(rng: np.random.Generator, n: int, sources: list[np.ndarray]) -> np.ndarray:
    """Three other speakers' digits summed, each looped to length n at a random offset, unit RMS."""
    y = np.zeros(n)
    for k in rng.choice(len(sources), 3, replace=False):
        src = sources[k]
        y += np.roll(np.resize(src, n), int(rng.integers(n)))
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def _rms(y: np.ndarray) -> float:
    loud = y[np.abs(y) > 0.05 * np.abs(y).max()] if y.size else y
    return float(np.sqrt(np.mean(loud ** 2))) if loud.size else 0.0


def build(fsdd: Path, out: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    with (fsdd / "labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["take"]) < 25]
    kept = [r for r in rows if r["label"] not in RARE or int(r["take"]) < 3]
    # Babble: other speakers' clips, at FSDD's 8 kHz (resampled with each clip).
    by_speaker: dict[str, list[np.ndarray]] = {}
    for r in rows[::7]:
        y, _ = sf.read(fsdd / r["filename"], dtype="float64")
        by_speaker.setdefault(r["speaker"], []).append(y)
    labels = sorted({r["label"] for r in rows})
    (out / "audio").mkdir(parents=True, exist_ok=True)
    manifest, log = [], []
    for i, r in enumerate(kept):
        y, rate = sf.read(fsdd / r["filename"], dtype="float64")
        if y.ndim > 1:
            y = y.mean(axis=1)
        to = int(rng.choice(RATES))
        y = soxr.resample(y, rate, to, quality="HQ") if to != rate else y
        padded = rng.random() < 0.2
        if padded:
            before, after = (int(s * to) for s in rng.uniform(2, 8, 2))
            y = np.concatenate([np.zeros(before), y, np.zeros(after)])
        channels = 2 if rng.random() < 0.25 else 1
        snr = float(rng.uniform(0, 20))
        kind = str(rng.choice(["white", "pink", "brown", "babble"]))
        others = [c for s, clips in by_speaker.items() if s != r["speaker"] for c in clips]
        signal_rms = _rms(y)
        mixed = []
        for _ in range(channels):
            if kind == "babble":
                noise = _babble(rng, y.size, [soxr.resample(c, 8000, to) if to != 8000 else c for c in
                                              [others[k] for k in rng.choice(len(others), 6, replace=False)]])
            else:
                noise = _coloured(rng, y.size, kind)
            mixed.append(y + noise * signal_rms / 10 ** (snr / 20))
        audio = np.stack(mixed, axis=1) if channels == 2 else mixed[0]
        audio *= 0.9 / max(1e-9, float(np.abs(audio).max()))
        subtype = str(rng.choice(["PCM_U8", "PCM_16", "PCM_16", "FLOAT"], p=[0.1, 0.45, 0.3, 0.15]))
        ext = "flac" if subtype == "PCM_16" and rng.random() < 0.5 else "wav"
        path = out / "audio" / r["speaker"] / f"{Path(r['filename']).stem}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, to, subtype=subtype)
        label = r["label"]
        wrong = rng.random() < 0.03
        if wrong:
            label = str(rng.choice([c for c in labels if c != r["label"]]))
        manifest.append([str(path.relative_to(out)), label, r["speaker"]])
        log.append({"file": str(path.relative_to(out)), "true_label": r["label"], "label": label, "rate": to,
                    "channels": channels, "subtype": subtype, "snr_db": round(snr, 2), "noise": kind,
                    "padded": padded, "mislabelled": wrong})
        if (i + 1) % 250 == 0:
            print(f"messy: {i + 1}/{len(kept)} files", file=sys.stderr, flush=True)
    with (out / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "group"])
        writer.writerows(manifest)
    summary = {"files": len(log), "per_label": {c: sum(1 for m in manifest if m[1] == c) for c in labels},
               "mislabelled": sum(e["mislabelled"] for e in log), "stereo": sum(e["channels"] == 2 for e in log),
               "padded": sum(e["padded"] for e in log), "seed": seed, "files_detail": log}
    (out / "messy.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = build(args.fsdd, args.out, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "files_detail"}))


if __name__ == "__main__":
    main()
