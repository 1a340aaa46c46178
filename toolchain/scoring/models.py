"""The model a scoring run uses: the file a model reference names (`resolve_model`), its identity and metadata read without ONNX Runtime (`describe_model`, which
refuses what is not a scoring model before any ledger row is written), and a loaded model reused across the
shards of one process (`load_model_cached`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ScoringError
from toolchain.inference.contract import ModelMetadata, model_file_problem, read_scoring_metadata
from toolchain.io import file_sha256
from toolchain.registry.fetch import read_registration
from toolchain.registry.refs import is_registry_ref
from toolchain.scoring.engine import ScoringModel, load_model
from toolchain.scoring.engine_config import EngineConfig


@dataclass(frozen=True)
class ModelIdentity:
    path: str
    sha256: str  # Of the .onnx file.
    metadata: ModelMetadata
    version: str = ""  # NAME/VERSION when the file is a registered version fetched from the registry.


def resolve_model(model: str | Path, say: Callable[[str], None] = lambda message: None) -> Path:
    """The local .onnx file `model` names: a path as it is, or a registered version (`models:/NAME@ALIAS`,
    `models:/NAME/VERSION`) resolved now and fetched into the local cache once (`toolchain.registry.fetch`);
    `say` gets one line naming the version (and a warning when the registry did not answer)."""
    if not is_registry_ref(model):
        return Path(model).expanduser()
    from toolchain.registry.fetch import fetch_model  # Loads MLflow: only when a registered model is named.

    fetched = fetch_model(str(model), warn=say)
    say(f"{model} is {fetched.label} (sha256 {fetched.sha256[:12]})")
    return fetched.path


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
    sha256 = file_sha256(path)
    registered = read_registration(path)
    version = f"{registered['name']}/{registered['version']}" if registered and registered.get("sha256") == sha256 \
        else ""
    return ModelIdentity(str(path.resolve()), sha256, metadata, version)


@functools.lru_cache(maxsize=2)  # A shadow comparison alternates between two models.
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
