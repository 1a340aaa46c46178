"""Decoding: an audio file -> float32 mono at the contract's sample rate, and the one search for audio files.

Anything that is not decodable audio (missing, empty, garbage, header-only, truncated) raises `AudioDecodeError`
naming the file. `find_audio_files` is the only place that decides what counts as an audio file under a folder.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.errors import AudioDecodeError, one_line

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif", ".au", ".opus", ".wma"})


def is_audio_path(path: str | Path) -> bool:
    """True for file names with a known audio extension, case-insensitively (`A.WAV` counts)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Dot-names are never audio to us: `.git`, our own `.parts_*`, macOS `._x.wav` resource forks."""
    return name.startswith(".")


def find_audio_files(folder: str | Path) -> list[Path]:
    """Every audio file under `folder`, recursively, as absolute paths sorted by their path relative to it.

    The one rule for everyone (training trees, prediction inputs, parity data, scoring): a file counts when its
    extension is an audio extension (case-insensitive) and neither it nor any folder between `folder` and it is
    hidden (a dot-name). Symlinked folders are not followed (no cycles); symlinked files are listed.
    """
    root = Path(folder).expanduser().absolute()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        base = Path(dirpath)
        found.extend(base / name for name in filenames if not is_hidden(name) and is_audio_path(name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _wav_truncation(path: Path) -> str | None:
    """For RIFF/WAVE files, say how the data chunk is cut short (libsndfile silently returns what is there)."""
    try:
        with path.open("rb") as f:
            header = f.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            offset = 12
            while offset + 8 <= size:
                f.seek(offset)
                chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"data":
                    available = size - offset - 8
                    if chunk_size != 0xFFFFFFFF and available < chunk_size:
                        return f"truncated WAV: header declares {chunk_size} data bytes, file holds {available}"
                    return None
                offset += 8 + chunk_size + (chunk_size & 1)
            return "WAV file has no data chunk"
    except OSError:
        return None


def load_audio(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Decode `path` to float32 mono at config.sample_rate (at most `max_decode_seconds`), unmodified.

    Raises `AudioDecodeError` naming the file for anything that is not decodable audio: missing, empty, garbage,
    header-only or truncated files (librosa 0.11 raises EOFError / NoBackendError for some of these and silently
    returns short or empty arrays for others).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_symlink():
            raise AudioDecodeError(path, "a symbolic link that leads nowhere (its target is missing, or it loops)")
        raise AudioDecodeError(path, "is a folder, not a file" if path.is_dir() else "no such file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")
    truncation = _wav_truncation(path)
    if truncation:
        raise AudioDecodeError(path, truncation)

    import librosa  # Imported late: ~1 s, and worker processes only need it here.

    try:
        with warnings.catch_warnings():
            # librosa 0.11 warns (PySoundFile failed / audioread deprecated) before its audioread fallback.
            warnings.simplefilter("ignore")
            y, _ = librosa.load(path, sr=config.sample_rate, mono=True, duration=config.max_decode_seconds)
    except Exception as exc:  # librosa raises EOFError, NoBackendError, RuntimeError, LibsndfileError, ...
        cause = one_line(exc)
        if type(exc).__name__ == "NoBackendError":  # audioread's: no message of its own.
            cause = "no decoder recognises this file (not audio, or a codec neither libsndfile nor ffmpeg reads)"
        raise AudioDecodeError(path, cause) from exc
    if y.size == 0:
        raise AudioDecodeError(path, "no audio samples (header only?)")
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError(path, "audio contains NaN or infinite samples")
    return np.asarray(y, dtype=np.float32)
