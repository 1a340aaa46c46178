"""`python -m flows` (= `toolchain flow`): user errors are one line and exit 2 before Prefect starts (a real subprocess each); a temporary
server gets a startup budget for a busy machine, and one that does not answer in it is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from toolchain.cli.flow import STARTUP_SETTING, prefect_environment


@pytest.mark.parametrize("case, message", [
    ("missing-folder", "does not exist"),
    ("output-is-a-file", "--output-dir {tmp}/a-file is a file"),
    ("not-onnx", "is not a readable ONNX model"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, case, message):
    (tmp_path / "day1").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    args = {"missing-folder": ["--folder", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")],
            "output-is-a-file": ["--folder", str(tmp_path / "day1"), "--output-dir", str(tmp_path / "a-file")],
            "not-onnx": ["--folder", str(tmp_path / "day1"), "--output-dir", str(tmp_path / "out")]}[case]
    result = subprocess.run([sys.executable, "-m", "flows", "--model", str(tmp_path / "model.onnx"), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_temporary_server_that_does_not_answer_in_time_is_one_line_naming_the_setting(tiny_onnx, tmp_path):
    (tmp_path / "day1").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    result = subprocess.run([sys.executable, "-m", "flows", "--model", str(tiny_onnx), "--folder",
                             str(tmp_path / "day1"), "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: the temporary Prefect server did not answer within 0 s "
                      "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS): raise it, or start `prefect server start` "
                      "and set PREFECT_API_URL"], result.stderr
    assert "Traceback" not in result.stderr


def test_a_temporary_server_gets_a_startup_budget_for_a_busy_machine_and_no_telemetry():
    added = prefect_environment({})
    assert int(added[STARTUP_SETTING]) >= 300 and added["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert added["DO_NOT_TRACK"] == "1"
    assert STARTUP_SETTING not in prefect_environment({STARTUP_SETTING: "30"})  # The operator's value stands.
    assert prefect_environment({"PREFECT_API_URL": "http://127.0.0.1:4200/api"}) == {}  # A real server: untouched.
