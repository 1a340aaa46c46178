"""`score-folder` shards spread over a real Dask cluster (2 worker processes on loopback) write the same
CSV as the in-process run. Runs under Prefect's test harness (a real temporary API server).

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import dataclasses
import math

import distributed
import pytest
from support import copy_clips, read_rows

from flows.score_folder import RunSettings, score_folder_flow
from toolchain.errors import ScoringError
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.ledger import Ledger

ENGINE = EngineConfig(intra_op_threads=1, batch_size=4)
PROB_TOLERANCE = 1e-5  # Same model, same features; only batch composition differs between the runs.


def by_file(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["file"]: r for r in rows}


def test_dask_run_writes_the_same_csv_as_the_in_process_run(prefect_api, dask_cluster, onnx_model, fsdd_dir,
                                                             tmp_path):
    folder = tmp_path / "drop"
    names = copy_clips(fsdd_dir, folder, 100, 10)
    (folder / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio")  # An error row must match too.

    local = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "local"), folder=str(folder),
                              engine=dataclasses.replace(ENGINE, decode_workers=1), run=RunSettings(shard_size=4))
    remote = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "dask"), folder=str(folder),
                               engine=ENGINE,
                               run=RunSettings(shard_size=4, dask_address=dask_cluster.scheduler_address))

    local_rows, remote_rows = by_file(read_rows(local["csv_path"])), by_file(read_rows(remote["csv_path"]))
    assert sorted(remote_rows) == sorted(local_rows) == sorted([*names, "broken.wav"])
    prob_columns = ["confidence", *(c for c in next(iter(local_rows.values())) if c.startswith("prob_"))]
    assert prob_columns, "expected per-class probability columns"
    for name, want in local_rows.items():
        got = remote_rows[name]
        assert (got["label"], got["status"], bool(got["error"])) == (want["label"], want["status"], bool(want["error"]))
        for column in prob_columns:
            if want[column]:
                assert math.isclose(float(got[column]), float(want[column]), abs_tol=PROB_TOLERANCE), (name, column)
            else:
                assert got[column] == ""
    assert remote["files_ok"] == local["files_ok"] == 10 and remote["files_error"] == local["files_error"] == 1

    [row] = Ledger.in_dir(tmp_path / "dask").folder_runs()
    assert (row.state, row.files_ok, row.files_error) == ("completed", 10, 1)
    # The shards really ran in the worker processes (11 files / 4 per shard = 3 tasks), not in this one.
    with distributed.Client(dask_cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) == 3


def test_unreachable_scheduler_fails_the_run_with_a_clear_message(prefect_api, onnx_model, fsdd_dir, tmp_path,
                                                                  monkeypatch):
    import flows.dask_runner

    monkeypatch.setattr(flows.dask_runner, "CONNECT_TIMEOUT_S", 3)  # Nothing listens there: no need to wait 30 s.
    folder = tmp_path / "drop"
    copy_clips(fsdd_dir, folder, 0, 1)
    state = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "out"), folder=str(folder),
                              engine=ENGINE, run=RunSettings(dask_address="tcp://127.0.0.1:9"), return_state=True)
    assert state.is_failed() and "cannot reach the Dask scheduler" in state.message
    with pytest.raises(ScoringError):
        state.result()
