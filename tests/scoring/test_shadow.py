"""A challenger scored in shadow: its CSVs and the comparison beside the real outputs, the real outputs
untouched, nothing in the ledger's decisions; a challenger that cannot run is one log line, not a failed folder.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import json

from support import copy_clips, published_csvs, read_rows

from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.folder import score_folder
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import describe_model
from toolchain.scoring.options import ScoringOptions

CONFIG = EngineConfig(batch_size=8, decode_workers=0, intra_op_threads=1)


def test_the_challenger_scores_the_same_files_beside_the_real_outputs(tiny_onnx, tiny_onnx_successor, fsdd_dir,
                                                                      tmp_path):
    files = copy_clips(fsdd_dir, tmp_path / "day", 0, 3)
    (tmp_path / "day" / "broken.wav").write_bytes(b"RIFF junk")
    said: list[str] = []
    summary = score_folder(tiny_onnx, tmp_path / "day", tmp_path / "out", CONFIG,
                           options=ScoringOptions(challenger=str(tiny_onnx_successor)), say=said.append)
    out = tmp_path / "out" / "day"
    stamp = summary.csv_path.rsplit("predictions_", 1)[1].removesuffix(".csv")
    assert [p.name for p in published_csvs(out)] == [f"predictions_{stamp}.csv"]  # The shadow is not a result.
    shadow_rows = read_rows(out / f"shadow_predictions_{stamp}.csv")
    real_rows = read_rows(summary.csv_path)
    assert [r["file"] for r in shadow_rows] == [r["file"] for r in real_rows] == sorted([*files, "broken.wav"])
    assert {r["model_sha256"] for r in shadow_rows} == {describe_model(tiny_onnx_successor).sha256}
    assert {r["model_sha256"] for r in real_rows} == {describe_model(tiny_onnx).sha256}
    assert (out / f"shadow_detections_{stamp}.csv").is_file()

    comparison = json.loads((out / f"shadow_{stamp}.json").read_text())
    assert summary.shadow == comparison | {"path": str(out / f"shadow_{stamp}.json")}
    assert (comparison["files"], comparison["files_compared"]) == (4, 3)  # The error row is not compared.
    same = sum(a["label"] == b["label"] for a, b in zip(real_rows, shadow_rows) if a["status"] == "ok")
    assert comparison["agreement"] == round(same / 3, 6)  # Same graph, another file: the same labels.
    assert comparison["champion"]["verdict"] == summary.health["verdict"]
    assert comparison["challenger"]["sha256"] == describe_model(tiny_onnx_successor).sha256
    assert any(line.startswith("shadow: ") and "100.0% of 3 files" in line for line in said), said
    # The ledger knows one model's decisions: the shadow decides nothing.
    assert {r.model_sha256 for r in Ledger.in_dir(tmp_path / "out").folder_runs()} == {
        describe_model(tiny_onnx).sha256}


def test_a_challenger_that_cannot_run_costs_a_log_line_not_the_folder(tiny_onnx, fsdd_dir, tmp_path):
    copy_clips(fsdd_dir, tmp_path / "day", 0, 2)
    said: list[str] = []
    summary = score_folder(tiny_onnx, tmp_path / "day", tmp_path / "out", CONFIG,
                           options=ScoringOptions(challenger=str(tmp_path / "missing.onnx")), say=said.append)
    assert summary.files_ok == 2 and "missing.onnx" in summary.shadow["error"]
    assert [line for line in said if "shadow comparison with" in line and "failed" in line]
    assert not list((tmp_path / "out" / "day").glob("shadow_*"))
    assert not list((tmp_path / "out" / "day").glob(".shadow_*"))
    assert [r.state for r in Ledger.in_dir(tmp_path / "out").folder_runs()] == ["completed"]
