"""The Prefect flow `score-folder` under Prefect's own test harness (a real temporary API server).

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import dataclasses

import pytest
from prefect.utilities.callables import parameter_schema
from support import copy_clips, make_bad_input_folder, published_csvs, read_rows

import toolchain.scoring.publish
from flows.score_folder import RunSettings, score_folder_flow
from flows.score_inbox import score_inbox_flow
from toolchain.errors import ScoringError
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.precision import Precision

ENGINE = EngineConfig(decode_workers=1, intra_op_threads=1, batch_size=8)
RUN = RunSettings(settle_seconds=0)


def test_injected_transient_failure_is_retried_and_recorded(prefect_api, onnx_model, fsdd_dir, tmp_path,
                                                            monkeypatch, caplog):
    from prefect.artifacts import Artifact

    folder, out = tmp_path / "Retry Me", tmp_path / "out"
    copy_clips(fsdd_dir, folder, 20, 3)
    assemble = toolchain.scoring.publish.assemble_csv
    calls = []

    def fails_once(*args, **kwargs):  # The disk refuses the first write (a full disk, an NFS hiccup), then recovers.
        calls.append(args)
        if len(calls) == 1:
            raise OSError(5, "Input/output error (injected transient failure in step 'write')")
        return assemble(*args, **kwargs)

    monkeypatch.setattr(toolchain.scoring.publish, "assemble_csv", fails_once)
    state = score_folder_flow(model=str(onnx_model), output_dir=str(out), folder=str(folder),
                              return_state=True, engine=ENGINE, run=RunSettings(retry_delay_seconds=0.5))
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
    reported = score_folder_flow(model=str(onnx_model), output_dir=str(out), folder=str(folder), engine=ENGINE, run=RUN)
    assert reported["health"]["verdict"] == "drift"  # By default drift is reported, never acted on.
    state = score_folder_flow(model=str(onnx_model), output_dir=str(out), folder=str(folder), return_state=True,
                              engine=ENGINE, run=RunSettings(settle_seconds=0, fail_on_drift=True))
    assert state.is_failed() and "no longer fits the audio of 1 folder(s)" in state.message
    assert len(published_csvs(out / "all-eights")) == 2 and len(list((out / "all-eights").glob("health_*"))) == 2
    assert [r.health_verdict for r in Ledger.in_dir(out).folder_runs()] == ["drift", "drift"]


def test_bad_input_folder_completes_with_error_rows(prefect_api, onnx_model, fsdd_dir, tmp_path):
    folder = tmp_path / "bad-drop"
    expected = make_bad_input_folder(folder, fsdd_dir)
    state = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "out"), folder=str(folder),
                              return_state=True, engine=ENGINE, run=RunSettings(shard_size=4))
    assert state.is_completed(), state.message
    rows = read_rows(state.result()["csv_path"])
    assert {r["file"]: r["status"] for r in rows} == expected  # Three shards, one row per file, sorted.
    assert [r["file"] for r in rows] == sorted(expected)
    assert all(r["error"] for r in rows if r["status"] == "error")


def test_missing_folder_fails_the_run_with_one_line_and_no_traceback(prefect_api, onnx_model, tmp_path, caplog):
    state = score_folder_flow(model=str(onnx_model), output_dir=str(tmp_path / "out"),
                              folder=str(tmp_path / "nowhere"), return_state=True, engine=ENGINE, run=RUN)
    message = f"input folder {tmp_path / 'nowhere'} does not exist: pass a directory of audio files"
    assert state.is_failed() and state.message == message  # The UI's state message is the operator's line.
    assert isinstance(state.result(raise_on_failure=False), ScoringError)
    said = [r for r in caplog.records if r.levelname == "ERROR" and message in r.getMessage()]
    assert len(said) == 1 and "Traceback" not in caplog.text  # One log line (the final state repeats it as INFO).
    [run] = Ledger.in_dir(tmp_path / "out").runs()
    assert run.state == "failed" and "does not exist" in run.error


def test_settings_are_few_typed_parameters_checked_before_the_run():
    params = score_folder_flow.validate_parameters(
        {"model": "m.onnx", "output_dir": "out", "folder": "day1",
         "engine": {"batch_size": 8, "precision": "fp32", "device_id": 1}, "run": {"shard_size": 200}})
    assert params["engine"] == EngineConfig(batch_size=8, precision="fp32", device_id=1)
    assert params["run"] == RunSettings(shard_size=200)
    for sound_db, rule in ((None, "end-aligned"), (10, "sound+10dB")):  # JSON null: the grid.
        options = score_folder_flow.validate_parameters(
            {"model": "m.onnx", "output_dir": "out", "folder": "day1", "options": {"sound_db": sound_db}})["options"]
        assert options == ScoringOptions(sound_db=sound_db) and options.rule.placement_tag == rule
    with pytest.raises(ScoringError, match="batch_size=0"):
        score_folder_flow.validate_parameters({"model": "m", "output_dir": "o", "folder": "f",
                                               "engine": {"batch_size": 0}})
    with pytest.raises(ScoringError, match="shard_size=0"):
        score_inbox_flow.validate_parameters({"model": "m", "output_dir": "o", "inbox": "i", "run": {"shard_size": 0}})
    for scoring_flow in (score_folder_flow, score_inbox_flow):  # A few typed parameters, a form in the UI.
        schema = parameter_schema(scoring_flow.fn).model_dump()
        assert len(schema["properties"]) <= 8, sorted(schema["properties"])
    # The UI form offers the allowed values, from the library's enums.
    definitions = parameter_schema(score_folder_flow.fn).model_dump()["definitions"]
    assert set(definitions["Precision"]["enum"]) == {p.value for p in Precision}
    assert {"precision", "device_id", "io_binding"} <= set(definitions["EngineConfig"]["properties"])
    assert {"shard_size", "settle_seconds", "fail_on_drift"} <= set(definitions["RunSettings"]["properties"])


def test_deployments_carry_every_engine_setting(onnx_model, tmp_path):
    from flows.deploy import ServeOptions, build_deployments

    engine = EngineConfig(batch_size=4, precision="fp32", device_id=0)
    scoring = ScoringOptions(hop_seconds=0.25, sound_db=None, aggregation="max", format="raven")  # On the grid.
    [on_demand] = build_deployments(ServeOptions(model=str(onnx_model), output_dir=str(tmp_path), engine=engine,
                                                 scoring=scoring))
    assert on_demand.parameters["engine"] == dataclasses.asdict(engine)
    assert on_demand.parameters["options"] == dataclasses.asdict(scoring)
    assert on_demand.parameters["run"] == dataclasses.asdict(RunSettings())
