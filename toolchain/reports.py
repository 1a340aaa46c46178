"""Run-folder outputs: metrics.csv, curves and confusion-matrix plots, classification reports, prediction CSVs,
summary.json. Every file is written atomically (temporary file + rename): a killed run never leaves half a file.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# train_data_share: fraction of the training pass spent waiting for batches (the feature cache, not the model).
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "train_data_share")
PREDICTIONS_NAME = "test_predictions_resnet.csv"


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; outputs should be readable like any other file.
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_metrics_csv(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """One row per epoch with METRIC_COLUMNS."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # No display on training machines; must precede the pyplot import.
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train vs val, side by side."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label="val")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save_figure(plt, fig, path)


def _save_figure(plt, fig, path: str | Path) -> Path:
    """Lay out, write atomically as PNG, free the figure."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def plot_confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str], path: str | Path, title: str
) -> Path:
    """Counts, rows = true class, columns = predicted class."""
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    return _save_figure(plt, fig, path)


def write_classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str], path: str | Path, header: str = ""
) -> Path:
    """scikit-learn's per-class precision/recall/F1 table, every class listed even when absent."""
    from sklearn.metrics import classification_report

    text = classification_report(
        y_true, y_pred, labels=list(range(len(classes))), target_names=list(classes), digits=4, zero_division=0
    )
    with atomic_path(path) as tmp:
        tmp.write_text((header + "\n\n" if header else "") + text)
    return Path(path)


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
    return ["filename", "predicted_label", "confidence", *[f"prob_{c}" for c in classes], "error"]


def write_predictions_csv(rows: Sequence[PredictionRow], classes: Sequence[str], path: str | Path) -> Path:
    """The predictions CSV shared by `train --test` and `predict`.

    Columns: filename, predicted_label, confidence (max probability), prob_<class> per class, error (empty
    unless the file failed to decode; then the prediction columns are empty).
    """
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(prediction_columns(classes))
        for row in rows:
            if row.probabilities is None:
                writer.writerow([row.filename, "", "", *[""] * len(classes), row.error or "unknown error"])
                continue
            probs = np.asarray(row.probabilities, dtype=np.float64)
            best = int(np.argmax(probs))
            writer.writerow([row.filename, classes[best], f"{probs[best]:.6f}", *[f"{p:.6f}" for p in probs], ""])
    return Path(path)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)
