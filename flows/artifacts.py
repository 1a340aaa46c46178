"""What a scoring flow run shows in the Prefect UI besides its logs: per folder a table of files per label, a
markdown summary with the CSV path, and the health report (keyed per folder, so its history is the trend); per
inbox scan, the folders it found."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from toolchain.health.render import markdown as health_markdown
from toolchain.scoring.inbox import InboxScan
from toolchain.scoring.publish import FolderSummary


def _slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-") or "folder"


def publish_artifacts(summary: FolderSummary) -> None:
    name = Path(summary.folder).name
    rows = [{"label": label, "files": count} for label, count in summary.label_counts.items()]
    rows.append({"label": "(error)", "files": summary.files_error})
    create_table_artifact(
        key=f"predictions-{_slug(name)}",
        table=rows,
        description=f"{name}: {summary.files_total} files ({summary.files_error} errors), "
        f"{summary.files_per_second:.1f} files/s on {summary.provider}",
    )
    create_markdown_artifact(
        key=f"scoring-summary-{_slug(name)}",
        markdown="\n".join([
            f"# Scored `{name}`",
            "",
            "| | |", "|---|---|",
            f"| CSV | `{summary.csv_path}` |",
            f"| folder | `{summary.folder}` |",
            f"| files | {summary.files_total} ({summary.files_ok} ok, {summary.files_error} error) |",
            f"| windows | {summary.windows} ({summary.audio_hours:.2f} h of audio; {summary.window_rule}) |",
            f"| detections | `{summary.detections_path}` |",
            f"| throughput | {summary.files_per_second:.1f} files/s ({summary.seconds:.1f} s scoring) |",
            f"| provider | {summary.provider} |",
            f"| model | {summary.model_version or '(a file)'}, sha256 `{summary.model_sha256}` |",
            f"| run id | `{summary.run_id}` |",
            f"| task retries | {summary.task_retries} |",
            f"| health | **{summary.health.get('verdict', '')}**: {summary.health.get('reason', '')} |",
        ]),
        description=f"predictions CSV for {name}",
    )
    publish_health_artifact(summary)
    publish_shadow_artifact(summary)


def publish_shadow_artifact(summary: FolderSummary) -> None:
    """The challenger's comparison on this folder (keyed per folder: its history is the shadow trend)."""
    shadow = summary.shadow
    if not shadow:
        return
    name = Path(summary.folder).name
    if "error" in shadow:
        markdown = f"# Shadow comparison on `{name}` failed\n\n`{shadow.get('challenger')}`: {shadow['error']}"
        description = f"{name}: shadow comparison failed"
    else:
        champion, challenger, agreement = shadow["champion"], shadow["challenger"], shadow["agreement"]

        def side(s: dict) -> str:
            accuracy = s.get("expected_accuracy")
            return (f"{s.get('version') or s['sha256'][:12]} | **{s.get('verdict')}** | "
                    f"{'-' if accuracy is None else f'{accuracy:.3f}'}")

        agree = "-" if agreement is None else f"{agreement:.1%}"
        markdown = "\n".join([
            f"# Shadow comparison on `{name}`", "",
            f"Agreement: **{agree}** of {shadow['files_compared']} files both models scored.", "",
            "| model | version | health | expected accuracy |", "|---|---|---|---|",
            f"| serving | {side(champion)} |", f"| challenger | {side(challenger)} |", "",
            f"Shadow CSV: `{shadow['shadow_csv']}`; comparison: `{shadow['path']}`",
            *([f"MLflow run: `{shadow['mlflow_run']}`"] if shadow.get("mlflow_run") else []),
        ])
        description = f"{name}: challenger agrees on {agree}"
    create_markdown_artifact(key=f"shadow-{_slug(name)}", markdown=markdown, description=description)


def publish_health_artifact(summary: FolderSummary) -> None:
    """The folder run's health report as a markdown artifact (keyed per folder: its history is the trend)."""
    if not summary.health.get("path"):
        return
    name = Path(summary.folder).name
    report = json.loads(Path(summary.health["path"]).read_text())
    create_markdown_artifact(key=f"health-{_slug(name)}", markdown=health_markdown(report),
                             description=f"{name}: health {report['verdict']}")


def publish_inbox_artifact(scan: InboxScan) -> None:
    lines = [f"- `{o.folder}` -> `{o.summary.csv_path if o.summary else o.skipped}`" for o in scan.outcomes]
    lines += [f"- `{sub}` **failed**" for sub in scan.failed]
    create_markdown_artifact(
        key=f"inbox-scan-{_slug(Path(scan.inbox).name)}",
        markdown=f"# Inbox scan of `{scan.inbox}`\n\n{len(scan.todo)} new folder(s)\n\n" + "\n".join(lines),
        description=f"inbox scan: {len(scan.todo)} folder(s), {len(scan.failed)} failed",
    )
