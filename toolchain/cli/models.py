"""`toolchain models ...`: the model registry in MLflow (list, show, register, promote, rollback, compare)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toolchain.cli.common import console, user_errors

app = typer.Typer()
models_app = typer.Typer(name="models", no_args_is_help=True, help="Registered models in MLflow: list, show, "
                         "register, promote, rollback, compare (MLFLOW_TRACKING_URI or --tracking-uri).")
app.add_typer(models_app)

TrackingUri = Annotated[str | None, typer.Option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
    help="MLflow tracking server or store, e.g. http://mlflow:5000.",
    show_default="sqlite:///mlflow.db in the current folder")]
Alias = Annotated[str, typer.Option("--alias", help="The alias runs resolve (models:/NAME@ALIAS).")]


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M") if ms else "-"


@models_app.command("list")
@user_errors
def list_command(tracking_uri: TrackingUri = None) -> None:
    """Every registered model: versions, the latest, and where each alias points."""
    from toolchain.registry.registry import list_models

    found = list_models(tracking_uri)
    if not found:
        console.print("no registered models: register one with `toolchain export-onnx --register NAME`")
        return
    table = Table(title="Registered models")
    for column in ("name", "versions", "latest", "aliases"):
        table.add_column(column)
    for m in found:
        table.add_row(m["name"], str(m["versions"]), str(m["latest"]),
                      ", ".join(f"{a} -> {v}" for a, v in m["aliases"].items()) or "-")
    typer.echo(_render(table))


@models_app.command("show")
@user_errors
def show_command(name: Annotated[str, typer.Argument(help="Registered model name.")],
                 tracking_uri: TrackingUri = None) -> None:
    """Every version of NAME: aliases, sha256, architecture, gates passed, the training run, when."""
    from toolchain.registry.registry import model_versions

    table = Table(title=f"models:/{name}")
    for column in ("version", "aliases", "sha256", "arch", "classes", "gates", "training run", "registered"):
        table.add_column(column)
    for v in model_versions(name, tracking_uri):
        gates = ", ".join(k.removeprefix("gate.") for k in sorted(v.tags) if k.startswith("gate."))
        table.add_row(str(v.version), ", ".join(v.aliases) or "-", v.sha256[:12], v.tags.get("arch", "?"),
                      v.tags.get("n_classes", "?"), gates, (v.tags.get("training_run") or "-")[:12],
                      _when(v.created_ms))
    typer.echo(_render(table))


@models_app.command("register")
@user_errors
def register_command(name: Annotated[str, typer.Argument(help="Registered model name (created if new).")],
                     model: Annotated[Path, typer.Option("--model", help="model.onnx certified by `toolchain "
                                                         "export-onnx` (its parity.json passed).")],
                     tracking_uri: TrackingUri = None) -> None:
    """Register the certified bundle around MODEL as a new version of NAME (what `export-onnx --register` does)."""
    print_registered(register(model, name, tracking_uri))


def register(model: Path, name: str, tracking_uri: str | None):
    from toolchain.registry.registry import register_bundle

    return register_bundle(model, name, tracking_uri)


def print_registered(info) -> None:
    files = info.tags.get("files", "")
    if info.new:
        console.print(f"registered models:/{info.name}/{info.version} (sha256 {info.sha256[:12]}; {files})",
                      soft_wrap=True, highlight=False)
    else:
        console.print(f"already registered as models:/{info.name}/{info.version} (same sha256 {info.sha256[:12]})",
                      soft_wrap=True, highlight=False)
    console.print(f"serve it: `toolchain models promote {info.name} {info.version}`, then "
                  f"--model models:/{info.name}@champion", soft_wrap=True, highlight=False)
    typer.echo(f"models:/{info.name}/{info.version}")


@models_app.command("promote")
@user_errors
def promote_command(name: Annotated[str, typer.Argument(help="Registered model name.")],
                    version: Annotated[int, typer.Argument(min=1, help="The version the alias will point at.")],
                    alias: Alias = "champion", tracking_uri: TrackingUri = None) -> None:
    """Point models:/NAME@ALIAS at VERSION: every run that resolves it uses VERSION from its next run on (no
    restart). Inbox scans stay forward-only: the new version scores what arrives; `toolchain backfill` rescores
    the history."""
    from toolchain.registry.registry import promote

    previous, now = promote(name, version, alias, tracking_uri)
    was = f"was {previous}" if previous is not None else "was not set"
    console.print(f"models:/{name}@{alias} -> version {now} ({was}); `toolchain models rollback {name}"
                  f"{'' if alias == 'champion' else ' --alias ' + alias}` undoes it", soft_wrap=True, highlight=False)


@models_app.command("rollback")
@user_errors
def rollback_command(name: Annotated[str, typer.Argument(help="Registered model name.")],
                     alias: Alias = "champion", tracking_uri: TrackingUri = None) -> None:
    """Point models:/NAME@ALIAS back at the version it pointed at before the current one."""
    from toolchain.registry.registry import rollback

    current, previous = rollback(name, alias, tracking_uri)
    console.print(f"models:/{name}@{alias} -> version {previous} (was {current})", soft_wrap=True, highlight=False)


@models_app.command("compare")
@user_errors
def compare_command(name: Annotated[str, typer.Argument(help="Registered model name.")],
                    last: Annotated[int, typer.Option("--last", min=1, help="Folders to summarise, newest "
                                                      "first.")] = 20,
                    tracking_uri: TrackingUri = None) -> None:
    """Summarise the last shadow comparisons of NAME (scoring with --challenger): per champion/challenger pair,
    folders, files compared, agreement, health verdicts and expected accuracies: the evidence for `promote`."""
    from toolchain.registry.shadow import comparisons, summarise

    rows = comparisons(name, last, tracking_uri)
    if not rows:
        console.print(f"no shadow comparisons of {name} yet: score with --challenger models:/{name}@challenger",
                      soft_wrap=True)
        return
    table = Table(title=f"Shadow comparisons of {name} (last {len(rows)} folders)")
    for column in ("serving", "challenger", "folders", "files", "agreement", "health serving",
                   "health challenger", "exp. acc. serving", "exp. acc. challenger"):
        table.add_column(column)

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for p in summarise(rows):
        table.add_row(p["champion"], p["challenger"], str(p["folders"]), str(p["files_compared"]),
                      fmt(p["agreement"], ".1%"), _counts(p["champion_verdicts"]), _counts(p["challenger_verdicts"]),
                      fmt(p["champion_expected_accuracy"], ".3f"), fmt(p["challenger_expected_accuracy"], ".3f"))
    typer.echo(_render(table))


def _counts(verdicts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))


def _render(table: Table) -> str:
    """The table as text on stdout (scripts and `> file` get it), as wide as it needs."""
    from rich.console import Console

    out = Console(width=200, file=io.StringIO())
    out.print(table)
    return out.file.getvalue().rstrip()
