"""The one place that talks to MLflow: which tracking server (`tracking_uri`), a client for it that has been
checked to answer (`connect`), and MLflow's failures turned into one-line `RegistryError`s (`mlflow_errors`).

MLflow is imported here, inside functions, so only commands that track, register or fetch a registered model
load it (about 4 s on a 2-core machine)."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import RegistryError, RegistryUnreachableError, one_line

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# MLflow's own default, spelled out: `mlflow ui` in the same folder shows it.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PROBE_TIMEOUT_S = 5.0


def tracking_uri(explicit: str | None = None) -> str:
    """`explicit`, else $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the current folder."""
    return explicit or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI


def describe(uri: str) -> str:
    """`uri` without a password, for messages."""
    head, at, tail = uri.rpartition("@")
    if at and "://" in head and ":" in head.split("://", 1)[1]:
        scheme, user = head.split("://", 1)
        return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"
    return uri


def _probe(uri: str) -> None:
    """An HTTP tracking server answers /health within seconds, or a `RegistryUnreachableError` says so (MLflow's
    own client retries a dead server for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryUnreachableError(
            f"the MLflow tracking server at {describe(uri)} does not answer ({reason}): start it (`mlflow server "
            "--backend-store-uri sqlite:///mlflow.db`), or pass another --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


def connect(uri: str | None = None) -> Any:
    """An `mlflow.MlflowClient` for `tracking_uri(uri)`, checked to answer."""
    uri = tracking_uri(uri)
    _probe(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # A server that dies mid-run fails in seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # Our commands say what they did.
    os.environ.setdefault("MLFLOW_PRINT_MODEL_URLS_ON_CREATION", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        import mlflow
    except ImportError as exc:
        raise RegistryError(f"MLflow is not installed ({exc}): pip install 'mlflow==3.17.*'") from None
    with mlflow_errors(f"open the tracking store {describe(uri)}"):
        mlflow.set_tracking_uri(uri)
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def mlflow_errors(doing: str) -> Iterator[None]:
    """Any MLflow or transport failure inside the block as one `RegistryError` line: `cannot <doing>: <why>`."""
    try:
        yield
    except RegistryError:
        raise
    except Exception as exc:  # MlflowException, requests' errors, sqlite's: all the same to the user.
        message = getattr(exc, "message", None) or str(exc)
        first = message.strip().splitlines()[0] if message.strip() else one_line(exc)
        if _is_unreachable(exc):
            raise RegistryUnreachableError(f"cannot {doing}: the tracking server does not answer ({first[:200]})") \
                from None
        raise RegistryError(f"cannot {doing}: {first[:300]}") from None


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name`, created if new. In a local SQLite store its artifacts go beside the database
    (`<folder of mlflow.db>/mlruns`), wherever the command runs; a server decides for itself."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    uri = str(client.tracking_uri)
    location = None
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        location = (Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _is_unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(word in text for word in ("ConnectionError", "Max retries exceeded", "Connection refused",
                                         "timed out", "ConnectTimeout"))


def not_found(exc: BaseException) -> bool:
    """MLflow's way of saying an unknown model, version or alias (RESOURCE_DOES_NOT_EXIST; an unset alias is an
    INVALID_PARAMETER_VALUE "alias ... not found")."""
    text = f"{getattr(exc, 'error_code', '')} {exc}"
    return "RESOURCE_DOES_NOT_EXIST" in text or ("INVALID_PARAMETER_VALUE" in text and "not found" in text)
