"""Scoring never imports torch, training or export: a scoring-only install stays small (checked in a fresh process).
MLflow is loaded only by what tracks, registers or names a registered model, never to start scoring."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["toolchain.scoring", "toolchain.scoring.folder", "flows.score_folder",
                                    "flows.score_inbox"])
def test_scoring_imports_no_torch_training_export_or_mlflow(module):
    code = (
        f"import sys, json, {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'mlflow')"
        " or m.startswith(('toolchain.training', 'toolchain.export')))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_command_line_starts_without_torch():
    """`toolchain score` is a scoring process: the CLI it starts from must not load torch (~400 MB resident) just
    to build the other commands' options."""
    code = ("import sys, toolchain.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'mlflow')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
