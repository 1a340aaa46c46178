"""`python -m flows`: run the `score-folder` flow once, in this process.

Without PREFECT_API_URL, Prefect starts a temporary server (no `prefect server start` needed) and this command
gives it EPHEMERAL_STARTUP_SECONDS to answer (a busy 2-core machine needs far more than Prefect's 20 s), with
telemetry off; with PREFECT_API_URL, the run is recorded on that server and shows in its UI. `make demo` scores
its inbox this way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from toolchain.errors import EXIT_DRIFT, EXIT_USER_ERROR, DriftError, ToolchainError
from toolchain.health.assess import HealthThresholds
from toolchain.inference.predictions import Aggregation
from toolchain.io import check_output_dir
from toolchain.scoring.files import check_folder
from toolchain.scoring.folder import DEFAULT_SHARD_SIZE, describe_model
from toolchain.scoring.options import OutputFormat, ScoringOptions

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
STARTUP_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_SECONDS = 600  # Seen: 12 s idle, over 60 s beside two CPU-heavy processes on 2 cores.


def prefect_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings to add before Prefect is imported: with no PREFECT_API_URL (a temporary server), a startup budget
    for a loaded machine and no telemetry from an offline one; whatever the caller set explicitly is kept."""
    if environ.get("PREFECT_API_URL"):
        return {}
    wanted = {STARTUP_SETTING: str(EPHEMERAL_STARTUP_SECONDS), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
              "DO_NOT_TRACK": "1"}
    return {k: v for k, v in wanted.items() if k not in environ}


@cli.command()
def run(
    model: Annotated[Path, typer.Option(help="ONNX model written by `toolchain export-onnx`.")],
    output_dir: Annotated[Path, typer.Option(help="Where prediction CSVs and ledger.sqlite go.")],
    folder: Annotated[Path | None, typer.Option(help="Score this folder.")] = None,
    inbox: Annotated[Path | None, typer.Option(help="Score each subfolder of this inbox not yet scored.")] = None,
    dask_address: Annotated[
        str | None, typer.Option(help="Dask scheduler (tcp://HOST:8786) to score the shards on; default: here.")
    ] = None,
    shard_size: Annotated[int, typer.Option(min=1, help="Files per shard (one task each).")] = DEFAULT_SHARD_SIZE,
    hop_seconds: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds between windows; default: half the model's window.")
    ] = None,
    aggregation: Annotated[Aggregation, typer.Option(help="A file's probabilities from its windows'.")] = (
        Aggregation.mean),
    min_confidence: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Detections below this confidence are left out.")
    ] = 0.0,
    format: Annotated[OutputFormat, typer.Option(help="raven adds a Raven selection table.")] = OutputFormat.csv,
    max_duration: Annotated[
        float | None, typer.Option(min=0.001, help="Score at most this many seconds of each file.")
    ] = None,
    health_thresholds: Annotated[
        str, typer.Option(help="Health thresholds to override, e.g. 'js_distance=0.15,min_files=100'.")
    ] = "",
    fail_on_drift: Annotated[
        bool, typer.Option(help="Fail the flow run (exit 3) when a folder's health verdict is drift.")
    ] = False,
) -> None:
    """Run the Prefect flow `score-folder` once over --folder or --inbox."""
    if (folder is None) == (inbox is None):
        typer.echo("error: pass exactly one of --folder or --inbox", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    try:  # What can be checked before Prefect starts is: one line and exit 2, not a flow-run traceback.
        check_folder(folder or inbox, "--folder" if folder else "--inbox")
        check_output_dir(output_dir, "--output-dir")
        options = ScoringOptions(hop_seconds=hop_seconds, aggregation=aggregation, min_confidence=min_confidence,
                                 format=format, max_duration_s=max_duration,
                                 health=HealthThresholds.parse(health_thresholds))
        options.tag(describe_model(model).metadata.feature_config)
    except ToolchainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    os.environ.update(prefect_environment(os.environ))
    from prefect.states import State

    from flows.score_folder import score_folder_flow

    try:
        state: State = score_folder_flow(
            model=str(model.resolve()),
            output_dir=str(output_dir.resolve()),
            folder=str(folder.resolve()) if folder else None,
            inbox=str(inbox.resolve()) if inbox else None,
            dask_address=dask_address,
            shard_size=shard_size,
            options=options,
            fail_on_drift=fail_on_drift,
            return_state=True,
        )
    except RuntimeError as exc:
        if "ephemeral" not in str(exc):
            raise
        typer.echo(f"error: the temporary Prefect server did not answer within {os.environ.get(STARTUP_SETTING)} s "
                   f"({STARTUP_SETTING}): raise it, or start `prefect server start` and set PREFECT_API_URL",
                   err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    if not state.is_completed():
        failure = state.result(raise_on_failure=False)
        # Drift (asked to fail on it) is 3; a user error found inside the flow is still one (2); anything else 1.
        code = EXIT_DRIFT if isinstance(failure, DriftError) else (
            EXIT_USER_ERROR if isinstance(failure, ToolchainError) else 1)
        typer.echo(f"error: flow run ended {state.name}: {state.message}", err=True)
        raise typer.Exit(code)
    result = state.result()
    for item in result.get("folders", [result]) if isinstance(result, dict) else []:
        if isinstance(item, dict) and item.get("csv_path"):
            typer.echo(f"predictions: {item['csv_path']}")
            typer.echo(f"detections: {item['detections_path']}")
            typer.echo(f"health: {item['health'].get('verdict')} ({item['health'].get('path')})")


if __name__ == "__main__":
    cli()
