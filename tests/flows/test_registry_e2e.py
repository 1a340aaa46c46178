"""Serving by alias, end to end with real servers: `mlflow server` holds two registered versions, `prefect
server start` and `toolchain serve --model models:/NAME@champion --challenger models:/NAME@challenger` serve the
deployments; after `toolchain models promote` the next deployment run scores with the new version and after
`toolchain models rollback` with the old one, without restarting serve; every run also scores in shadow.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from support import certified_bundle, copy_clips, published_csvs, stop, wait_until

from toolchain.registry.registry import promote, register_bundle
from toolchain.scoring.ledger import Ledger

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 240


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_promote_and_rollback_reach_the_next_served_run_and_the_challenger_scores_in_shadow(
        prefect_env, mlflow_server, tiny_onnx, tiny_onnx_successor, fsdd_dir, tmp_path):
    register_bundle(certified_bundle(tiny_onnx, tmp_path / "v1"), "e2e", mlflow_server)
    register_bundle(certified_bundle(tiny_onnx_successor, tmp_path / "v2"), "e2e", mlflow_server)
    promote("e2e", 1, uri=mlflow_server)
    promote("e2e", 2, alias="challenger", uri=mlflow_server)
    env = {**prefect_env, "MLFLOW_TRACKING_URI": mlflow_server, "TOOLCHAIN_MODEL_CACHE": str(tmp_path / "cache")}
    out, requests, log = tmp_path / "out", tmp_path / "requests", tmp_path / "serve.log"
    for day, start in (("day1", 0), ("day2", 2), ("day3", 4)):
        copy_clips(fsdd_dir, requests / day, start, 2)
    toolchain, prefect = str(BIN / "toolchain"), str(BIN / "prefect")
    with log.open("w") as sink:
        serve = subprocess.Popen(
            [toolchain, "serve", "--model", "models:/e2e@champion", "--challenger", "models:/e2e@challenger",
             "--output-dir", str(out), "--workers", "0", "--threads", "1", "--allow-root", str(requests)],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: subprocess.run([prefect, "deployment", "inspect", "score-folder/on-demand"], env=env,
                                          capture_output=True).returncode == 0,
                   STARTUP_TIMEOUT_S, "the served deployments", serve, log)

        def score(day: str) -> list[dict[str, str]]:
            run = subprocess.run([prefect, "deployment", "run", "score-folder/on-demand", "--param",
                                  f'folder="{requests / day}"', "--watch", "--watch-timeout", "400"],
                                 env=env, capture_output=True, text=True, timeout=450)
            assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-2000:] + log.read_text()[-3000:]
            [csv_path] = published_csvs(out / day)
            return _rows(csv_path)

        def models(*args: str) -> str:
            done = subprocess.run([toolchain, "models", *args], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout + done.stderr

        assert {r["model_version"] for r in score("day1")} == {"e2e/1"}
        models("promote", "e2e", "2")
        assert {r["model_version"] for r in score("day2")} == {"e2e/2"}
        models("rollback", "e2e")
        assert {r["model_version"] for r in score("day3")} == {"e2e/1"}
        assert [r.model_version for r in Ledger.in_dir(out).runs()] == ["e2e/1", "e2e/2", "e2e/1"]

        # The challenger scored every folder in shadow, beside the real outputs, compared in JSON and MLflow.
        [shadow_csv] = (out / "day1").glob("shadow_predictions_*.csv")
        assert {r["model_version"] for r in _rows(shadow_csv)} == {"e2e/2"}
        [comparison] = (out / "day1").glob("shadow_2*.json")
        figures = json.loads(comparison.read_text())
        assert figures["files_compared"] == 2 and figures["champion"]["version"] == "e2e/1"
        assert figures["challenger"]["version"] == "e2e/2" and 0.0 <= figures["agreement"] <= 1.0
        artifacts = subprocess.run([prefect, "artifact", "ls"], env=env, capture_output=True, text=True,
                                   timeout=120).stdout
        assert "shadow-day1" in artifacts, artifacts
        compared = models("compare", "e2e")
        assert "e2e/1" in compared and "e2e/2" in compared and "Shadow comparisons of e2e (last 3" in compared
    finally:
        stop(serve)
