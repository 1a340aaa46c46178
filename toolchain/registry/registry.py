"""Registered models: a certified bundle becomes a new version of a registered model (`register_bundle`); aliases
point at versions (`promote`, with a history per alias so `rollback` can step back); `list_models` and
`model_versions` say what is there.

A bundle is what `toolchain export-onnx` leaves beside a model that passed its gate: model.onnx with
parity.json (status passed, the same sha256), the reduced-precision variants that were kept (model.int8.onnx,
model.fp16.onnx with their reports), and model.audio.onnx with parity.audio.json when its gate passed. A model
without a passed parity.json is refused. A bundle already registered under the name (same sha256) is not added
twice: its version is returned.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import RegistryError
from toolchain.inference.contract import read_scoring_metadata
from toolchain.io import file_sha256
from toolchain.registry.client import connect, describe, experiment_id, mlflow_errors, not_found, tracking_uri
from toolchain.registry.refs import check_name

DEFAULT_ALIAS = "champion"
BUNDLE_EXPERIMENT = "toolchain-models"
TRACKING_FILE = "tracking.json"  # Written by a tracked training run into its run folder.
HISTORY_TAG = "toolchain.history."  # + alias: JSON list of the versions it pointed at, oldest first.
VARIANTS = ("int8", "fp16")


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    sha256: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    source: str = ""
    created_ms: int = 0
    new: bool = True  # register_bundle: False when this bundle was registered before.

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "aliases": list(self.aliases),
                "run_id": self.run_id, "source": self.source, "created_ms": self.created_ms, "tags": self.tags}


def _info(mv: Any, new: bool = True) -> ModelVersionInfo:
    tags = dict(mv.tags or {})
    return ModelVersionInfo(mv.name, int(mv.version), tags.get("sha256", ""), tuple(mv.aliases or ()), tags,
                            mv.run_id or "", mv.source or "", int(mv.creation_timestamp or 0), new)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def bundle_files(model_path: str | Path) -> tuple[list[Path], dict[str, str]]:
    """The files of the certified bundle around `model_path` and the gate results as tags; a `RegistryError`
    when the model has no passed gate."""
    model = Path(model_path).expanduser()
    if not model.is_file():
        raise RegistryError(f"model {model} does not exist: pass the model.onnx written by `toolchain export-onnx`")
    parity_path = model.with_name("parity.json")
    parity = _read_json(parity_path)
    sha = file_sha256(model)
    if parity.get("status") != "passed":
        raise RegistryError(f"{model} has no passed parity gate ({parity_path} "
                            f"{'says ' + repr(parity.get('status')) if parity else 'is missing or unreadable'}): "
                            "only a model `toolchain export-onnx` certified can be registered")
    if parity.get("model_sha256") != sha:
        raise RegistryError(f"{parity_path} certifies another file (sha256 {str(parity.get('model_sha256'))[:12]}, "
                            f"{model.name} is {sha[:12]}): export again, or rerun `toolchain verify-onnx --report`")
    files, tags = [model, parity_path], {"gate.fp32": "passed"}
    for precision in VARIANTS:
        variant, report = model.with_name(f"model.{precision}.onnx"), model.with_name(f"parity.{precision}.json")
        data = _read_json(report)
        if variant.is_file() and data.get("status") == "kept":
            files += [variant, report]
            tags[f"gate.{precision}"] = f"kept: {data.get('reason', '')}"[:500]
    audio, audio_report = model.with_name("model.audio.onnx"), model.with_name("parity.audio.json")
    data = _read_json(audio_report)
    if audio.is_file() and data.get("passed") is True:
        files += [audio, audio_report]
        tags["gate.audio"] = f"passed: {data.get('reason', '')}"[:500]
    return files, tags


def register_bundle(model_path: str | Path, name: str, uri: str | None = None) -> ModelVersionInfo:
    """Register the certified bundle around `model_path` as a new version of `name` (created if new); the
    training run's MLflow run (its run folder's tracking.json, same tracking server) holds the files, else a run
    of the `toolchain-models` experiment does."""
    check_name("name", name)
    files, gate_tags = bundle_files(model_path)
    model = Path(model_path).expanduser()
    metadata = read_scoring_metadata(model)
    sha = file_sha256(model)
    client = connect(uri)
    with mlflow_errors(f"register {model} as {name}"):
        try:
            client.get_registered_model(name)
        except Exception as exc:
            if not not_found(exc):
                raise
            client.create_registered_model(name, description="Audio classifier bundles certified by toolchain "
                                                               "export-onnx")
        for mv in client.search_model_versions(f"name='{name}'"):
            if (mv.tags or {}).get("sha256") == sha:
                return _info(client.get_model_version(name, mv.version), new=False)
        training = _training_run(model.parent, client, uri)
        run_id = training or client.create_run(experiment_id(client, BUNDLE_EXPERIMENT),
                                               run_name=f"{name} bundle {sha[:12]}").info.run_id
        folder = f"onnx-{sha[:12]}"
        with tempfile.TemporaryDirectory(prefix="toolchain-bundle-") as tmp:
            for f in files:  # One folder holding exactly the bundle (the run folder holds much more).
                (Path(tmp) / f.name).symlink_to(f.resolve())
            client.log_artifacts(run_id, tmp, folder)
        if not training:
            client.set_terminated(run_id)
        source = f"{client.get_run(run_id).info.artifact_uri}/{folder}"
        tags = {"sha256": sha, "arch": metadata.arch, "classes": ",".join(metadata.classes)[:4000],
                "n_classes": str(len(metadata.classes)), "checkpoint_sha256": metadata.checkpoint_sha256,
                "feature_fingerprint": metadata.feature_fingerprint, "exported_at": metadata.exported_at,
                "training_run": training or "", "files": ",".join(f.name for f in files), **gate_tags}
        mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags, await_creation_for=0,
                                         description=f"{metadata.arch}, {len(metadata.classes)} classes, "
                                                     f"sha256 {sha[:12]}")
        return _info(mv)


def _training_run(run_dir: Path, client: Any, uri: str | None) -> str:
    """The MLflow run that trained the model in `run_dir`, when it was tracked on this tracking server."""
    recorded = _read_json(run_dir / TRACKING_FILE)
    if not recorded.get("run_id") or recorded.get("tracking_uri") != tracking_uri(uri):
        return ""
    try:
        return client.get_run(recorded["run_id"]).info.run_id
    except Exception:
        return ""


def get_version(name: str, version: int | None = None, alias: str | None = None,
                uri: str | None = None, client: Any = None) -> ModelVersionInfo:
    """One version, by number or alias; a `RegistryError` naming what is missing."""
    check_name("name", name)
    client = client or connect(uri)
    what = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    with mlflow_errors(f"look up {what} on {describe(tracking_uri(uri))}"):
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(
                name, str(version))
        except Exception as exc:
            if not_found(exc):
                raise RegistryError(f"{what} does not exist on {describe(tracking_uri(uri))}: see `toolchain models "
                                    f"show {name}`") from None
            raise
        return _info(mv)


def list_models(uri: str | None = None) -> list[dict[str, Any]]:
    """Every registered model: name, latest version, aliases -> versions."""
    client = connect(uri)
    with mlflow_errors("list the registered models"):
        out = []
        for rm in client.search_registered_models(max_results=1000):
            versions = [int(v.version) for v in client.search_model_versions(f"name='{rm.name}'")]
            out.append({"name": rm.name, "versions": len(versions), "latest": max(versions, default=0),
                        "aliases": dict(sorted((rm.aliases or {}).items()))})
        return sorted(out, key=lambda m: m["name"])


def model_versions(name: str, uri: str | None = None) -> list[ModelVersionInfo]:
    """Every version of `name`, newest first."""
    check_name("name", name)
    client = connect(uri)
    with mlflow_errors(f"show {name}"):
        try:
            client.get_registered_model(name)
        except Exception as exc:
            if not_found(exc):
                raise RegistryError(f"no registered model {name!r} on {describe(tracking_uri(uri))}: see "
                                    "`toolchain models list`") from None
            raise
        found = client.search_model_versions(f"name='{name}'")
        return sorted((_info(client.get_model_version(name, v.version)) for v in found), key=lambda v: -v.version)


def alias_history(name: str, alias: str, client: Any) -> list[int]:
    rm = client.get_registered_model(name)
    try:
        return [int(v) for v in json.loads((rm.tags or {}).get(HISTORY_TAG + alias, "[]"))]
    except (ValueError, TypeError):
        return []


def promote(name: str, version: int, alias: str = DEFAULT_ALIAS, uri: str | None = None) -> tuple[int | None, int]:
    """Point `alias` at `version` (recorded in the alias's history); returns (previous version or None, version).
    Runs that resolve `models:/NAME@ALIAS` use it from their next run on."""
    check_name("name", name)
    check_name("alias", alias)
    client = connect(uri)
    target = get_version(name, version=version, uri=uri, client=client)
    with mlflow_errors(f"point {name}@{alias} at version {version}"):
        previous = _current(client, name, alias)
        history = alias_history(name, alias, client)
        if previous is not None and (not history or history[-1] != previous):
            history.append(previous)  # Set outside this tool (the MLflow UI): still a step to roll back to.
        if previous != target.version:
            history.append(target.version)
        client.set_registered_model_tag(name, HISTORY_TAG + alias, json.dumps(history[-100:]))
        client.set_registered_model_alias(name, alias, str(target.version))
    return previous, target.version


def rollback(name: str, alias: str = DEFAULT_ALIAS, uri: str | None = None) -> tuple[int, int]:
    """Point `alias` back at the version it pointed at before the current one; returns (from, to)."""
    check_name("name", name)
    check_name("alias", alias)
    client = connect(uri)
    with mlflow_errors(f"roll back {name}@{alias}"):
        current = _current(client, name, alias)
        if current is None:
            raise RegistryError(f"models:/{name}@{alias} is not set: nothing to roll back (promote a version first)")
        history = alias_history(name, alias, client)
        while history and history[-1] == current:
            history.pop()
        existing = {int(v.version) for v in client.search_model_versions(f"name='{name}'")}
        while history and history[-1] not in existing:
            history.pop()
        if not history:
            raise RegistryError(f"models:/{name}@{alias} has no earlier version to roll back to (it points at "
                                f"version {current}): promote the version you want instead")
        client.set_registered_model_tag(name, HISTORY_TAG + alias, json.dumps(history))
        client.set_registered_model_alias(name, alias, str(history[-1]))
        return current, history[-1]


def _current(client: Any, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except Exception as exc:
        if not_found(exc):
            return None
        raise
