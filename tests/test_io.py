"""toolchain.io: the one atomic writer (permissions from the umask, nothing half-written), hashes."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys

import pytest

from toolchain.io import atomic_write, file_sha256, write_json


def test_atomic_write_replaces_only_on_success_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.json"
    write_json({"a": 1}, target)
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_atomic_write_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    with atomic_write(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umasks_permissions_and_the_umask_is_never_changed(tmp_path, umask, mode):
    # In a child process: the umask is process-wide, and this test must not change the suite's.
    code = (
        "import os, sys, stat; from pathlib import Path\n"
        f"os.umask({umask})\n"
        "from toolchain.io import write_text\n"
        "import toolchain.training.cache, toolchain.training.reports, toolchain.scoring.outputs\n"
        "assert os.umask(0) == " + str(umask) + ", 'an import changed the umask'\n"
        f"os.umask({umask})\n"
        "p = write_text('x', Path(sys.argv[1]))\n"
        "print(oct(stat.S_IMODE(p.stat().st_mode)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == oct(mode)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == mode


def test_sha256(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
