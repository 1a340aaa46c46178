"""The Prefect flow `score-folder` under Prefect's own test harness (a real temporary API server).

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest
from prefect.utilities.callables import parameter_schema
from support import copy_clips, make_bad_input_folder, published_csvs, read_rows

from flows.score_folder import engine_settings, score_folder_flow
from toolchain.errors import ScoringError
from toolchain.scoring.engine import EngineConfig
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.outputs import FAULT_ENV
from toolchain.scoring.precision import Precision
from toolchain.scoring.roots import ALLOWED_ROOTS_ENV

ENGINE = {"decode_workers": 1, "intra_op_threads": 1, "batch_size": 8, "settle_seconds": 0}


def flow_runs_by_name() -> dict[str, list]:
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs()

    runs: dict[str, list] = {}
    for run in asyncio.run(read()):
        runs.setdefault(run.name, []).append(run)
    return runs


def test_inbox_scores_each_new_folder_once(prefect_api, onnx_model, fsdd_dir, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = {name: copy_clips(fsdd_dir, inbox / name, 4 * i, 4) for i, name in enumerate(("day-a", "day-b"))}
    (inbox / "still-empty").mkdir()  # No audio yet: left for a later scan.

    first = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **ENGINE)
    assert sorted(Path(f["folder"]).name for f in first["folders"]) == ["day-a", "day-b"]
    for name, names in expected.items():
        csvs = published_csvs(out / name)
        assert len(csvs) == 1 and [r["file"] for r in read_rows(csvs[0])] == names
    ledger = Ledger.in_dir(out)
    rows = ledger.folder_runs()
    assert [r.state for r in rows] == ["completed", "completed"] and all(r.flow_run_id for r in rows)
    parent = ledger.run(first["run_id"])
    assert (parent.mode, parent.state, parent.folders, parent.files_ok) == ("inbox", "completed", 2, 8)

    second = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **ENGINE)
    assert second["folders"] == []
    assert all(len(published_csvs(out / name)) == 1 for name in expected)
    assert len(ledger.folder_runs()) == 2

    copy_clips(fsdd_dir, inbox / "day-c", 8, 3)
    third = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **ENGINE)
    assert [Path(f["folder"]).name for f in third["folders"]] == ["day-c"]
    assert len(published_csvs(out / "day-c")) == 1 and len(ledger.folder_runs()) == 3
    assert not (out / "still-empty").exists()

    names = flow_runs_by_name()
    assert {"score-day-a", "score-day-b", "score-day-c"} <= set(names)  # Run names carry the folder name.
    assert len(names["inbox-inbox"]) == 3

    # Files that land after their folder was scored get a follow-up CSV with just their rows.
    late = copy_clips(fsdd_dir, inbox / "day-a-late", 20, 2)
    for name in late:
        (inbox / "day-a-late" / name).rename(inbox / "day-a" / name)
    (inbox / "day-a-late").rmdir()
    fourth = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **ENGINE)
    assert [Path(f["folder"]).name for f in fourth["folders"]] == ["day-a"]
    first_csv, follow_up = published_csvs(out / "day-a")
    assert [r["file"] for r in read_rows(follow_up)] == sorted(late)
    every_row = [r["file"] for csv_path in (first_csv, follow_up) for r in read_rows(csv_path)]
    assert sorted(every_row) == sorted(expected["day-a"] + late)  # Every file exactly once.


def test_a_drained_scan_scores_its_folders_in_its_own_run(prefect_api, onnx_model, fsdd_dir, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = {name: copy_clips(fsdd_dir, inbox / name, 3 * i, 3) for i, name in enumerate(("burst-a", "burst-b"))}
    before = set(flow_runs_by_name())
    result = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), drain=True, **ENGINE)
    assert sorted(Path(f["folder"]).name for f in result["folders"]) == sorted(expected)
    for name, names in expected.items():
        [csv_path] = published_csvs(out / name)
        assert [r["file"] for r in read_rows(csv_path)] == names
    # No child flow run per folder: the folder runs in the ledger belong to the one drained run.
    assert not {"score-burst-a", "score-burst-b"} & (set(flow_runs_by_name()) - before)
    ledger = Ledger.in_dir(out)
    parent = ledger.run(result["run_id"])
    folder_runs = [r for r in ledger.runs() if r.parent_run_id == parent.run_id]
    assert len(folder_runs) == 2 and {r.flow_run_id for r in folder_runs} == {parent.flow_run_id}
    assert (parent.state, parent.folders, parent.files_ok) == ("completed", 2, 6)


def test_a_folder_still_being_written_waits_for_quiet_or_its_ready_marker(prefect_api, onnx_model, fsdd_dir,
                                                                          tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    copy_clips(fsdd_dir, inbox / "arriving", 0, 2)  # Just written: not quiet for 600 s.
    engine = {**ENGINE, "settle_seconds": 600}
    assert score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **engine)["folders"] == []
    (inbox / "arriving" / "_READY").touch()  # The producer says it is done.
    scan = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **engine)
    assert [Path(f["folder"]).name for f in scan["folders"]] == ["arriving"]
    assert len(read_rows(published_csvs(out / "arriving")[0])) == 2


def test_injected_transient_failure_is_retried_and_recorded(prefect_api, onnx_model, fsdd_dir, tmp_path,
                                                            monkeypatch, caplog):
    from prefect.artifacts import Artifact

    folder, out = tmp_path / "Retry Me", tmp_path / "out"
    copy_clips(fsdd_dir, folder, 20, 3)
    monkeypatch.setenv(FAULT_ENV, "write:1")  # Our own write step fails on its first attempt.
    state = score_folder_flow(model=str(onnx_model), output_dir=str(out), folder=str(folder),
                              retry_delay_seconds=0.5, return_state=True, **ENGINE)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["task_retries"] == 1 and len(published_csvs(out / "Retry Me")) == 1

    [row] = Ledger.in_dir(out).folder_runs()
    assert (row.state, row.task_retries) == ("completed", 1)
    assert Ledger.in_dir(out).run(row.run_id).task_retries == 1
    logs = caplog.text
    assert "injected transient failure in step 'write'" in logs and "Retry 1/2 will start" in logs
    assert f"sha256={summary['model_sha256']}" in logs and "task retries 1" in logs

    table = Artifact.get("predictions-retry-me")
    markdown = Artifact.get("scoring-summary-retry-me")
    assert table is not None and table.type == "table" and "(error)" in str(table.data)
    assert markdown is not None and summary["csv_path"] in str(markdown.data)
    health = Artifact.get("health-retry-me")  # 3 files: reported, not judged.
    assert summary["health"]["verdict"] == "insufficient" and "Health of `Retry Me`: **insufficient**" in str(
        health.data)


def test_fail_on_drift_fails_the_run_after_writing_everything(prefect_api, onnx_model, fsdd_dir, tmp_path):
    folder, out = tmp_path / "all-eights", tmp_path / "out"
    folder.mkdir()
    for name in sorted((fsdd_dir / "recordings").glob("8_*.wav"))[:60]:
        (folder / name.name).symlink_to(name)
    reported = score_folder_flow(model=str(onnx_model), output_dir=str(out), folder=str(folder), **ENGINE)
    assert reported["health"]["verdict"] == "drift"  # By default drift is reported, never acted on.
    state = score_folder_flow(model=str(onnx_model), output_dir=str(out), folder=str(folder), fail_on_drift=True,
                              return_state=True, **ENGINE)
    assert state.is_failed() and "no longer fits the audio of 1 folder(s)" in state.message
    assert len(published_csvs(out / "all-eights")) == 2 and len(list((out / "all-eights").glob("health_*"))) == 2
    assert [r.health_verdict for r in Ledger.in_dir(out).folder_runs()] == ["drift", "drift"]


def test_bad_input_folder_completes_with_error_rows(prefect_api, onnx_model, fsdd_dir, tmp_path):
    folder = tmp_path / "bad-drop"
    expected = make_bad_input_folder(folder, fsdd_dir)
    state = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "out"), folder=str(folder),
                              shard_size=4, return_state=True, **ENGINE)
    assert state.is_completed(), state.message
    rows = read_rows(state.result()["csv_path"])
    assert {r["file"]: r["status"] for r in rows} == expected  # Three shards, one row per file, sorted.
    assert [r["file"] for r in rows] == sorted(expected)
    assert all(r["error"] for r in rows if r["status"] == "error")


def test_missing_folder_fails_the_run_with_one_line_and_no_traceback(prefect_api, onnx_model, tmp_path, caplog):
    state = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "out"),
                              folder=str(tmp_path / "nowhere"), return_state=True, **ENGINE)
    message = f"input folder {tmp_path / 'nowhere'} does not exist: pass a directory of audio files"
    assert state.is_failed() and state.message == message  # The UI's state message is the operator's line.
    assert isinstance(state.result(raise_on_failure=False), ScoringError)
    assert caplog.text.count(message) == 1 and "Traceback" not in caplog.text
    [run] = Ledger.in_dir(tmp_path / "out").runs()
    assert run.state == "failed" and "does not exist" in run.error


def test_a_file_linking_outside_the_roots_is_decided_once_and_never_rescanned(prefect_api, onnx_model, fsdd_dir,
                                                                              tmp_path, monkeypatch, caplog):
    inbox, out, elsewhere = tmp_path / "inbox", tmp_path / "out", tmp_path / "elsewhere"
    names = copy_clips(fsdd_dir, inbox / "day1", 0, 2)
    secret = copy_clips(fsdd_dir, elsewhere / "secret", 2, 1)[0]
    (inbox / "day1" / "linked.wav").symlink_to(elsewhere / "secret" / secret)
    (inbox / "linked-day").symlink_to(elsewhere / "secret", target_is_directory=True)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join(map(str, (inbox, out, onnx_model.parent))))

    first = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), drain=True, **ENGINE)
    assert [Path(f["folder"]).name for f in first["folders"]] == ["day1"]
    [csv_path] = published_csvs(out / "day1")
    assert [r["file"] for r in read_rows(csv_path)] == names  # No row for the file it may not read...
    decided = Ledger.in_dir(out).scored_files(str(inbox / "day1"), first["folders"][0]["model_sha256"])
    assert set(decided) == {*names, "linked.wav"}  # ...but its decision is recorded.
    assert f"skipped {inbox / 'linked-day'}: it links to" in caplog.text  # The linked subfolder: one line.

    again = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), drain=True, **ENGINE)
    assert again["folders"] == []  # Nothing new: no run, no empty CSV, ever again.
    assert len(published_csvs(out / "day1")) == 1 and len(Ledger.in_dir(out).folder_runs()) == 1
    assert not (out / "linked-day").exists() and not (out / "secret").exists()


def test_a_file_written_after_the_ready_marker_waits_and_gets_exactly_one_row(prefect_api, onnx_model, fsdd_dir,
                                                                             tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    first = copy_clips(fsdd_dir, inbox / "day1", 0, 2)
    (inbox / "day1" / "_READY").touch()
    while time.time() <= (inbox / "day1" / "_READY").stat().st_ctime + 0.01:  # File times tick in milliseconds.
        time.sleep(0.005)
    whole = (fsdd_dir / "recordings" / "5_jackson_5.wav").read_bytes()
    (inbox / "day1" / "slow.wav").write_bytes(whole[:len(whole) // 3])  # A second batch, still being written.
    engine = {**ENGINE, "settle_seconds": 600}
    scan = score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **engine)
    assert [Path(f["folder"]).name for f in scan["folders"]] == ["day1"]
    assert [r["file"] for r in read_rows(published_csvs(out / "day1")[0])] == first  # Not the half-written file.
    assert score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **engine)["folders"] == []

    (inbox / "day1" / "slow.wav").write_bytes(whole)  # Complete; then the producer touches the marker again.
    (inbox / "day1" / "_READY").touch()
    score_folder_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), **engine)
    rows = [r for csv_path in published_csvs(out / "day1") for r in read_rows(csv_path)]
    assert [(r["file"], r["status"]) for r in rows if r["file"] == "slow.wav"] == [("slow.wav", "ok")]


def test_needs_exactly_one_of_folder_or_inbox(prefect_api, onnx_model, tmp_path):
    state = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path), return_state=True)
    assert state.is_failed() and "exactly one of" in state.message


def test_engine_settings_are_one_typed_parameter_that_shortcuts_override():
    params = score_folder_flow.validate_parameters(
        {"model": "m.onnx", "output_dir": "out", "folder": "day1",
         "engine": {"batch_size": 8, "precision": "fp32", "device_id": 1}})
    assert params["engine"] == EngineConfig(batch_size=8, precision="fp32", device_id=1)
    assert engine_settings(params["engine"], batch_size=32, provider=None) == \
        EngineConfig(batch_size=32, precision="fp32", device_id=1)
    assert engine_settings(None) == EngineConfig()
    with pytest.raises(ScoringError, match="batch_size=0"):
        score_folder_flow.validate_parameters({"model": "m", "output_dir": "o", "engine": {"batch_size": 0}})
    # The UI form offers the allowed values, from the library's enums.
    definitions = parameter_schema(score_folder_flow.fn).model_dump()["definitions"]
    assert set(definitions["Precision"]["enum"]) == {p.value for p in Precision}
    assert {"precision", "device_id", "io_binding"} <= set(definitions["EngineConfig"]["properties"])


def test_deployments_carry_every_engine_setting(onnx_model, tmp_path):
    from flows.deploy import ServeOptions, build_deployments

    engine = EngineConfig(batch_size=4, precision="fp32", device_id=0)
    scoring = ScoringOptions(hop_seconds=0.25, aggregation="max", format="raven")
    [on_demand] = build_deployments(ServeOptions(model=str(onnx_model), output_dir=str(tmp_path), engine=engine,
                                                 scoring=scoring))
    assert on_demand.parameters["engine"] == dataclasses.asdict(engine)
    assert on_demand.parameters["options"] == dataclasses.asdict(scoring)
