"""The scoring options of every command that scores (`score`, `serve`, `flow`, `backfill`), declared once.

`@scoring_options` gives a command the engine options (how to run: `EngineConfig`) and the scoring options (what
comes out: `ScoringOptions`, plus `--fail-on-drift`), each declared here with its help and its default from the
library's config. The command itself takes three parameters, `engine`, `options` and `fail_on_drift`, and
receives them built and checked: a bad value is a one-line `ScoringError` before any work. `--ledger-url` comes
with them (and on its own, `LedgerUrlOption`, for commands that only read the ledger).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from toolchain.cli.common import config_defaults
from toolchain.health.assess import HealthThresholds
from toolchain.inference.predictions import Aggregation
from toolchain.inference.providers import Provider
from toolchain.scoring.engine_config import EngineConfig, Frontend
from toolchain.scoring.ledger_db import LEDGER_URL_ENV
from toolchain.scoring.options import OutputFormat, RavenRows, ScoringOptions, WindowPlacement, placement_sound_db
from toolchain.scoring.precision import Precision

F = TypeVar("F", bound=Callable[..., Any])
ENGINE = config_defaults(EngineConfig)
SCORING = config_defaults(ScoringOptions)

ModelOption = Annotated[str, typer.Option(
    "--model", help="ONNX model written by `toolchain export-onnx`, or a registered version: models:/NAME@ALIAS "
    "(resolved at every run: promoting a version changes what the next run uses) or models:/NAME/VERSION.")]
SettleOption = Annotated[float, typer.Option(
    "--settle-seconds", min=0, help="Inbox files not covered by a _READY marker (written after it, or no marker) are "
    "scored once nothing in their subfolder changed for this long.")]

LedgerUrlOption = Annotated[str | None, typer.Option(
    "--ledger-url", envvar=LEDGER_URL_ENV, show_envvar=True,
    help="PostgreSQL ledger shared by workers on several machines, e.g. postgresql://user@host/db (one database "
    "per output folder; keep the password in ~/.pgpass or the environment variable, not on the command line); "
    "default: OUTPUT/ledger.sqlite.")]


def use_ledger_url(url: str | None) -> None:
    """Record into the PostgreSQL ledger at `url` from now on (this process and the runs it starts), after
    checking it can be reached and holds the schema (a one-line `LedgerError` otherwise); None: the default."""
    if not url:
        return
    from toolchain.scoring.ledger import Ledger
    from toolchain.scoring.ledger_db import check_ledger_url

    Ledger(check_ledger_url(url))
    os.environ[LEDGER_URL_ENV] = url


def _option(name: str, kind: Any, default: Any, *decls: str, **info: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, typer.Option(*decls, **info)])


ENGINE_OPTIONS = (
    _option("batch_size", int, ENGINE["batch_size"], "--batch-size", min=1, help="Clips per ONNX Runtime call."),
    _option("workers", int | None, None, "--workers", min=0,
            help="Decode worker processes (0 = decode inline); default: one per four cores."),
    _option("threads", int | None, None, "--threads", min=1,
            help="ONNX Runtime intra-op threads per model call; default: the cores, shared by the calls."),
    _option("runners", int | None, None, "--runners", min=1,
            help="Model calls in flight at once; default: 2 on a CPU, 1 on a GPU."),
    _option("provider", Provider, Provider(ENGINE["provider"]), "--provider",
            help="auto = CUDA when it really starts, else CPU."),
    _option("precision", Precision, Precision(ENGINE["precision"]), "--precision",
            help="auto = on CUDA, MODEL's fp16 variant (model.fp16.onnx) when parity.fp16.json certifies it on "
            "CUDA; on the CPU, its INT8 variant (model.int8.onnx) when parity.int8.json certifies it; else MODEL. "
            "fp32 = always MODEL; fp16 / int8 = that variant wherever it passed its report."),
    _option("device_id", int, ENGINE["device_id"], "--device-id", min=0, help="GPU index the CUDA provider uses."),
    _option("frontend", Frontend, Frontend(ENGINE["frontend"]), "--frontend",
            help="python: log-mel computed by this library; graph: run model.audio.onnx beside MODEL (log-mel "
            "inside the graph, certified by parity.audio.json)."),
)

RESULT_OPTIONS = (
    _option("hop_seconds", float | None, SCORING["hop_seconds"], "--hop-seconds", min=0.001,
            help="Seconds between windows on the grid (and within a sound longer than a window); default: half a "
            "window (2.5 s for 5-s models)."),
    _option("placement", WindowPlacement, WindowPlacement.sounds, "--placement",
            help="A long file's windows: sounds = one from the onset of each sound standing --sound-db over the "
            "file's own background, scored as a clip (nothing between sounds is scored; a file where nothing stands "
            "out gets the grid); grid = every --hop-seconds over the whole file."),
    _option("sound_db", float | None, None, "--sound-db", min=0.001, show_default=f"{SCORING['sound_db']:g}",
            help="With --placement sounds: how many dB over the file's background a sound must stand."),
    _option("aggregation", Aggregation, Aggregation(SCORING["aggregation"]), "--aggregation",
            help="A file's probabilities from its windows': mean (default) or max (finds a short event in a long "
            "file)."),
    _option("min_confidence", float, SCORING["min_confidence"], "--min-confidence", min=0.0, max=1.0,
            help="Leave detections (window rows) below this confidence out of detections_<UTC>.csv; the "
            "predictions CSV keeps every file."),
    _option("merge_gap", float, SCORING["merge_gap_s"], "--merge-gap",
            help="Events: runs of one label at most this many seconds apart merge into one (0 bridges one weak "
            "window at the default hop; negative: none)."),
    _option("format", OutputFormat, OutputFormat(SCORING["format"]), "--format",
            help="csv: predictions, detections and events CSVs; raven: also a Raven selection table "
            "(raven_<UTC>.selections.txt)."),
    _option("raven_rows", RavenRows, RavenRows(SCORING["raven_rows"]), "--raven-rows",
            help="The Raven table's selections: events (default) or every detection window."),
    _option("max_duration", float | None, SCORING["max_duration_s"], "--max-duration", min=0.001,
            help="Score at most this many seconds of each file (a safety limit); default: all of it."),
    _option("health_thresholds", str, "", "--health-thresholds",
            help="Override health-report thresholds, e.g. 'js_distance=0.15,min_files=100' (names: alpha, "
            "js_distance, psi, ks_statistic, accuracy_drop, low_confidence, failure_share, min_files; see "
            "docs/reference.md)."),
    _option("challenger", str, SCORING["challenger"], "--challenger",
            help="Also score every folder with this model in shadow (a path or models:/NAME@challenger): "
            "shadow_predictions_<UTC>.csv and the comparison shadow_<UTC>.json beside the real outputs, recorded "
            "in MLflow for `toolchain models compare`; the serving model's outputs are unaffected."),
    _option("fail_on_drift", bool, False, "--fail-on-drift",
            help="Exit 3 (a flow run: fail) when a folder's health verdict is drift, after every output is "
            "written; by default drift is reported only."),
)

LEDGER_OPTIONS = (inspect.Parameter("ledger_url", inspect.Parameter.KEYWORD_ONLY, default=None,
                                     annotation=LedgerUrlOption),)

BUILT = ("engine", "options", "fail_on_drift")  # What the decorated command receives instead of the flags.


def build_engine(values: dict[str, Any]) -> EngineConfig:
    return EngineConfig(batch_size=values["batch_size"], provider=values["provider"],
                        decode_workers=values["workers"], intra_op_threads=values["threads"],
                        runners=values["runners"],
                        precision=values["precision"], device_id=values["device_id"], frontend=values["frontend"])


def build_options(values: dict[str, Any]) -> ScoringOptions:
    return ScoringOptions(hop_seconds=values["hop_seconds"],
                          sound_db=placement_sound_db(values["placement"], values["sound_db"]),
                          aggregation=values["aggregation"], min_confidence=values["min_confidence"], format=values["format"],
                          merge_gap_s=values["merge_gap"], raven_rows=values["raven_rows"],
                          max_duration_s=values["max_duration"],
                          health=HealthThresholds.parse(values["health_thresholds"]), challenger=values["challenger"])


def scoring_options(func: F) -> F:
    """Replace `func`'s parameters `engine`, `options` and `fail_on_drift` by the shared command-line options,
    and call it with them built (`EngineConfig`, `ScoringOptions`, bool)."""
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in BUILT]
    shared = {p.name for p in (*ENGINE_OPTIONS, *RESULT_OPTIONS, *LEDGER_OPTIONS)}

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in shared}
        engine, options = build_engine(values), build_options(values)
        use_ledger_url(values["ledger_url"])
        return func(**kwargs, engine=engine, options=options, fail_on_drift=values["fail_on_drift"])

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*parameters, *ENGINE_OPTIONS, *RESULT_OPTIONS, *LEDGER_OPTIONS])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
