"""The registry against a real `mlflow server`: only certified bundles register, versions and aliases move by
promote and rollback, and a fetched version is the registered bytes (checked), cached, and still served from the
cache when the server is down."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import certified_bundle, free_port

from toolchain.errors import RegistryError, RegistryUnreachableError
from toolchain.registry.fetch import cache_root, fetch_model, read_registration
from toolchain.registry.registry import list_models, model_versions, promote, register_bundle, rollback
from toolchain.scoring.models import describe_model, resolve_model


@pytest.fixture
def bundles(tiny_onnx, tiny_onnx_successor, tmp_path) -> tuple[Path, Path]:
    return (certified_bundle(tiny_onnx, tmp_path / "v1"), certified_bundle(tiny_onnx_successor, tmp_path / "v2"))


def test_only_a_model_whose_gate_passed_registers(tiny_onnx, tmp_path, mlflow_server):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy2(tiny_onnx, bare / "model.onnx")
    with pytest.raises(RegistryError, match="has no passed parity gate .*is missing"):
        register_bundle(bare / "model.onnx", "refused", mlflow_server)
    (bare / "parity.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(RegistryError, match="says 'failed'"):
        register_bundle(bare / "model.onnx", "refused", mlflow_server)
    certified = certified_bundle(tiny_onnx, tmp_path / "certified")
    certified.write_bytes(certified.read_bytes() + b"\0")  # Changed after its gate passed.
    with pytest.raises(RegistryError, match="certifies another file"):
        register_bundle(certified, "refused", mlflow_server)
    assert "refused" not in {m["name"] for m in list_models(mlflow_server)}


def test_register_promote_rollback_and_fetch(bundles, mlflow_server, tmp_path):
    first, second = bundles
    v1 = register_bundle(first, "reg-cycle", mlflow_server)
    again = register_bundle(first, "reg-cycle", mlflow_server)
    v2 = register_bundle(second, "reg-cycle", mlflow_server)
    assert (v1.version, v1.new, again.version, again.new, v2.version) == (1, True, 1, False, 2)
    assert v1.tags["arch"] == "linear" and v1.tags["classes"] == "a,b" and v1.tags["gate.fp32"] == "passed"
    assert [v.version for v in model_versions("reg-cycle", mlflow_server)] == [2, 1]

    assert promote("reg-cycle", 1, uri=mlflow_server) == (None, 1)
    assert promote("reg-cycle", 2, uri=mlflow_server) == (1, 2)
    fetched = fetch_model("models:/reg-cycle@champion", mlflow_server)
    assert (fetched.version, fetched.sha256) == (2, v2.sha256)
    assert fetched.path.read_bytes() == second.read_bytes()
    assert read_registration(fetched.path)["version"] == 2
    assert rollback("reg-cycle", uri=mlflow_server) == (2, 1)
    assert fetch_model("models:/reg-cycle@champion", mlflow_server).sha256 == v1.sha256
    with pytest.raises(RegistryError, match="has no earlier version to roll back to"):
        rollback("reg-cycle", uri=mlflow_server)
    with pytest.raises(RegistryError, match=r"models:/reg-cycle/9 does not exist"):
        promote("reg-cycle", 9, uri=mlflow_server)
    with pytest.raises(RegistryError, match=r"models:/reg-cycle@challenger does not exist"):
        fetch_model("models:/reg-cycle@challenger", mlflow_server)


def test_a_fetched_version_is_cached_checked_and_survives_an_outage(bundles, mlflow_server, monkeypatch):
    first, _ = bundles
    register_bundle(first, "reg-cache", mlflow_server)
    promote("reg-cache", 1, uri=mlflow_server)
    fetched = fetch_model("models:/reg-cache@champion", mlflow_server)
    inode = fetched.path.stat().st_ino
    assert fetch_model("models:/reg-cache@champion", mlflow_server).path.stat().st_ino == inode  # Not fetched again.
    # Scoring sees the registered version: the ledger and CSV rows name it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    identity = describe_model(resolve_model("models:/reg-cache@champion"))
    assert identity.version == "reg-cache/1" and identity.sha256 == fetched.sha256

    dead = f"http://127.0.0.1:{free_port()}"
    warnings: list[str] = []
    fallback = fetch_model("models:/reg-cache@champion", dead, warn=warnings.append)
    assert fallback.fallback and fallback.path == fetched.path
    assert len(warnings) == 1 and "does not answer" in warnings[0] and "using reg-cache/1" in warnings[0]
    with pytest.raises(RegistryUnreachableError, match="does not answer"):
        fetch_model("models:/never-fetched@champion", dead)


def test_a_changed_artifact_is_refused_not_served(bundles, mlflow_server, mlflow_server_root):
    first, _ = bundles
    info = register_bundle(first, "reg-tamper", mlflow_server)
    # The server's artifact store is a local folder here: change the stored model.onnx behind its back.
    [model] = [p for p in (mlflow_server_root / "artifacts").rglob("model.onnx") if info.run_id in str(p)]
    model.write_bytes(model.read_bytes() + b"tampered")
    with pytest.raises(RegistryError, match="has sha256 .* not the registered"):
        fetch_model("models:/reg-tamper/1", mlflow_server)
    assert not list((cache_root() / "reg-tamper").glob("1-*"))  # Nothing half-fetched is left to be used.


def test_the_default_local_store_registers_and_serves_without_a_server(bundles):
    first, _ = bundles  # MLFLOW_TRACKING_URI: a SQLite file of this test's own (tests/conftest.py).
    info = register_bundle(first, "local")
    promote("local", info.version)
    assert fetch_model("models:/local@champion").sha256 == info.sha256
