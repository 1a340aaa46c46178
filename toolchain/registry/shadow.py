"""Shadow comparisons in MLflow: each folder a challenger scored in shadow becomes one run of the
`toolchain-shadow` experiment (tags: the registered model, both versions, the folder; metrics: agreement and both
expected accuracies; the comparison JSON as an artifact), so a team sees them in the MLflow UI and
`toolchain models compare NAME` summarises the last N: the evidence for `toolchain models promote`."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from toolchain.registry.client import connect, experiment_id, mlflow_errors
from toolchain.registry.refs import check_name

SHADOW_EXPERIMENT = "toolchain-shadow"


def record_comparison(comparison: dict[str, Any], uri: str | None = None) -> str:
    """Log one folder's comparison (`toolchain.scoring.shadow`); returns the MLflow run id."""
    challenger, champion = comparison["challenger"], comparison["champion"]
    name = (challenger.get("version") or champion.get("version") or "").split("/")[0]
    client = connect(uri)
    with mlflow_errors("record the shadow comparison"):
        experiment = experiment_id(client, SHADOW_EXPERIMENT)
        tags = {"model": name, "champion": champion.get("version") or champion["sha256"][:12],
                "challenger": challenger.get("version") or challenger["sha256"][:12],
                "folder": comparison["folder"], "scoring_run": comparison["run_id"],
                "champion_verdict": str(champion.get("verdict")), "challenger_verdict": str(challenger.get("verdict"))}
        run = client.create_run(experiment, run_name=f"{tags['challenger']} vs {tags['champion']}", tags=tags)
        from mlflow.entities import Metric

        values = {"agreement": comparison.get("agreement"), "files_compared": comparison.get("files_compared"),
                  "champion_expected_accuracy": champion.get("expected_accuracy"),
                  "challenger_expected_accuracy": challenger.get("expected_accuracy")}
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in values.items()
                                                   if isinstance(v, (int, float))])
        client.log_dict(run.info.run_id, comparison, "comparison.json")
        client.set_terminated(run.info.run_id)
        return run.info.run_id


def comparisons(name: str, last: int = 20, uri: str | None = None) -> list[dict[str, Any]]:
    """The last `last` shadow comparisons recorded for registered model `name`, newest first."""
    check_name("name", name)
    client = connect(uri)
    with mlflow_errors(f"read the shadow comparisons of {name}"):
        found = client.get_experiment_by_name(SHADOW_EXPERIMENT)
        if not found:
            return []
        runs = client.search_runs([found.experiment_id], filter_string=f"tags.model = '{name}'",
                                  order_by=["attributes.start_time DESC"], max_results=last)
        return [{**{k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")}, **r.data.metrics,
                 "at": r.info.start_time} for r in runs]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (champion, challenger) pair: folders, files compared, mean agreement, verdict counts, mean expected
    accuracies."""
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        pairs.setdefault((row.get("champion", ""), row.get("challenger", "")), []).append(row)

    def mean(items: list[dict[str, Any]], key: str) -> float | None:
        values = [float(i[key]) for i in items if isinstance(i.get(key), (int, float))]
        return statistics.fmean(values) if values else None

    return [{"champion": champion, "challenger": challenger, "folders": len(items),
             "files_compared": int(sum(i.get("files_compared", 0) for i in items)),
             "agreement": mean(items, "agreement"),
             "champion_expected_accuracy": mean(items, "champion_expected_accuracy"),
             "challenger_expected_accuracy": mean(items, "challenger_expected_accuracy"),
             "champion_verdicts": dict(Counter(i.get("champion_verdict", "?") for i in items)),
             "challenger_verdicts": dict(Counter(i.get("challenger_verdict", "?") for i in items))}
            for (champion, challenger), items in pairs.items()]
