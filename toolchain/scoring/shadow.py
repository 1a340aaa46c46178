"""Shadow comparison: a challenger model scores the files the serving model just scored, into
`shadow_predictions_<UTC>.csv` and `shadow_detections_<UTC>.csv` beside the real ones (same stamp), with its own health
report, and the two are compared in `shadow_<UTC>.json`: label agreement over the files both scored, both health
verdicts and both expected accuracies. Nothing of it enters the ledger's decisions: the serving model's CSV is the
folder's result, and the comparison is the evidence for `toolchain models promote`.

A comparison that fails (the challenger cannot be fetched or run) is logged and reported as such; the serving
model's outputs are never touched."""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path
from typing import Any

from toolchain.health.assess import assess
from toolchain.health.reference import stored_reference
from toolchain.health.sketch import SketchBuilder
from toolchain.io import write_json
from toolchain.progress import NullProgress
from toolchain.scoring.engine import score_files
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.models import describe_model, load_model_cached
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.outputs import (
    CSV_PREFIX,
    DETECTIONS_PREFIX,
    EVENTS_PREFIX,
    SHADOW_PREFIX,
    detections_part,
    events_part,
    write_part,
)
from toolchain.scoring.publish import FolderSummary
from toolchain.scoring.shards import sketched

EXAMPLES = 20  # Disagreements listed in the comparison (all of them are in the two CSVs).


def _labels(csv_path: Path) -> dict[str, str]:
    """file -> label ("" for an error row) of a predictions CSV."""
    with csv_path.open(newline="") as f:
        return {row["file"]: (row["label"] if row["status"] == "ok" else "") for row in csv.DictReader(f)}


def _side(version: str, sha256: str, health: dict[str, Any]) -> dict[str, Any]:
    figures = health.get("figures") or {}
    return {"version": version, "sha256": sha256, "verdict": health.get("verdict"),
            "expected_accuracy": health.get("expected_accuracy", figures.get("expected_accuracy"))}


def shadow_compare(summary: FolderSummary, champion_version: str, challenger_path: str | Path,
                   config: EngineConfig, options: ScoringOptions) -> dict[str, Any]:
    """Score `summary`'s files with the challenger and compare; returns the comparison (also written as JSON).
    Runs while the caller holds the output folder's lock (its temporary files are this run's)."""
    challenger = describe_model(challenger_path)
    model = load_model_cached(challenger_path, config)
    csv_path = Path(summary.csv_path)
    served = _labels(csv_path)
    reference, why_not = stored_reference(challenger.metadata.health_reference, len(model.classes))
    sketch = SketchBuilder(len(model.classes), reference.temperature if reference else 1.0)
    rows = score_files(model, summary.folder, sorted(served), config, NullProgress(), options.rule,
                       options.aggregation)
    shadow_csv = csv_path.with_name(SHADOW_PREFIX + csv_path.name)
    write_part(shadow_csv, sketched(rows, sketch), model.classes, model.sha256, summary.run_id,
               options.tag(challenger.metadata.feature_config), options.min_confidence, challenger.version,
               options.merge_gap_s)
    stamp = csv_path.name.removeprefix(CSV_PREFIX)
    os.replace(detections_part(shadow_csv), csv_path.with_name(SHADOW_PREFIX + DETECTIONS_PREFIX + stamp))
    os.replace(events_part(shadow_csv), csv_path.with_name(SHADOW_PREFIX + EVENTS_PREFIX + stamp))
    context = {"folder": summary.folder, "predictions_csv": str(shadow_csv), "run_id": summary.run_id,
               "model_sha256": challenger.sha256, "classes": list(model.classes)}
    health = assess(sketch.build(), reference, options.health, context, why_not).to_dict()
    shadowed = _labels(shadow_csv)
    both = [f for f in served if served[f] and shadowed.get(f)]
    differ = [f for f in both if served[f] != shadowed[f]]
    comparison = {
        "folder": summary.folder, "run_id": summary.run_id, "predictions_csv": str(csv_path),
        "shadow_csv": str(shadow_csv), "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": len(served), "files_compared": len(both),
        "agreement": round(1 - len(differ) / len(both), 6) if both else None,
        "champion": _side(champion_version, summary.model_sha256, summary.health),
        "challenger": {**_side(challenger.version, challenger.sha256, health), "model": challenger.path},
        "disagreements": [{"file": f, "champion": served[f], "challenger": shadowed[f]} for f in differ[:EXAMPLES]],
    }
    comparison["path"] = str(write_json(comparison, csv_path.with_name(
        SHADOW_PREFIX + csv_path.name.replace("predictions_", "").replace(".csv", ".json"))))
    return comparison
