"""The composed `toolchain` command: every command has --help, and help never cuts an option's name, fits 80
columns, and reads the same in a terminal and piped."""

from __future__ import annotations

import os
import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from toolchain.cli import app

runner = CliRunner()


def test_every_command_documents_every_option_by_its_full_name():
    commands = typer.main.get_command(app).commands
    assert {"train", "predict", "export-onnx", "verify-onnx", "score", "serve", "bench", "demo-data"} <= set(commands)
    for name, command in commands.items():
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert "…" not in result.output, f"{name} --help cuts text:\n{result.output}"
        assert "<bool>" not in result.output, f"{name} --help shows a flag's type"
        wide = [line for line in result.output.splitlines() if len(line) > 80]
        assert not wide, f"{name} --help is wider than 80 columns: {wide}"
        for param in command.params:
            for option in param.opts:
                assert option in result.output, f"{name} --help lacks {option}"


def test_help_piped_is_the_help_of_an_80_column_terminal():
    """A real process with its stdout piped (a pager, a file): laid out as for an 80-column terminal."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    piped = subprocess.run([sys.executable, "-m", "toolchain", "train", "--help"], capture_output=True, text=True,
                           env=env, check=True).stdout
    assert "…" not in piped and "<bool>" not in piped
    assert "--bn-recalibration-batches" in piped and max(len(line) for line in piped.splitlines()) <= 80
