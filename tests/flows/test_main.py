"""`python -m flows`: user errors are one line and exit 2 before Prefect starts (a real subprocess each)."""

from __future__ import annotations

import subprocess
import sys

import pytest


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
