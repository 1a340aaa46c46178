"""Decoding: an audio file -> float32 mono at the contract's sample rate, and the one search for audio files.

Anything that is not decodable audio (missing, empty, garbage, header-only, truncated) raises `AudioDecodeError`
naming the file. `find_audio_files` is the only place that decides what counts as an audio file under a folder.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.errors import AudioDecodeError, one_line

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif", ".au", ".opus", ".wma"})


def is_audio_path(path: str | Path) -> bool:
    """True for file names with a known audio extension, case-insensitively (`A.WAV` counts)."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


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
    return [root / relative for relative in audio_relative_paths(root)]


def audio_relative_paths(folder: str | Path) -> list[str]:
    """`find_audio_files(folder)` as sorted posix paths relative to `folder`, built from strings (an inbox scan
    asks this for folders of thousands of files)."""
    root = os.path.abspath(os.path.expanduser(folder))
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        relative = os.path.relpath(dirpath, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        found.extend(prefix + name for name in filenames if not is_hidden(name) and is_audio_path(name))
    return sorted(found)


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


def check_audio_file(path: Path) -> None:
    """Refuse what cannot be audio before a decoder sees it: missing, a folder, a dangling link, empty, cut WAV."""
    if not path.is_file():
        if path.is_symlink():
            raise AudioDecodeError(path, "a symbolic link that leads nowhere (its target is missing, or it loops)")
        raise AudioDecodeError(path, "is a folder, not a file" if path.is_dir() else "no such file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")
    truncation = _wav_truncation(path)
    if truncation:
        raise AudioDecodeError(path, truncation)


def load_audio(path: str | Path, config: FeatureConfig = DEFAULT_CONFIG,
               max_seconds: float | None = -1.0) -> np.ndarray:
    """Decode `path` to float32 mono at config.sample_rate, unmodified: at most `max_seconds` (default: the
    config's `max_decode_seconds`; None: the whole file).

    Raises `AudioDecodeError` naming the file for anything that is not decodable audio: missing, empty, garbage,
    header-only or truncated files (librosa 0.11 raises EOFError / NoBackendError for some of these and silently
    returns short or empty arrays for others).
    """
    path = Path(path)
    check_audio_file(path)
    if max_seconds is not None and max_seconds < 0:
        max_seconds = config.max_decode_seconds

    import librosa  # Imported late: ~1 s, and worker processes only need it here.

    try:
        with warnings.catch_warnings():
            # librosa 0.11 warns (PySoundFile failed / audioread deprecated) before its audioread fallback.
            warnings.simplefilter("ignore")
            y, _ = librosa.load(path, sr=config.sample_rate, mono=True, duration=max_seconds)
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


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says (libsndfile): enough to plan reading it in blocks."""

    sample_rate: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo | None:
    """The header of a file libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...) with a known length; None for
    anything else (m4a, wma, ...: those are decoded whole through audioread/ffmpeg)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:  # LibsndfileError, RuntimeError, TypeError: not a format it reads.
        return None
    if info.frames <= 0 or info.samplerate <= 0 or info.frames >= 2**62:  # 2**63-1: "unknown length".
        return None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def _mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32, channels averaged as `librosa.to_mono` does (channel by channel:
    numpy's mean over a 2-wide axis is ~10x slower than the adds)."""
    mono = np.array(block[:, 0], dtype=np.float32)
    if block.shape[1] > 1:
        for channel in range(1, block.shape[1]):
            mono += block[:, channel]
        mono /= block.shape[1]
    return mono


def read_mono(path: str | Path, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of `path` at its own sample rate, mono float32 (libsndfile seeks; nothing else read)."""
    import soundfile

    try:
        block = soundfile.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)[0]
    except Exception as exc:
        raise AudioDecodeError(Path(path), one_line(exc)) from exc
    mono = _mono(block)
    if not np.isfinite(mono).all():  # A NaN or inf in any channel reaches the mix.
        raise AudioDecodeError(Path(path), "audio contains NaN or infinite samples")
    return mono


def stream_mono(path: str | Path, info: AudioInfo, target_rate: int, max_frames: int | None = None,
                block_frames: int = 1 << 18) -> Iterator[np.ndarray]:
    """The whole of `path` (or its first `max_frames`) as consecutive mono float32 blocks resampled to
    `target_rate` by one streaming resampler (soxr HQ, librosa's default), ~12 s of audio at a time: memory
    stays flat whatever the file's length."""
    import soundfile
    import soxr

    resampler = None if info.sample_rate == target_rate else soxr.ResampleStream(
        info.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
    frames = info.frames if max_frames is None else min(info.frames, max_frames)
    try:
        with soundfile.SoundFile(str(path)) as f:
            remaining = frames
            while remaining > 0:
                block = f.read(min(block_frames, remaining), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break  # Shorter than its header says: what is there is what we score.
                remaining -= block.shape[0]
                mono = _mono(block)
                if not np.isfinite(mono).all():
                    raise AudioDecodeError(Path(path), "audio contains NaN or infinite samples")
                out = mono if resampler is None else resampler.resample_chunk(mono, last=remaining <= 0)
                if out.size:
                    yield out
            if resampler is not None and remaining > 0:  # Ended early: flush the resampler's tail.
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                if tail.size:
                    yield tail
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(Path(path), one_line(exc)) from exc
