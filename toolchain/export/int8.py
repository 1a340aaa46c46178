"""The INT8 variant (static QDQ, for CPU): the recipes in order, then the fallbacks, each attempt judged.

Each attempt is built (`toolchain.export.int8_build`), gets its own report (top-1 agreement with the fp32 ONNX model,
probability drift, accuracy when labels are known, throughput on the evaluation clips) and is kept only when the
report passes its threshold; otherwise the file is deleted and `VariantRejectedError` says why (machinery in
`toolchain.export.variants`). The report's `settings` record the mode, what stayed float and how the ranges were
calibrated. The recipes and the order `auto` tries them: `toolchain.export.int8_recipes`.

When every recipe of `auto` misses the gate, `float_fallback` retries the first with its most sensitive layers in
float (`toolchain.export.int8_sensitivity`), then with the skip paths in float, then with the residual stream in
float. Why the later stages: in a deep ResNet the error is not in a few layers. QDQ gives the residual stream (the
tensor a block's skip connection carries) one 8-bit copy shared by all its readers, so the stream is rounded again
at every block's Add and the rounding accumulates over the blocks. A ResNet152 trained on FSDD did not move with its
most sensitive convs in float; with the skip paths in float (`onnx_graph.float_skip_paths`; every conv still INT8)
it came close to fp32, and with the Adds and every stream-reading conv in float closer still, at a lower speed
(figures: docs/performance.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.cpu import cpu_isa
from toolchain.errors import VariantRejectedError
from toolchain.export.int8_build import build_int8, prepare_for_int8
from toolchain.export.int8_recipes import (
    DEFAULT_INT8_MODE,
    FALLBACK_STEPS,
    INT8_CRITERION,
    MIN_FALLBACK_SPEEDUP,
    SENSITIVITY_CLIPS,
    SKIP_OP_TYPES,
    STREAM_OP_TYPES,
    Int8Mode,
    Int8Recipe,
    auto_order,
    recipes_for,
)
from toolchain.export.int8_sensitivity import layer_sensitivity
from toolchain.export.onnx_graph import layer_nodes, match_layers, stream_layers
from toolchain.export.variant_gate import VariantCriterion
from toolchain.export.variants import VariantReport, build_and_judge
from toolchain.inference.providers import CPU_EP
from toolchain.io import write_json
from toolchain.progress import NullProgress, ProgressReporter


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    *,
    labels: list[str | None] | None = None,
    mode: Int8Mode = DEFAULT_INT8_MODE,
    calibrate: str | None = None,
    recipes: Sequence[Int8Recipe] | None = None,
    criterion: VariantCriterion = INT8_CRITERION,
    report_path: str | Path | None = None,
    progress: ProgressReporter | None = None,
    fallback: bool = True,
) -> VariantReport:
    """Static QDQ INT8 (per-channel weights, calibrated on `calibration` clips) -> `out_path`, judged.

    `calibration` and `evaluation`: float32 (n, channels, n_mels, frames) features, ideally disjoint.
    Kept only when it meets `criterion` against the fp32 model on `evaluation` (`toolchain.export.variant_gate`:
    with `labels` for every clip, the accuracy-drop bound and the confident clips' agreement; otherwise top-1
    agreement); otherwise the file is deleted and `VariantRejectedError` raised (its `.report` says why). The
    report (JSON at `report_path`) is written either way. `recipes` (default: `recipes_for(mode, calibrate)`; `mode=auto` is AUTO_ORDER) are tried
    in order and the first that passes is kept; the report lists the rejected attempts under
    `settings["rejected"]`. When all fail, `fallback` and `mode` is auto, the first recipe is retried with its most
    sensitive layers in float (`float_fallback`); the report's `settings["float_fallback"]` says what was measured
    and tried.
    """
    if len(calibration) == 0:
        raise VariantRejectedError("no calibration clips for INT8: pass real audio with --parity-data")
    fallback = fallback and recipes is None and Int8Mode(mode) is Int8Mode.auto  # An explicit recipe is used alone.
    recipes = tuple(recipes or recipes_for(Int8Mode(mode), calibrate))
    rejected: list[str] = []
    for i, attempt in enumerate(recipes):
        try:
            report = quantize_one(Path(fp32_path), Path(out_path), calibration, evaluation, labels, attempt,
                                  criterion, report_path, progress or NullProgress())
        except VariantRejectedError as exc:
            if i == len(recipes) - 1:
                if not fallback or exc.report is None:
                    raise _with_attempts(exc, rejected, report_path) from None
                rejected.append(f"{attempt.describe()}: {exc.report.reason}")
                return float_fallback(Path(fp32_path), Path(out_path), calibration, evaluation, labels, recipes[0],
                                      criterion, report_path, progress or NullProgress(), rejected)
            rejected.append(f"{attempt.describe()}: {exc.report.reason if exc.report else exc}")
            continue
        if rejected:
            report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected})
            if report_path:
                write_json(report.to_dict(), Path(report_path))
        return report
    raise AssertionError("unreachable: there is always at least one recipe")


def _with_attempts(exc: VariantRejectedError, rejected: list[str], report_path) -> VariantRejectedError:
    """The last rejection, carrying the earlier ones in its report and message."""
    report = exc.report
    if not rejected or report is None:
        return exc
    report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected})
    if report_path:
        write_json(report.to_dict(), Path(report_path))
    return VariantRejectedError(f"{exc} (also rejected: {'; '.join(rejected)})", report=report)


def quantize_one(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    labels: list[str | None] | None,
    recipe: Int8Recipe,
    criterion: VariantCriterion,
    report_path: str | Path | None,
    progress: ProgressReporter,
) -> VariantReport:
    """One recipe: built, judged, kept or deleted (`build_and_judge`); its report records the recipe and the CPU."""

    def build(pending: Path) -> None:
        prepared = pending.with_name(pending.name + ".pre.onnx")  # Scratch: removed below.
        try:
            progress.start("preprocess", f"INT8 {recipe.describe()}: shape inference + graph optimization", None)
            prepare_for_int8(fp32_path, prepared)
            progress.finish("preprocess")
            build_int8(prepared, pending, calibration, recipe, progress)
        finally:
            prepared.unlink(missing_ok=True)

    isa = cpu_isa()
    settings = {**recipe.settings(), "calibration_clips": len(calibration), "cpu": isa,
                "auto_order": [r.describe() for r in auto_order(isa)]}
    progress.start("int8", f"INT8 {recipe.describe()}: evaluating against fp32", None)
    try:
        return build_and_judge("int8", fp32_path, out_path, build, evaluation, labels, CPU_EP, criterion, settings,
                               Path(report_path) if report_path else None)
    finally:
        progress.finish("int8")


def _speedup(report: VariantReport | None) -> float | None:
    if report is None or not report.clips_per_s_fp32 or not report.clips_per_s_variant:
        return None
    return report.clips_per_s_variant / report.clips_per_s_fp32


def float_fallback(
    fp32_path: Path, out_path: Path, calibration: np.ndarray, evaluation: np.ndarray,
    labels: list[str | None] | None, recipe: Int8Recipe, criterion: VariantCriterion, report_path: str | Path | None,
    progress: ProgressReporter, rejected: list[str],
) -> VariantReport:
    """`recipe` again with its most sensitive layers (`int8_sensitivity.layer_sensitivity`) in float, 1, 2, 4, ...
    of them, then with the skip paths in float (`onnx_graph.float_skip_paths`: every conv stays INT8), then with the
    residual stream in float (the Adds and the stream-reading convs of the deeper half, then of all blocks:
    `onnx_graph.stream_layers`), until the gate passes or the speed-up over fp32 falls below MIN_FALLBACK_SPEEDUP."""
    scratch = out_path.parent
    prepared, probe = scratch / f".{out_path.name}.sens.pre.onnx", scratch / f".{out_path.name}.sens.onnx"
    progress.start("sensitivity", f"INT8 {recipe.describe()}: per-layer error on {SENSITIVITY_CLIPS} clips", None)
    try:
        prepare_for_int8(fp32_path, prepared)
        build_int8(prepared, probe, calibration, recipe)
        layers = layer_nodes(prepared)
        stream = stream_layers(prepared, layers)
        ranking = layer_sensitivity(prepared, probe, calibration[:SENSITIVITY_CLIPS], layers, scratch)
    finally:
        prepared.unlink(missing_ok=True)
        probe.unlink(missing_ok=True)
        progress.finish("sensitivity")
    already = set(match_layers(layers, recipe.keep_float, "keep_float"))
    candidates = [layer for layer, _ in ranking if layer not in already]
    stream = [layer for layer in stream if layer not in already]
    record: dict[str, Any] = {"recipe": recipe.describe(), "sqnr_loss_db": ranking[:16], "stream_layers": stream,
                              "tried": []}
    attempts = [(f"{k} most sensitive layer(s) in float", candidates[:k], recipe.op_types, False)
                for k in sorted({min(step, len(candidates)) for step in FALLBACK_STEPS} - {0})]
    if stream:
        attempts.append(("the skip paths in float (the Adds read the float stream, every conv stays INT8)", [],
                         SKIP_OP_TYPES, True))
    attempts += [(f"the residual stream in float (the Adds and {len(part)} of its {len(stream)} reader convs)", part,
                  STREAM_OP_TYPES, False)
                 for part in dict.fromkeys((tuple(stream[len(stream) // 2:]), tuple(stream))) if part]
    last: VariantRejectedError | None = None
    for what, floats, op_types, skips in attempts:
        attempt = dataclasses.replace(recipe, keep_float=(*recipe.keep_float, *floats), op_types=op_types,
                                      float_skips=skips)
        try:
            report = quantize_one(fp32_path, out_path, calibration, evaluation, labels, attempt, criterion,
                                  report_path, progress)
        except VariantRejectedError as exc:
            last = exc
            speedup = _speedup(exc.report)
            record["tried"].append({"what": what, "float": list(floats), "op_types": list(op_types) or "all",
                                    "float_skips": skips,
                                    "agreement": exc.report.top1_agreement if exc.report else None,
                                    "reason": exc.report.reason if exc.report else str(exc),
                                    "speedup": speedup})
            if speedup is not None and speedup < MIN_FALLBACK_SPEEDUP:
                record["stopped"] = f"{speedup:.2f}x over fp32 with {what}, below {MIN_FALLBACK_SPEEDUP}x: " \
                    "not worth shipping"
                break
            continue
        record["kept"] = f"{what}: {', '.join(floats)}" if floats else what
        report = dataclasses.replace(report, settings={**report.settings, "rejected": rejected,
                                                       "float_fallback": record})
        if report_path:
            write_json(report.to_dict(), Path(report_path))
        return report
    record.setdefault("stopped", "every fallback step missed the gate")
    final = last.report if last is not None else None
    if final is not None:
        final = dataclasses.replace(final, settings={**final.settings, "rejected": rejected, "float_fallback": record})
        if report_path:
            write_json(final.to_dict(), Path(report_path))
    tried = "; ".join(f"{t['what']}: {t['agreement']:.2%}" for t in record["tried"] if t["agreement"] is not None)
    rule = final.criterion.get("description", "the gate") if final is not None else "the gate"
    raise VariantRejectedError(f"int8 model deleted: no recipe met {rule} (also "
                               f"rejected: {'; '.join(rejected)}); fallback: {tried or 'none tried'}"
                               f" ({record['stopped']})", report=final)
