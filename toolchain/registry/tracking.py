"""Training runs in MLflow: `Tracker` logs one training run (its resolved config as parameters, the data
fingerprint and versions as tags, every epoch's metrics, and at the end the plots, reports, metrics and summary
as artifacts) and writes `tracking.json` into the run folder so a later `export-onnx --register` links the
registered version to it.

Tracking never stops training: when the store cannot be opened, or a call fails half way, the tracker says so in
one line (through `note`) and turns itself off. `seconds` is the time its calls took on the training thread (the
tracking overhead); epoch metrics go through MLflow's logging thread and are waited for at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import one_line
from toolchain.io import write_json
from toolchain.registry.client import connect, describe, experiment_id, tracking_uri
from toolchain.registry.registry import TRACKING_FILE

DEFAULT_EXPERIMENT = "toolchain-train"
_PARAM_LIMIT = 6000  # MLflow keeps parameter values up to 6000 characters.


class Tracker:
    """One MLflow run per training run; every method is a no-op once tracking is off."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, enabled: bool = True,
                 note: Callable[[str], None] = lambda message: None):
        self.uri, self.experiment, self.note = tracking_uri(uri), experiment, note
        self.enabled = enabled
        self.client: Any = None
        self.run_id = ""
        self.seconds = 0.0
        self._pending: list[Any] = []  # Epoch metrics queued to MLflow's logging thread.

    def _flush(self) -> None:
        """Wait until the queued epoch metrics are stored (raising what storing them raised)."""
        pending, self._pending = self._pending, []
        for operation in pending:
            if operation is not None:
                operation.wait()

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.enabled = False
            self.note(f"tracking off: could not {doing} on {describe(self.uri)} ({one_line(exc)}); training goes "
                      "on, its outputs are in the run folder")
        finally:
            self.seconds += time.perf_counter() - started

    def start(self, run_dir: Path, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        with self._guard("start a run"):
            self.client = connect(self.uri)
            experiment = experiment_id(self.client, self.experiment)
            run = self.client.create_run(experiment, run_name=Path(run_dir).name,
                                         tags={"run_folder": str(Path(run_dir).resolve()), **tags})
            self.run_id = run.info.run_id
            self.client.log_batch(self.run_id, params=_params(params))
            write_json({"tracking_uri": self.uri, "run_id": self.run_id, "experiment": self.experiment,
                        "experiment_id": experiment}, Path(run_dir) / TRACKING_FILE)
            self.note(f"tracking run {self.run_id} in experiment {self.experiment!r} at {describe(self.uri)}")

    def epoch(self, row: Mapping[str, Any]) -> None:
        if not self.enabled or not self.run_id:
            return
        from mlflow.entities import Metric

        with self._guard("log an epoch"):
            step, now = int(row["epoch"]), int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, step) for k, v in row.items()
                       if k != "epoch" and isinstance(v, (int, float))]
            # Queued to MLflow's logging thread: the next epoch starts now, not after a database or HTTP round trip.
            self._pending.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))

    def finish(self, outputs: Mapping[str, Any], summary: Mapping[str, Any], status: str = "FINISHED") -> None:
        if not self.enabled or not self.run_id:
            return
        with self._guard("log the run's outputs"):
            self._flush()
            for path in _files(outputs):
                folder = "plots" if path.suffix == ".png" else "reports"
                self.client.log_artifact(self.run_id, str(path), folder)
            figures = {k: float(v) for k, v in _flat(summary).items() if isinstance(v, (int, float))
                       and not isinstance(v, bool)}
            from mlflow.entities import Metric
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(f"final.{k}", v, now, 0) for k, v in figures.items()])
            self.client.set_terminated(self.run_id, status)

    def fail(self, exc: BaseException) -> None:
        """The training failed or was interrupted: the run ends FAILED / KILLED with the reason."""
        if not self.enabled or not self.run_id:
            return
        with self._guard("end the run"):
            self._flush()
            self.client.set_tag(self.run_id, "error", one_line(exc))
            self.client.set_terminated(self.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")


def _params(params: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(str(k)[:250], str(v)[:_PARAM_LIMIT]) for k, v in sorted(_flat(params).items())]


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _files(outputs: Mapping[str, Any]) -> list[Path]:
    found: list[Path] = []
    for value in outputs.values():
        values = value if isinstance(value, (list, tuple)) else (value,)
        found += [Path(v) for v in values if isinstance(v, (str, Path)) and Path(v).is_file()]
    return sorted(set(found))
