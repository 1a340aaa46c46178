"""Run-folder reports: class names in any script, whole-number epoch axes, prediction counts."""

from __future__ import annotations

import warnings

import numpy as np

from toolchain.training.reports import (
    PredictionRow,
    plot_confusion_matrix,
    plot_training_curves,
    prediction_counts,
    write_predictions_csv,
)


def test_class_names_without_glyphs_plot_without_boxes_or_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Glyph ... missing from font" would fail the test.
        path = plot_confusion_matrix([0, 1, 2], [0, 2, 2], ["狗", "猫", "鸟"], tmp_path / "cm.png", "val")
        plot_confusion_matrix([0, 1], [0, 1], ["dog", "cat"], tmp_path / "latin.png", "val")
    assert path.stat().st_size > 0 and (tmp_path / "latin.png").stat().st_size > 0


def test_epoch_axis_has_whole_number_ticks(tmp_path, monkeypatch):
    import matplotlib.figure

    ticks = []
    real = matplotlib.figure.Figure.savefig

    def keep_ticks(self, *args, **kwargs):
        ticks.extend(t for ax in self.axes for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_ticks)  # Reads the figure; saving still runs.
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": e / 3, "val_acc": e / 3}
               for e in (1, 2, 3)]
    plot_training_curves(history, tmp_path / "curves.png")
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_prediction_counts_read_the_error_column(tmp_path):
    rows = [PredictionRow("a.wav", np.array([0.9, 0.1])), PredictionRow("b.wav", error="EOFError")]
    path = write_predictions_csv(rows, ["x", "y"], tmp_path / "p.csv")
    assert prediction_counts(path) == (1, 1)


def test_curves_show_macro_f1_and_the_best_epoch_and_counts_have_whole_ticks(tmp_path, monkeypatch):
    import matplotlib.figure

    seen = {}
    real = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        seen.setdefault("figures", []).append(
            [([line.get_label() for line in ax.get_lines()], list(ax.get_yticks())) for ax in self.axes])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": e / 3, "val_acc": e / 3,
                "val_macro_f1": e / 4} for e in (1, 2, 3)]
    plot_training_curves(history, tmp_path / "curves.png", best_epoch=2)
    loss, accuracy = seen["figures"][0]
    assert "val macro-F1" in accuracy[0] and "best epoch 2 (macro-F1)" in accuracy[0]
    assert "best epoch 2 (macro-F1)" in loss[0]
    plot_confusion_matrix([0, 1, 1], [0, 1, 0], ["dog", "cat"], tmp_path / "cm.png", "val")
    colorbar_ticks = seen["figures"][1][1][1]  # The colour bar's axis: counts 0..2.
    assert colorbar_ticks and all(float(t).is_integer() for t in colorbar_ticks), colorbar_ticks
