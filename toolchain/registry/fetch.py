"""Registered versions on this machine: `fetch_model("models:/NAME@ALIAS")` resolves the alias now, downloads a
version's bundle the first time it is needed, checks its model.onnx against the sha256 registered with it, and
keeps it in the cache (`TOOLCHAIN_MODEL_CACHE`, default ~/.cache/toolchain/models/NAME/VERSION-SHA12/). Later
runs use the cached bundle without downloading it again.

When the tracking server does not answer, a reference by alias falls back to the version this machine resolved
for it last (with a warning), so scoring goes on through a registry outage; a version never fetched fails.
`registered.json` beside a fetched model.onnx says which registered version it is (`read_registration`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import RegistryError, RegistryUnreachableError
from toolchain.io import file_sha256, write_json
from toolchain.registry.refs import ModelRef, parse_ref

CACHE_ENV = "TOOLCHAIN_MODEL_CACHE"
REGISTRATION_FILE = "registered.json"
_RESOLVED_FILE = "resolved.json"  # Per model: {alias: version} as last resolved on this machine.


@dataclass(frozen=True)
class FetchedModel:
    path: Path  # The cached model.onnx.
    name: str
    version: int
    sha256: str
    alias: str | None = None
    fallback: bool = False  # The server did not answer: the version resolved last was used.

    @property
    def label(self) -> str:
        """`NAME/VERSION`, as CSV rows and the ledger name it."""
        return f"{self.name}/{self.version}"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "toolchain" / "models").expanduser()


def read_registration(model_path: str | Path) -> dict[str, Any] | None:
    """What `fetch_model` wrote beside a fetched model.onnx (name, version, sha256), or None."""
    path = Path(model_path).with_name(REGISTRATION_FILE)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("name") and data.get("version") else None


def fetch_model(reference: str, uri: str | None = None,
                warn: Callable[[str], None] = lambda message: None) -> FetchedModel:
    """The local model.onnx of the version `reference` (models:/NAME@ALIAS or models:/NAME/VERSION) names now."""
    from toolchain.registry.client import connect, mlflow_errors
    from toolchain.registry.registry import get_version

    ref = parse_ref(reference)
    try:
        client = connect(uri)
        info = get_version(ref.name, version=ref.version, alias=ref.alias, uri=uri, client=client)
    except RegistryUnreachableError as exc:
        cached = _last_resolved(ref)
        if cached is None:
            raise
        warn(f"{exc}; using {ref.name}/{cached.version} (what {ref} named when this machine last resolved it)")
        return cached
    if not info.sha256:
        raise RegistryError(f"models:/{ref.name}/{info.version} has no sha256 tag: register it with `toolchain "
                            "export-onnx --register` or `toolchain models register`")
    folder = cache_root() / ref.name / f"{info.version}-{info.sha256[:12]}"
    model = folder / "model.onnx"
    if (read_registration(model) or {}).get("sha256") != info.sha256 or not model.is_file():
        with mlflow_errors(f"download models:/{ref.name}/{info.version}"):
            _download(client, ref.name, info.version, info.sha256, folder)
    fetched = FetchedModel(model, ref.name, info.version, info.sha256, ref.alias)
    if ref.alias:
        _remember(ref, info.version)
    return fetched


def _download(client: Any, name: str, version: int, sha256: str, folder: Path) -> None:
    """Download into a temporary folder beside `folder`, check model.onnx's sha256, then rename into place (a
    killed download leaves no half bundle; two processes fetching at once both end with the same folder)."""
    import mlflow

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        source = client.get_model_version_download_uri(name, str(version))
        got_path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp / "d")))
        os.replace(got_path, tmp / "bundle")  # The download keeps the source's folder name: drop it.
        shutil.rmtree(tmp / "d", ignore_errors=True)
        model = tmp / "bundle" / "model.onnx"
        if not model.is_file():
            raise RegistryError(f"models:/{name}/{version} holds no model.onnx ({source}): register a bundle written "
                                "by `toolchain export-onnx`")
        got = file_sha256(model)
        if got != sha256:
            raise RegistryError(f"models:/{name}/{version}'s model.onnx has sha256 {got[:12]}, not the registered "
                                f"{sha256[:12]}: its stored files were changed; register the bundle again")
        write_json({"name": name, "version": version, "sha256": sha256, "source": source},
                   tmp / "bundle" / REGISTRATION_FILE)
        if folder.exists():  # A bundle without its registration: a copy from before a crash.
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp / "bundle", folder)
        except OSError:  # Another process renamed its verified copy into place first.
            if (read_registration(folder / "model.onnx") or {}).get("sha256") != sha256:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remember(ref: ModelRef, version: int) -> None:
    path = cache_root() / ref.name / _RESOLVED_FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
        if data.get(ref.alias) != version:
            write_json({**data, str(ref.alias): version}, path)
    except (OSError, ValueError):
        pass  # Only the outage fallback needs it.


def _last_resolved(ref: ModelRef) -> FetchedModel | None:
    root = cache_root() / ref.name
    try:
        version = ref.version or json.loads((root / _RESOLVED_FILE).read_text()).get(str(ref.alias))
    except (OSError, ValueError):
        return None
    for model in sorted(root.glob(f"{version}-*/model.onnx")) if version else ():
        registered = read_registration(model)
        if registered and registered.get("version") == version:
            return FetchedModel(model, ref.name, int(version), registered["sha256"], ref.alias, fallback=True)
    return None
