"""The Prefect flow `score-inbox` under Prefect's own test harness (a real temporary API server): each new folder
scored once (as child runs, or drained in the run itself), files still being written left for later, skipped files
decided once.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from support import after_change_time_of, copy_clips, published_csvs, read_rows

from flows.score_folder import RunSettings
from flows.score_inbox import score_inbox_flow
from toolchain.io import file_sha256
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import Backfill
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.roots import ALLOWED_ROOTS_ENV

ENGINE = EngineConfig(decode_workers=1, intra_op_threads=1, batch_size=8)
RUN = RunSettings(settle_seconds=0)
QUIET_FOR_10_MIN = RunSettings(settle_seconds=600)


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

    first = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN)
    assert sorted(Path(f["folder"]).name for f in first["folders"]) == ["day-a", "day-b"]
    for name, names in expected.items():
        csvs = published_csvs(out / name)
        assert len(csvs) == 1 and [r["file"] for r in read_rows(csvs[0])] == names
    ledger = Ledger.in_dir(out)
    rows = ledger.folder_runs()
    assert [r.state for r in rows] == ["completed", "completed"] and all(r.flow_run_id for r in rows)
    parent = ledger.run(first["run_id"])
    assert (parent.mode, parent.state, parent.folders, parent.files_ok) == ("inbox", "completed", 2, 8)

    second = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN)
    assert second["folders"] == []
    assert all(len(published_csvs(out / name)) == 1 for name in expected)
    assert len(ledger.folder_runs()) == 2

    copy_clips(fsdd_dir, inbox / "day-c", 8, 3)
    third = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN)
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
    fourth = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN)
    assert [Path(f["folder"]).name for f in fourth["folders"]] == ["day-a"]
    first_csv, follow_up = published_csvs(out / "day-a")
    assert [r["file"] for r in read_rows(follow_up)] == sorted(late)
    every_row = [r["file"] for csv_path in (first_csv, follow_up) for r in read_rows(csv_path)]
    assert sorted(every_row) == sorted(expected["day-a"] + late)  # Every file exactly once.


def test_a_drained_scan_scores_its_folders_in_its_own_run(prefect_api, onnx_model, fsdd_dir, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = {name: copy_clips(fsdd_dir, inbox / name, 3 * i, 3) for i, name in enumerate(("burst-a", "burst-b"))}
    before = set(flow_runs_by_name())
    result = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), drain=True, engine=ENGINE, run=RUN)
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
    assert score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=QUIET_FOR_10_MIN)["folders"] == []
    (inbox / "arriving" / "_READY").touch()  # The producer says it is done.
    scan = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=QUIET_FOR_10_MIN)
    assert [Path(f["folder"]).name for f in scan["folders"]] == ["arriving"]
    assert len(read_rows(published_csvs(out / "arriving")[0])) == 2


def test_a_file_linking_outside_the_roots_is_decided_once_and_never_rescanned(prefect_api, onnx_model, fsdd_dir,
                                                                              tmp_path, monkeypatch, caplog):
    inbox, out, elsewhere = tmp_path / "inbox", tmp_path / "out", tmp_path / "elsewhere"
    names = copy_clips(fsdd_dir, inbox / "day1", 0, 2)
    secret = copy_clips(fsdd_dir, elsewhere / "secret", 2, 1)[0]
    (inbox / "day1" / "linked.wav").symlink_to(elsewhere / "secret" / secret)
    (inbox / "linked-day").symlink_to(elsewhere / "secret", target_is_directory=True)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join(map(str, (inbox, out, onnx_model.parent))))

    first = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), drain=True, engine=ENGINE, run=RUN)
    assert [Path(f["folder"]).name for f in first["folders"]] == ["day1"]
    [csv_path] = published_csvs(out / "day1")
    assert [r["file"] for r in read_rows(csv_path)] == names  # No row for the file it may not read...
    decided = Ledger.in_dir(out).decided_files(str(inbox / "day1"), first["folders"][0]["model_sha256"])
    assert set(decided) == {*names, "linked.wav"}  # ...but its decision is recorded.
    assert f"skipped {inbox / 'linked-day'}: it links to" in caplog.text  # The linked subfolder: one line.

    again = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), drain=True, engine=ENGINE, run=RUN)
    assert again["folders"] == []  # Nothing new: no run, no empty CSV, ever again.
    assert len(published_csvs(out / "day1")) == 1 and len(Ledger.in_dir(out).folder_runs()) == 1
    assert not (out / "linked-day").exists() and not (out / "secret").exists()


def test_a_file_written_after_the_ready_marker_waits_and_gets_exactly_one_row(prefect_api, onnx_model, fsdd_dir,
                                                                             tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    first = copy_clips(fsdd_dir, inbox / "day1", 0, 2)
    (inbox / "day1" / "_READY").touch()
    after_change_time_of(inbox / "day1" / "_READY")
    whole = (fsdd_dir / "recordings" / "5_jackson_5.wav").read_bytes()
    (inbox / "day1" / "slow.wav").write_bytes(whole[:len(whole) // 3])  # A second batch, still being written.
    scan = score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=QUIET_FOR_10_MIN)
    assert [Path(f["folder"]).name for f in scan["folders"]] == ["day1"]
    assert [r["file"] for r in read_rows(published_csvs(out / "day1")[0])] == first  # Not the half-written file.
    assert score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=QUIET_FOR_10_MIN)["folders"] == []

    (inbox / "day1" / "slow.wav").write_bytes(whole)  # Complete; then the producer touches the marker again.
    (inbox / "day1" / "_READY").touch()
    score_inbox_flow(model=str(onnx_model), output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=QUIET_FOR_10_MIN)
    rows = [r for csv_path in published_csvs(out / "day1") for r in read_rows(csv_path)]
    assert [(r["file"], r["status"]) for r in rows if r["file"] == "slow.wav"] == [("slow.wav", "ok")]


def test_a_new_model_scores_what_arrives_and_the_backfill_run_takes_the_history(prefect_api, tiny_onnx,
                                                                              tiny_onnx_successor, fsdd_dir,
                                                                              tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    old, new = str(tiny_onnx), str(tiny_onnx_successor)
    history = {name: copy_clips(fsdd_dir, inbox / name, 3 * i, 3) for i, name in enumerate(("day-a", "day-b"))}
    assert len(score_inbox_flow(model=old, output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN,
                                drain=True)["folders"]) == 2

    assert score_inbox_flow(model=new, output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN,
                            drain=True)["folders"] == []  # The model changed: no folder is scored again.
    arrived = copy_clips(fsdd_dir, inbox / "day-c", 6, 2)
    scan = score_inbox_flow(model=new, output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN, drain=True)
    assert [Path(f["folder"]).name for f in scan["folders"]] == ["day-c"]

    before = set(flow_runs_by_name())
    backfill = score_inbox_flow(model=new, output_dir=str(out), inbox=str(inbox), engine=ENGINE, run=RUN,
                                backfill=Backfill(folders="day-*"))
    assert sorted(Path(f["folder"]).name for f in backfill["folders"]) == ["day-a", "day-b"]
    assert "backfill-inbox" in set(flow_runs_by_name()) - before and not any(
        name.startswith("score-day") for name in set(flow_runs_by_name()) - before)  # Scored in its own run.
    for name, names in {**history, "day-c": arrived}.items():  # Every file: one row from each model that
        rows = [r for csv_path in published_csvs(out / name) for r in read_rows(csv_path)]  # scored it.
        by_new = sorted(r["file"] for r in rows if r["model_sha256"] == file_sha256(new))
        by_old = sorted(r["file"] for r in rows if r["model_sha256"] == file_sha256(old))
        assert by_new == sorted(names) and by_old == (sorted(names) if name in history else []), name
    assert Ledger.in_dir(out).run(backfill["run_id"]).mode == "backfill"


def test_a_child_run_whose_result_did_not_come_back_is_read_from_the_ledger(tiny_onnx, fsdd_dir, tmp_path):
    from flows.score_inbox import recorded_outcome
    from toolchain.scoring.folder import run_folder
    from toolchain.scoring.steps import LocalSteps

    folder = tmp_path / "inbox" / "day"
    copy_clips(fsdd_dir, folder, 0, 2)
    steps = LocalSteps(tiny_onnx, EngineConfig(decode_workers=0, intra_op_threads=1))
    scored = run_folder(tiny_onnx, folder, tmp_path / "out", steps, flow_run_id="child-1").summary
    again = recorded_outcome(str(tmp_path / "out"), str(folder), "child-1")
    assert again.summary is not None and again.summary.csv_path == scored.csv_path
    assert (again.summary.files_ok, again.summary.health["verdict"]) == (2, scored.health["verdict"])
    assert recorded_outcome(str(tmp_path / "out"), str(folder), "another-run").skipped == "already scored"
