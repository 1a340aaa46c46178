"""`toolchain flow` (also `python -m flows`): run the Prefect flow `score-folder` (or `score-inbox`) once, in this
process.

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

from toolchain.cli.common import user_errors
from toolchain.cli.options import ModelOption, SettleOption, scoring_options
from toolchain.errors import EXIT_DRIFT, EXIT_USER_ERROR, DriftError, ScoringError, ToolchainError
from toolchain.io import check_output_dir
from toolchain.registry.refs import is_registry_ref
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS, check_folder
from toolchain.scoring.models import describe_model, resolve_model
from toolchain.scoring.options import ScoringOptions
from toolchain.scoring.shards import DEFAULT_SHARD_SIZE

app = typer.Typer()
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


@app.command("flow")
@user_errors
@scoring_options
def flow_command(
    model: ModelOption,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where prediction CSVs and ledger.sqlite go.")],
    folder: Annotated[Path | None, typer.Option("--folder", help="Score this folder (flow score-folder).")] = None,
    inbox: Annotated[Path | None, typer.Option(
        "--inbox", help="Score the new files of each subfolder of this inbox (flow score-inbox).")] = None,
    dask_address: Annotated[str | None, typer.Option(
        "--dask-address", help="Dask scheduler (tcp://HOST:8786) to score the shards on; default: here.")] = None,
    shard_size: Annotated[int, typer.Option(
        "--shard-size", min=1, help="Files per shard (one task each).")] = DEFAULT_SHARD_SIZE,
    settle_seconds: SettleOption = DEFAULT_SETTLE_SECONDS,
    engine: EngineConfig = EngineConfig(),
    options: ScoringOptions = ScoringOptions(),
    fail_on_drift: bool = False,
) -> None:
    """Run the Prefect flow score-folder on --folder (or score-inbox on --inbox) once, in this process.

    Prints the CSV, detections and health report of each folder scored. A run that ends Failed prints its one
    line and exits 2 (3 for drift with --fail-on-drift; 1 for anything else, whose traceback is in the log).
    """
    if (folder is None) == (inbox is None):
        raise ScoringError("pass exactly one of --folder or --inbox")
    # What can be checked before Prefect starts is: one line and exit 2, not a flow-run traceback.
    check_folder(folder or inbox, "--folder" if folder else "--inbox")
    check_output_dir(output_dir, "--output-dir")
    options.tag(describe_model(resolve_model(model)).metadata.feature_config)  # The flow resolves it again.
    os.environ.update(prefect_environment(os.environ))
    # Prefect: ~2 s to import, and the settings above must be in place first.
    from flows.score_folder import RunSettings, score_folder_flow
    from flows.score_inbox import score_inbox_flow

    model = model if is_registry_ref(model) else str(Path(model).expanduser().resolve())
    common = {"model": model, "output_dir": str(output_dir.resolve()), "engine": engine,
              "options": options, "return_state": True,
              "run": RunSettings(shard_size=shard_size, settle_seconds=settle_seconds, dask_address=dask_address,
                                 fail_on_drift=fail_on_drift)}
    try:
        state = (score_folder_flow(folder=str(folder.resolve()), **common) if folder else
                 score_inbox_flow(inbox=str(inbox.resolve()), **common))
    except RuntimeError as exc:
        if "ephemeral" not in str(exc):
            raise
        raise ScoringError(f"the temporary Prefect server did not answer within {os.environ.get(STARTUP_SETTING)} "
                           f"s ({STARTUP_SETTING}): raise it, or start `prefect server start` and set "
                           "PREFECT_API_URL") from None
    if not state.is_completed():
        failure = state.result(raise_on_failure=False)
        code = EXIT_DRIFT if isinstance(failure, DriftError) else (
            EXIT_USER_ERROR if isinstance(failure, ToolchainError) else 1)
        typer.echo(f"error: flow run ended {state.name}: {state.message}", err=True)
        raise typer.Exit(code)
    result = state.result()
    for item in result.get("folders", [result]):
        if item.get("csv_path"):
            typer.echo(f"predictions: {item['csv_path']}")
            typer.echo(f"detections: {item['detections_path']}")
            typer.echo(f"health: {item['health'].get('verdict')} ({item['health'].get('path')})")
