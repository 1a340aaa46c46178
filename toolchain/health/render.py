"""Reports for people: a health report as markdown (the Prefect artifact) and the trend of runs as a PNG.

The markdown draws its "plots" with text bars (class mix and confidence, this run beside the reference): they
render in Prefect's artifact view and in any terminal, and cost microseconds; matplotlib is loaded only for the
trend PNG that `toolchain health --png` asks for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolchain.io import atomic_write

BAR_WIDTH = 24
COARSE_BINS = 10  # The confidence histogram's rows in the markdown (of the report's 50 bins).


def _bar(share: float) -> str:
    full = round(max(0.0, min(1.0, share)) * BAR_WIDTH)
    return "█" * full + "·" * (BAR_WIDTH - full)


def _coarse(shares: Sequence[float | None]) -> list[float]:
    step = max(1, len(shares) // COARSE_BINS)
    return [sum(v or 0.0 for v in shares[i:i + step]) for i in range(0, len(shares), step)]


def _pct(value: Any) -> str:
    return "" if value is None else f"{value:.1%}"


def _num(value: Any, spec: str = ".3f") -> str:
    """A figure, or "n/a" where the report holds null (a statistic NaN outputs left undefined)."""
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """`HealthReport.to_dict()` -> markdown: verdict, figures, signals, class mix and confidence bars."""
    figures, shares = report.get("figures") or {}, report.get("shares") or {}
    lines = [f"# Health of `{Path(report.get('folder') or '?').name}`: **{report['verdict']}**", "",
             report["reason"], "",
             "| | this run | reference |", "|---|---|---|",
             f"| files (windows) | {report['files']} ({report['windows']}) | "
             f"{(report.get('reference') or {}).get('files', '')} |",
             f"| decode failures | {report['failed']} | |"]
    if "js_distance" in figures:
        lines += [
            f"| expected accuracy | {_pct(figures['expected_accuracy'])} | "
            f"{_pct(figures['reference_expected_accuracy'])} (measured {_pct(figures['reference_accuracy'])}) |",
            f"| class mix JS distance / PSI | {_num(figures['js_distance'])} / {_num(figures['psi'])} | "
            f"threshold {report['thresholds']['js_distance']:g} / {report['thresholds']['psi']:g} |",
            f"| confidence K-S (p) | {_num(figures['confidence_ks'])} ({_num(figures['confidence_ks_p'], '.2g')}) | "
            f"threshold {report['thresholds']['ks_statistic']:g} |",
            f"| entropy K-S (p) | {_num(figures['entropy_ks'])} ({_num(figures['entropy_ks_p'], '.2g')}) | |",
            f"| below confidence {report['thresholds']['low_confidence']:g} | "
            f"{_pct(figures['low_confidence_share'])} | {_pct(figures['reference_low_confidence_share'])} |",
        ]
    if report.get("signals"):
        judged = report["verdict"] != "insufficient"
        lines += ["", "Signals:" if judged else "Signals (too few files: shown, not judged):",
                  *[f"- **{s['status']}** {s['message']}" for s in report["signals"]]]
    if "class_mix" in shares:
        classes = report.get("classes") or [str(i) for i in range(len(shares["class_mix"]))]
        width = max(len(str(c)) for c in classes)
        lines += ["", "Class mix (share of files; this run, then the reference):", "```"]
        for name, run, ref in zip(classes, shares["class_mix"], shares["reference_class_mix"]):
            lines.append(f"{str(name):>{width}} run {_bar(run or 0)} {_pct(run):>6}  ref {_bar(ref or 0)} {_pct(ref):>6}")
        lines += ["```", "", "Confidence (top-class probability; share of files per 0.1):", "```"]
        for i, (run, ref) in enumerate(zip(_coarse(shares["confidence"]), _coarse(shares["reference_confidence"]))):
            lines.append(f"{i / COARSE_BINS:.1f}-{(i + 1) / COARSE_BINS:.1f} run {_bar(run)} {_pct(run):>6}  "
                         f"ref {_bar(ref)} {_pct(ref):>6}")
        lines.append("```")
    return "\n".join(lines)


def _limits(rows: Sequence[dict[str, Any]]) -> tuple[float, float, float | None]:
    """(JS distance threshold, accuracy drop threshold, reference expected accuracy) of the latest run whose
    report can be read (else `HealthThresholds()`'s and no reference)."""
    from toolchain.health.assess import HealthThresholds

    for row in reversed(rows):
        try:
            report = json.loads(Path(row.get("health_path") or "").read_text())
        except (OSError, ValueError):
            continue
        thresholds = report.get("thresholds") or {}
        reference = (report.get("figures") or {}).get("reference_expected_accuracy")
        return (float(thresholds.get("js_distance", HealthThresholds.js_distance)),
                float(thresholds.get("accuracy_drop", HealthThresholds.accuracy_drop)), reference)
    return HealthThresholds.js_distance, HealthThresholds.accuracy_drop, None


def plot_trend(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """A PNG of expected accuracy (on [0, 1]) and JS distance (from 0) per run (x: finish time), each point
    coloured and labelled by its verdict, with the thresholds drawn: the JS distance that counts as a shifted
    class mix, and the expected accuracies that warn and drift (the reference's minus `accuracy_drop` / 2 and
    `accuracy_drop`, of the latest report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ok": "tab:green", "warn": "tab:orange", "drift": "tab:red"}
    js_limit, drop, reference = _limits(rows)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = list(range(len(rows)))
    for axis, key, title in ((top, "expected_accuracy", "expected accuracy"), (bottom, "js_distance",
                                                                               "class-mix JS distance")):
        values = [r.get(key) for r in rows]
        axis.plot([i for i, v in zip(x, values) if v is not None], [v for v in values if v is not None],
                  color="0.6", linewidth=1)
        for i, (row, value) in enumerate(zip(rows, values)):
            if value is not None:
                verdict = row.get("verdict") or "none"
                axis.scatter(i, value, color=colors.get(verdict, "0.4"), zorder=3)
                axis.annotate(verdict, (i, value), textcoords="offset points", xytext=(0, 6), ha="center",
                              fontsize=7, color=colors.get(verdict, "0.4"))
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
    top.set_ylim(0, 1.05)
    if reference is not None:
        top.axhline(reference, color="0.3", linestyle=":", linewidth=1, label=f"reference {reference:.1%}")
        top.axhline(reference - drop / 2, color="tab:orange", linestyle="--", linewidth=1, label="warn below")
        top.axhline(reference - drop, color="tab:red", linestyle="--", linewidth=1, label="drift below")
        top.legend(loc="lower left", fontsize=7)
    js_values = [r["js_distance"] for r in rows if r.get("js_distance") is not None]
    bottom.set_ylim(0, max([1.5 * js_limit, *(1.1 * v for v in js_values)]))
    bottom.axhline(js_limit, color="tab:red", linestyle="--", linewidth=1, label=f"shifted at {js_limit:g}")
    bottom.legend(loc="upper left", fontsize=7)
    labels = [f"{(r.get('finished_at') or '')[:16]}\n{Path(r.get('folder') or '').name}" for r in rows]
    bottom.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    top.set_title("Model health per folder run (green ok, orange warn, red drift, grey other)")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
