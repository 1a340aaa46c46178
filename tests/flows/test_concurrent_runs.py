"""two flow runs at once (two real `python -m flows` processes) on different folders, one output_dir,
against one Prefect API (the harness server): the SQLite ledger stays consistent and both CSVs are complete.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import copy_clips, published_csvs, read_rows

from toolchain.scoring.ledger import Ledger

RUN_TIMEOUT_S = 600  # Two runs share 2 busy cores with the rest of the suite.


def test_two_concurrent_flow_runs_share_one_ledger(prefect_api, onnx_model, fsdd_dir, tmp_path):
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "out"
    expected = {"site-a": copy_clips(fsdd_dir, tmp_path / "site-a", 200, 8),
                "site-b": copy_clips(fsdd_dir, tmp_path / "site-b", 300, 7)}
    (tmp_path / "site-b" / "truncated.wav").write_bytes(b"RIFF\xff\x00\x00\x00WAVEfmt ")  # One error row.
    expected["site-b"].append("truncated.wav")

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # Both runs report to the same server.
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "flows", "--model", str(onnx_model), "--output-dir", str(out),
             "--folder", str(tmp_path / name)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in expected
    }
    try:
        outputs = {name: proc.communicate(timeout=RUN_TIMEOUT_S)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name][-3000:]

    ledger = Ledger.in_dir(out)
    runs = ledger.runs()
    assert sorted((Path(r.target).name, r.mode, r.state) for r in runs) == [
        ("site-a", "folder", "completed"), ("site-b", "folder", "completed")]
    assert all(r.flow_run_id for r in runs) and len({r.flow_run_id for r in runs}) == 2
    folders = {Path(r.folder).name: r for r in ledger.folder_runs()}
    assert sorted(folders) == ["site-a", "site-b"]
    for name, files in expected.items():
        [csv_path] = published_csvs(out / name)
        rows = read_rows(csv_path)
        assert sorted(r["file"] for r in rows) == sorted(files)  # Complete: one row per file, no duplicates.
        record = folders[name]
        assert record.state == "completed" and Path(record.csv_path) == csv_path
        ok = sum(r["status"] == "ok" for r in rows)
        assert (record.files_ok, record.files_error) == (ok, len(rows) - ok)
        run = ledger.run(record.run_id)
        assert (run.files_ok, run.files_error, run.folders) == (record.files_ok, record.files_error, 1)
        assert f"predictions: {csv_path}" in outputs[name]
    assert folders["site-b"].files_error == 1 and folders["site-a"].files_error == 0
    assert not list(out.glob("*/.parts_*"))  # No temporary part files left behind.
