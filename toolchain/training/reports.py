"""Run-folder outputs: metrics.csv, curves and confusion-matrix plots, classification reports, the test
predictions CSV. Every file is written atomically (`toolchain.io.atomic_write`): a killed run never leaves half a
file. (summary.json is written with `toolchain.io.write_json`.)
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.inference.predictions import format_prediction, probability_columns
from toolchain.io import atomic_write, write_text

# train_data_share: fraction of the training pass spent waiting for batches (the feature cache, not the model).
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "val_balanced_acc", "lr",
                  "seconds", "train_data_share")
PREDICTIONS_NAME = "test_predictions_resnet.csv"


def write_metrics_csv(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """One row per epoch with METRIC_COLUMNS."""
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # No display on training machines; must precede the pyplot import.
    import matplotlib.pyplot as plt

    return plt


SELECT_NAMES = {"macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy"}


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path, best_epoch: int | None = None,
                         select_on: str = "macro_f1") -> Path:
    """Loss, and accuracy with validation macro-F1, per epoch, train vs val, side by side; the best epoch (the
    checkpoint kept, chosen on `select_on`) marked by a dashed line in both."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy and macro-F1")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label="val")
        if key == "acc" and all(row.get("val_macro_f1") is not None for row in history):
            ax.plot(epochs, [row["val_macro_f1"] for row in history], marker="s", linestyle=":",
                    label="val macro-F1")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1,
                       label=f"best epoch {best_epoch} ({SELECT_NAMES.get(select_on, select_on)})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # Epochs are whole numbers.
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)


def _save_figure(plt, fig, path: str | Path) -> Path:
    """Lay out, write atomically as PNG, free the figure."""
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def _drawable(texts: Sequence[str]) -> bool:
    """Whether matplotlib's default font has a glyph for every character (class names can be in any script)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap()
    return all(ord(c) in charmap for text in texts for c in text)


def plot_confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str], path: str | Path, title: str
) -> Path:
    """Counts, rows = true class, columns = predicted class."""
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    from matplotlib.ticker import MaxNLocator

    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, ticks=MaxNLocator(integer=True))  # Counts: whole numbers.
    names = list(classes)
    if not _drawable(names):  # Boxes (and a matplotlib warning) otherwise: number them in report order.
        names = [str(i) for i in range(len(classes))]
        title += "\n(classes numbered in the order of the classification report)"
    ax.set_xticks(range(len(classes)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    return _save_figure(plt, fig, path)


def class_metrics(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1 and balanced accuracy (mean per-class recall) over the classes present in `y_true`, and
    the recall of every class (0 for a class with no example): the figures that show what imbalance hides."""
    from sklearn.metrics import f1_score, recall_score

    labels = list(range(n_classes))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "balanced_accuracy": 0.0, "recall": [0.0] * n_classes}
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    present = np.isin(labels, y_true)
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=[c for c in labels if present[c]], average="macro",
                                   zero_division=0)),
        "balanced_accuracy": float(recall[present].mean()),
        "recall": [float(r) for r in recall],
    }


def write_classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str], path: str | Path, header: str = ""
) -> Path:
    """scikit-learn's per-class precision/recall/F1 table, every class listed even when absent."""
    from sklearn.metrics import classification_report

    text = classification_report(
        y_true, y_pred, labels=list(range(len(classes))), target_names=list(classes), digits=4, zero_division=0
    )
    summary = class_metrics(y_true, y_pred, len(classes))
    text += (f"\n   balanced accuracy {summary['balanced_accuracy']:.4f} (mean per-class recall)"
             f"\n   macro-F1 over the classes present {summary['macro_f1']:.4f}\n")
    return write_text((header + "\n\n" if header else "") + text, path)


def write_split_reports(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str], run_dir: str | Path, prefix: str,
    title: str,
) -> dict[str, Path]:
    """`<prefix>confusion_matrix.png` and `<prefix>classification_report.txt` for one split (val: "", test: "test_")."""
    run_dir = Path(run_dir)
    key = prefix or "val_"
    return {
        f"{key}confusion_matrix": plot_confusion_matrix(
            y_true, y_pred, classes, run_dir / f"{prefix}confusion_matrix.png", title),
        f"{key}classification_report": write_classification_report(
            y_true, y_pred, classes, run_dir / f"{prefix}classification_report.txt", title),
    }


@dataclass(frozen=True)
class PredictionRow:
    """One file's prediction: `probabilities` over the classes (softmax), or `error` when it could not be read."""

    filename: str
    probabilities: np.ndarray | None = None
    error: str | None = None


def prediction_columns(classes: Sequence[str]) -> list[str]:
    return ["file", "label", "confidence", *probability_columns(classes), "error"]


def write_predictions_csv(rows: Sequence[PredictionRow], classes: Sequence[str], path: str | Path) -> Path:
    """The predictions CSV shared by `train --test` and `predict`.

    Columns (the vocabulary of `toolchain score`'s CSVs): file, label (the predicted class), confidence (max
    probability), prob_<class> per class, error (empty unless the file failed to decode; then the prediction
    columns are empty).
    """
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(prediction_columns(classes))
        for row in rows:
            if row.probabilities is None:
                writer.writerow([row.filename, "", "", *[""] * len(classes), row.error or "unknown error"])
                continue
            label, confidence, probs = format_prediction(row.probabilities, classes)
            writer.writerow([row.filename, label, confidence, *probs, ""])
    return Path(path)


def prediction_counts(path: str | Path) -> tuple[int, int]:
    """(predicted, failed) rows of a predictions CSV written by `write_predictions_csv`."""
    with Path(path).open(newline="") as f:
        errors = [bool(row["error"]) for row in csv.DictReader(f)]
    return len(errors) - sum(errors), sum(errors)
