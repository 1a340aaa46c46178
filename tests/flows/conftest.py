"""Fixtures for tests/flows/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest
from support import stop, wait_until


@pytest.fixture(scope="module")
def dask_cluster():
    # Real worker processes (daemonic: the engine decodes inline there), one thread each, loopback only.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    # The harness server takes ~17 s to start here (more on a busy box); its 30 s default is too tight.
    with prefect_test_harness(server_startup_timeout=180):
        yield


# --- from test_serve_e2e.py


BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_env(tmp_path) -> Iterator[dict[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_SERVER_API_HOST="127.0.0.1",
    )
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: healthy(env["PREFECT_API_URL"]), STARTUP_TIMEOUT_S, "prefect server", server, log)
        yield env
    finally:
        stop(server)


@pytest.fixture
def ui_model(request) -> Path:
    if os.environ.get("MODEL"):
        return Path(os.environ["MODEL"]).resolve()
    return request.getfixturevalue("onnx_model")
