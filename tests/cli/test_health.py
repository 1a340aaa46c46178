"""`toolchain score --fail-on-drift` and `toolchain health` through the CLI. FSDD: CC BY-SA 4.0."""

from __future__ import annotations

import json
import re
import shutil

from support import assert_user_error, fsdd_rows
from typer.testing import CliRunner

from toolchain.cli import app

runner = CliRunner()


def test_drift_fails_when_asked_and_the_trend_shows_it(onnx_model, fsdd_dir, tmp_path):
    folder = tmp_path / "one-digit"
    folder.mkdir()
    for r in [r for r in fsdd_rows(fsdd_dir) if r["label"] == "seven" and 20 <= int(r["take"]) < 30]:
        shutil.copy(fsdd_dir / r["filename"], folder)
    out = tmp_path / "out"
    args = ["score", "--model", str(onnx_model), "--input", str(folder), "--out", str(out), "--workers", "0"]
    reported = runner.invoke(app, args)
    assert reported.exit_code == 0 and "health drift: class mix shifted" in reported.output, reported.output
    failed = runner.invoke(app, [*args, "--fail-on-drift"])
    assert failed.exit_code == 3 and failed.exception is not None and "Traceback" not in failed.output
    assert len(list((out / "one-digit").glob("predictions_*.csv"))) == 2  # Outputs written before failing.
    assert len(list((out / "one-digit").glob("health_*.json"))) == 2
    lenient = runner.invoke(app, [*args, "--health-thresholds", "js_distance=1,psi=10,ks_statistic=1,"
                                  "accuracy_drop=1"])
    assert lenient.exit_code == 0 and "health warn" in lenient.output, lenient.output  # Significant, not large.

    table = runner.invoke(app, ["health", "--output-dir", str(out), "--png", str(tmp_path / "trend.png")],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines() if "one-digit" in line]
    assert [("drift" in r, "warn" in r) for r in rows] == [(True, False), (True, False), (False, True)], rows
    assert (tmp_path / "trend.png").read_bytes()[:4] == b"\x89PNG"
    assert all(re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", r) for r in rows), rows  # Full timestamps.
    piped = runner.invoke(app, ["health", "--output-dir", str(out)])  # No terminal: nothing cut, all on stdout.
    assert piped.exit_code == 0 and piped.stdout.count("one-digit") == 3 and "…" not in piped.stdout
    machine = runner.invoke(app, ["health", "--output-dir", str(out), "--json"])
    assert machine.exit_code == 0, machine.output
    runs = json.loads(machine.stdout)  # stdout is the JSON and nothing else.
    assert [r["verdict"] for r in runs] == ["drift", "drift", "warn"]
    assert all(r["files"] == len(list(folder.iterdir())) and r["health_path"].endswith(".json") for r in runs), runs
    mine = runner.invoke(app, ["health", "--output-dir", str(out), "--model", str(onnx_model), "--last", "1"],
                         env={"COLUMNS": "200"})
    assert mine.exit_code == 0 and mine.output.count("one-digit") == 1 and "warn" in mine.output, mine.output


def test_health_user_errors(onnx_model, tmp_path):
    assert_user_error(runner.invoke(app, ["health", "--output-dir", str(tmp_path)]), "ledger.sqlite")
    assert runner.invoke(app, ["health", "--help"]).exit_code == 0
    assert_user_error(runner.invoke(app, ["score", "--model", str(onnx_model), "--input", str(tmp_path),
                                          "--health-thresholds", "js=0.1"]), "health threshold", "js_distance")
