"""The model a scoring run uses: its identity and metadata read without ONNX Runtime (`describe_model`, which
refuses what is not a scoring model before any ledger row is written), and a loaded model reused across the
shards of one process (`load_model_cached`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ScoringError
from toolchain.inference.contract import ModelMetadata, model_file_problem, read_scoring_metadata
from toolchain.io import file_sha256
from toolchain.scoring.engine import ScoringModel, load_model
from toolchain.scoring.engine_config import EngineConfig


@dataclass(frozen=True)
class ModelIdentity:
    path: str
    sha256: str  # Of the .onnx file.
    metadata: ModelMetadata


def describe_model(path: str | Path) -> ModelIdentity:
    """The model's identity and metadata without starting ONNX Runtime; refuses what is not a scoring model (a
    folder, a model.audio.onnx, a foreign graph or feature config) before any caller writes a ledger row.
    Reused while the file is the same (device, inode, size, mtime, ctime): a backfill or an inbox scan asks for
    every folder, and hashing and parsing a ResNet152 takes a second."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is not None and path.is_file():
        return _described(str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return _describe(path)


@functools.lru_cache(maxsize=4)
def _described(path: str, dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int) -> ModelIdentity:
    return _describe(Path(path))


def _describe(path: Path) -> ModelIdentity:
    problem = model_file_problem(path)
    if problem:
        raise ScoringError(f"model {path} {problem}")
    metadata = read_scoring_metadata(path)
    return ModelIdentity(str(path.resolve()), file_sha256(path), metadata)


@functools.lru_cache(maxsize=1)
def _cached_model(path: str, mtime_ns: int, size: int, config: EngineConfig) -> ScoringModel:
    return load_model(path, config)


def load_model_cached(path: str | Path, config: EngineConfig = EngineConfig()) -> ScoringModel:
    """`load_model`, reused across shards in one process (keyed on the file's mtime and size, so a replaced model
    file is reloaded)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return load_model(path, config)  # Raises the one-line error.
    stat = path.stat()
    return _cached_model(str(path.resolve()), stat.st_mtime_ns, stat.st_size, config)
