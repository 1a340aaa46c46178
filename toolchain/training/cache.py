"""On-disk feature cache: decode + log-mel once per file per feature fingerprint.

Layout: `<root>/<fingerprint>-windows-v2-<placement>/<sha[:2]>/<sha256 of the file bytes>.npy`, each holding the
(windows, n_mels, frames) float32 array of the file's windows (`toolchain.audio.windows.file_windows`: one window,
exactly `features_from_path`, for a file within the model's clip length; a longer one's windows under the default
`WindowRule`, as scoring cuts them: on its sounds, or the grid where nothing stands out). Training draws one window
per file per epoch at random (`windows="random"`: random crops of long clips, for free); evaluation scores every
window and aggregates them per file as scoring does (`windows="all"` and `file_index`). Keying by content (not path)
means a renamed or copied file is still a hit, and a changed file is a miss; keying by fingerprint means a changed
feature config never reads stale arrays. Writes are atomic (temporary file + rename), so a killed run leaves no
half-written entry.

Uncached files are extracted in worker processes (`toolchain.pool.spawn_pool`: spawned with the parent's `__main__`
hidden, so workers import only this module's dependencies, never torch or the CLI). As with any spawn pool, a script that calls
`ensure` (or `toolchain.training.train`) at import level needs the `if __name__ == "__main__":` guard.

`extract_features` below is the one place where the feature function is chosen: a faster implementation (with a
parity test against librosa) can be swapped in there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.audio.config import FeatureConfig
from toolchain.audio.features import stack_channels
from toolchain.audio.windows import WINDOW_RULE_VERSION, WindowRule, file_windows
from toolchain.cpu import available_cores
from toolchain.errors import AudioDecodeError
from toolchain.io import atomic_write, file_sha256
from toolchain.pool import spawn_pool
from toolchain.progress import NullProgress, ProgressReporter

DEFAULT_CACHE_DIR = Path("artifacts") / "cache" / "features"
CHUNKSIZE = 8  # Files per worker task: amortizes inter-process overhead; FSDD clips take ~25 ms each.


def extract_features(path: str, config: FeatureConfig) -> np.ndarray:
    """The feature function the cache stores: (windows, n_mels, frames) float32. Swap a faster one in here only."""
    return file_windows(path, config).features


@dataclass(frozen=True)
class CacheReport:
    """Outcome of `FeatureCache.ensure`: which files are usable and which could not be decoded."""

    hashes: dict[str, str]  # path -> sha256, for every file that is now cached.
    failures: dict[str, str]  # path -> cause, for files that failed to decode (excluded, never a crash).
    extracted: int  # Files decoded in this call (0 when everything was a hit).
    hits: int  # Files already cached.


def _write_entry(array: np.ndarray, target: Path) -> None:
    with atomic_write(target) as tmp, tmp.open("wb") as f:
        np.save(f, array, allow_pickle=False)


def _extract_to(job: tuple[str, str, FeatureConfig]) -> tuple[str, str | None]:
    """Worker task: featurize one file into the cache. Returns (path, None) or (path, cause of failure)."""
    path, target, config = job
    try:
        _write_entry(extract_features(path, config), Path(target))
    except AudioDecodeError as exc:
        return path, exc.cause
    return path, None


@dataclass
class FeatureCache:
    """Features of audio files under one feature config, computed at most once per file content."""

    root: Path
    config: FeatureConfig
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    @property
    def folder(self) -> Path:
        return self.root / f"{self.config.fingerprint}-{WINDOW_RULE_VERSION}-{WindowRule().placement_tag}"

    def entry(self, sha: str) -> Path:
        return self.folder / sha[:2] / f"{sha}.npy"

    def ensure(
        self,
        paths: Sequence[str],
        *,
        hashes: Mapping[str, str] | None = None,
        num_workers: int | None = None,
        progress: ProgressReporter | None = None,
    ) -> CacheReport:
        """Make sure every file in `paths` is cached; decode the misses in `num_workers` processes.

        `num_workers=0` extracts in this process (debugging, tiny sets). Unreadable and undecodable files end in
        `failures` with their cause; they are not retried within this cache object.
        """
        progress = progress or NullProgress()
        known = dict(hashes or {})
        unique = list(dict.fromkeys(str(p) for p in paths))
        failures: dict[str, str] = {}
        for p in unique:
            if p not in known:
                try:
                    known[p] = file_sha256(p)
                except OSError as exc:
                    failures[p] = f"cannot read file: {exc.strerror or exc}"
        todo: dict[str, str] = {}  # sha -> a path with those bytes (duplicates decode once).
        for p in unique:
            if p in known and not self.entry(known[p]).is_file():
                todo.setdefault(known[p], p)
        progress.start("features", f"caching features ({len(todo)} new, {len(unique) - len(todo)} cached)",
                       total=len(todo))
        failed_shas = {}
        for path, cause in self._run(todo, num_workers, progress):
            if cause is not None:
                failed_shas[known[path]] = cause
        progress.finish("features")
        for p in unique:
            if p in known and known[p] in failed_shas:
                failures[p] = failed_shas[known[p]]
        good = {p: known[p] for p in unique if p in known and p not in failures}
        self._hashes.update(good)
        return CacheReport(hashes=good, failures=failures, extracted=len(todo), hits=len(unique) - len(todo))

    def _run(
        self, todo: Mapping[str, str], num_workers: int | None, progress: ProgressReporter
    ) -> Iterator[tuple[str, str | None]]:
        jobs = [(path, str(self.entry(sha)), self.config) for sha, path in todo.items()]
        workers = available_cores() if num_workers is None else num_workers
        workers = min(workers, len(jobs))
        if workers <= 1 or len(jobs) < 2 * CHUNKSIZE:
            for job in jobs:  # Spawning workers costs seconds (librosa import); not worth it for a handful.
                yield _extract_to(job)
                progress.advance("features")
            return
        with spawn_pool(workers) as pool:
            for result in pool.map(_extract_to, jobs, chunksize=CHUNKSIZE):
                yield result
                progress.advance("features")

    def load(self, path: str) -> np.ndarray:
        """The cached (windows, n_mels, frames) array of a file that `ensure` reported as good.

        A damaged entry (truncated by a full disk, wrong shape) is recomputed in place rather than trusted.
        """
        sha = self._hashes.get(path) or file_sha256(path)
        target = self.entry(sha)
        expected = (self.config.n_mels, self.config.num_frames)
        try:
            array = np.load(target, allow_pickle=False)
            if array.ndim == 3 and array.shape[0] >= 1 and array.shape[1:] == expected and array.dtype == np.float32:
                return array
        except (OSError, ValueError, EOFError):
            pass
        array = extract_features(path, self.config)
        _write_entry(array, target)
        return array

    def window_count(self, path: str) -> int:
        """How many windows a cached file has (read from the .npy header only)."""
        try:
            return int(np.load(self.entry(self._hashes.get(path) or file_sha256(path)), mmap_mode="r").shape[0])
        except (OSError, ValueError, EOFError, IndexError):
            return int(self.load(path).shape[0])


class CachedFeatureDataset:
    """Map-style dataset over cached features: item -> ((channels, n_mels, frames) float32, class index).

    `windows="random"` (training): one item per file, a random window of it each time (torch's RNG, so a seeded
    run repeats). `windows="all"` (evaluation): one item per window, in file order; `file_index[i]` is the file
    of item i, so per-window outputs can be aggregated per file. Works with `torch.utils.data.DataLoader`.
    """

    def __init__(self, cache: FeatureCache, paths: Sequence[str], targets: Sequence[int], windows: str = "all"):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        if windows not in ("all", "random"):
            raise ValueError(f"windows={windows!r} is not 'all' or 'random'")
        self.cache = cache
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]
        self.windows = windows
        counts = [1] * len(self.paths) if windows == "random" else [cache.window_count(p) for p in self.paths]
        self.file_index = np.repeat(np.arange(len(self.paths)), counts)
        self.window_index = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, dtype=int)

    def __len__(self) -> int:
        return len(self.file_index)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        import torch

        file = int(self.file_index[index])
        windows = self.cache.load(self.paths[file])
        if self.windows == "random":
            k = int(torch.randint(len(windows), ()).item()) if len(windows) > 1 else 0
        else:
            k = int(self.window_index[index])
        image = stack_channels(windows[min(k, len(windows) - 1)], self.cache.config)
        return np.ascontiguousarray(image), self.targets[file]
