"""The composed `toolchain` command: every command has --help, and help never cuts an option's name."""

from __future__ import annotations

import typer.main
from typer.testing import CliRunner

from toolchain.cli import app

runner = CliRunner()


def test_every_command_documents_every_option_by_its_full_name():
    commands = typer.main.get_command(app).commands
    assert {"train", "predict", "export-onnx", "verify-onnx", "score", "serve", "bench", "demo-data"} <= set(commands)
    for name, command in commands.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "…" not in result.output, f"{name} --help cuts text:\n{result.output}"
        for param in command.params:
            for option in param.opts:
                assert option in result.output, f"{name} --help lacks {option}"
