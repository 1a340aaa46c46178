"""Training: it learns on a speaker-held-out split, writes every run output, checkpoints load safely, resume works.

Audio: Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from support import write_fsdd_manifest

from toolchain.audio.config import FeatureConfig
from toolchain.errors import OutputPathError, TrainingError
from toolchain.io import file_sha256
from toolchain.training.checkpoint import load_checkpoint, save_checkpoint
from toolchain.training.config import TrainConfig
from toolchain.training.reports import METRIC_COLUMNS, PREDICTIONS_NAME, class_metrics, prediction_columns
from toolchain.training.train import default_run_dir, scheduled_lr, train

RUN_FILES = ("resnet_18_model.pth", "resnet_18_last.pth", "metrics.csv", "training_curves.png",
             "confusion_matrix.png", "classification_report.txt", "test_confusion_matrix.png",
             "test_classification_report.txt", PREDICTIONS_NAME, "summary.json")


def _speaker(path: str) -> str:
    return Path(path).stem.split("_")[1]  # FSDD names: {digit}_{speaker}_{take}.wav


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_learns_on_a_held_out_speaker(trained_checkpoint):
    checkpoint = load_checkpoint(trained_checkpoint)
    val_speakers = {_speaker(p) for p in checkpoint.val_files}
    listed = [r["filename"] for r in _rows(Path(checkpoint.train_args["data"])) if "broken" not in r["filename"]]
    train_speakers = {_speaker(p) for p in listed if p not in set(checkpoint.val_files)}
    assert len(val_speakers) == 1 and not val_speakers & train_speakers  # The split held a whole speaker out.
    assert len(checkpoint.val_files) == 80  # One speaker x 10 digits x 8 takes.
    assert checkpoint.metrics["val_acc"] > 0.3, checkpoint.metrics  # Chance is 0.1 over ten digits.


def test_run_folder_has_every_output(trained_checkpoint):
    run = trained_checkpoint.parent
    assert all((run / name).is_file() for name in RUN_FILES), sorted(p.name for p in run.iterdir())
    assert not list(run.glob(".*tmp*"))  # Atomic writes leave no temporaries.

    metrics = _rows(run / "metrics.csv")
    assert list(metrics[0]) == list(METRIC_COLUMNS)
    assert [int(r["epoch"]) for r in metrics] == list(range(1, len(metrics) + 1))
    assert all(0 <= float(r[k]) <= 1 for r in metrics for k in ("train_acc", "val_acc"))
    assert all(float(r["lr"]) > 0 and float(r["seconds"]) > 0 for r in metrics)
    assert all(0 < float(r["train_data_share"]) < 1 for r in metrics)  # Loader waits are timed, never all of it.

    for name in ("training_curves.png", "confusion_matrix.png", "test_confusion_matrix.png"):
        image = matplotlib.image.imread(run / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 200
    classes = load_checkpoint(trained_checkpoint).classes
    for name in ("classification_report.txt", "test_classification_report.txt"):
        text = (run / name).read_text()
        assert all(c in text for c in classes) and "accuracy" in text


def test_test_predictions_csv(trained_checkpoint):
    checkpoint = load_checkpoint(trained_checkpoint)
    rows = _rows(trained_checkpoint.parent / PREDICTIONS_NAME)
    listed = [r["filename"] for r in _rows(Path(checkpoint.train_args["test"]))]
    assert list(rows[0]) == prediction_columns(checkpoint.classes)
    assert [r["file"] for r in rows] == listed  # Every test file, in manifest order.
    errors = [r for r in rows if r["error"]]
    assert [Path(r["file"]).name for r in errors] == ["broken.wav"]
    assert errors[0]["label"] == "" and "broken.wav" not in errors[0]["error"]  # The cause, not the name.
    for row in rows:
        if row["error"]:
            continue
        probs = np.array([float(row[f"prob_{c}"]) for c in checkpoint.classes])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == checkpoint.classes[int(probs.argmax())]
        assert float(row["confidence"]) == pytest.approx(probs.max(), abs=1e-6)


def _assert_plain(value, where="train_args"):
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), where
            _assert_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _assert_plain(v, f"{where}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{where} is {type(value).__name__}"


def test_checkpoints_are_plain_and_complete(trained_checkpoint):
    run = trained_checkpoint.parent
    best = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    last = torch.load(run / "resnet_18_last.pth", map_location="cpu", weights_only=True)
    _assert_plain(best["train_args"])
    assert best["arch"] == "resnet18" and best["classes"] == sorted(best["classes"]) and len(best["classes"]) == 10
    assert best["feature_fingerprint"] and all(Path(p).is_absolute() for p in best["val_files"])
    assert {"optimizer", "scheduler", "best_val_acc", "best_epoch", "epochs_without_improvement"} <= set(last)
    assert last["best_epoch"] == best["epoch"] and last["best_val_acc"] == best["metrics"]["val_acc"]
    assert len(last["history"]) == last["epoch"]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["checkpoint_sha256"] == file_sha256(trained_checkpoint)
    assert summary["best_val_acc"] == pytest.approx(best["metrics"]["val_acc"])
    assert summary["num_val"] == len(best["val_files"]) and summary["grouped_split"] is True
    assert [Path(f["file"]).name for f in summary["undecodable_files"]] == ["broken.wav"]
    assert all(Path(p).is_file() for p in summary["outputs"].values())


class Recorder:
    """A ProgressReporter that remembers which bars were started."""

    def __init__(self):
        self.started: list[str] = []

    def start(self, key, description, total):
        self.started.append(description)

    def advance(self, key, amount=1, description=None):
        pass

    def finish(self, key):
        pass


def test_resume_starts_at_the_next_epoch(tiny, tiny_run, tmp_path):
    straight, snapshot = tiny_run
    recorder = Recorder()
    resumed = train(TrainConfig(**tiny, epochs=3, out=str(tmp_path / "resumed"),
                                resume=str(snapshot / "resnet_18_last.pth")), progress=recorder)
    assert resumed.epochs_run == 1
    epoch_bars = [d for d in recorder.started if d.startswith("epoch")]
    assert epoch_bars[0] == "epoch 3/3 train" and all(d.startswith("epoch 3/3 ") for d in epoch_bars)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == straight.history[:2]
    assert len(_rows(resumed.run_dir / "metrics.csv")) == 3
    assert resumed.best_checkpoint.is_file()  # Carried over from the snapshot or improved in epoch 3.
    assert load_checkpoint(resumed.last_checkpoint).epoch == 3
    # Same shuffle, same optimizer state: epoch 3 after a resume is epoch 3 of an unbroken run.
    for key in ("train_loss", "val_loss"):
        assert resumed.history[2][key] == pytest.approx(straight.history[2][key], rel=1e-3)


def test_resume_after_early_stop_trains_nothing(tiny, tiny_run, tmp_path):
    _, snapshot = tiny_run
    run = tmp_path / "stopped"
    shutil.copytree(snapshot, run)
    raw = torch.load(run / "resnet_18_last.pth", map_location="cpu", weights_only=True)
    raw["epochs_without_improvement"] = 6
    save_checkpoint(raw, run / "resnet_18_last.pth")
    again = train(TrainConfig(**tiny, epochs=5, resume=str(run / "resnet_18_last.pth")))
    assert again.run_dir == run  # No --out: continue in the checkpoint's folder.
    assert (again.epochs_run, again.stopped_early) == (0, True)
    assert (run / "summary.json").is_file() and (run / "confusion_matrix.png").is_file()


def test_resume_refuses_a_best_checkpoint_and_other_arch(tiny, tiny_run):
    straight, snapshot = tiny_run
    with pytest.raises(TrainingError, match="no optimizer state.*resnet_18_last.pth"):
        train(TrainConfig(**tiny, epochs=4, resume=str(straight.best_checkpoint)))
    with pytest.raises(TrainingError, match="--arch resnet18"):
        train(TrainConfig(**{**tiny, "arch": "resnet34"}, epochs=4, resume=str(snapshot / "resnet_18_last.pth")))


@pytest.mark.parametrize("field,value", [("epochs", 0), ("lr", -1.0), ("val_fraction", 1.0), ("device", "tpu"),
                                         ("batch_size", 0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(TrainingError, match=field if field != "device" else "tpu"):
        TrainConfig(data="x", **{field: value})


def test_config_defaults_are_the_seed_recipe_plus_what_small_data_needs():
    config = TrainConfig(data="x").resolved()
    assert (config.batch_size, config.lr, config.epochs, config.label_smoothing, config.patience, config.seed,
            config.val_fraction, config.arch, config.weights, config.schedule) == (
        16, 1e-4, 40, 0.1, 6, 42, 0.2, "resnet152", "imagenet", "plateau")
    assert (config.augment, config.select_on, config.warmup_epochs, config.zero_init_residual) == (
        True, "macro_f1", 0, False)
    _assert_plain(config.to_train_args())
    scratch = TrainConfig(data="x", weights="none").resolved()  # From scratch a deep ResNet needs another start.
    assert (scratch.lr, scratch.schedule, scratch.warmup_epochs, scratch.zero_init_residual) == (
        1e-3, "cosine", 2, True)
    shallow = TrainConfig(data="x", weights="none", arch="resnet18").resolved()  # Measured better on plateau.
    assert (shallow.lr, shallow.schedule, shallow.warmup_epochs, shallow.zero_init_residual) == (
        1e-3, "plateau", 0, False)
    chosen = TrainConfig(data="x", weights="none", lr=3e-4, schedule="plateau", warmup_epochs=0,
                         zero_init_residual=False).resolved()
    assert (chosen.lr, chosen.schedule, chosen.warmup_epochs, chosen.zero_init_residual) == (
        3e-4, "plateau", 0, False)  # What the user says wins.


@pytest.mark.parametrize("field,value", [("balance", "oversample"), ("select_on", "loss"), ("schedule", "step"),
                                         ("mixed_precision", "fp16"),
                                         ("mixup_alpha", -0.1), ("time_shift", 1.0), ("spec_masks", -1)])
def test_config_names_the_bad_recipe_setting(field, value):
    with pytest.raises(TrainingError, match=field):
        TrainConfig(data="x", **{field: value})


def test_learning_rate_warms_up_then_follows_its_schedule():
    cosine = TrainConfig(data="x", weights="none", epochs=10).resolved()  # resnet152 from scratch.
    rates = [scheduled_lr(cosine, e) for e in range(1, 11)]
    assert rates[:2] == [5e-4, 1e-3]  # Linear warm-up over 2 epochs to lr.
    assert rates[2] == pytest.approx(1e-3) and all(a > b for a, b in zip(rates[2:], rates[3:]))
    assert rates[-1] < 0.05 * 1e-3  # Half a cosine down towards 0 at the last epoch.
    plateau = TrainConfig(data="x", warmup_epochs=1).resolved()
    assert scheduled_lr(plateau, 1) == 1e-4 and scheduled_lr(plateau, 2) is None  # Then ReduceLROnPlateau's.


def test_class_metrics_show_what_accuracy_hides():
    # 8 of class 0 all right, 2 of class 1 all wrong: 80 % accuracy, 50 % balanced accuracy.
    quality = class_metrics([0] * 8 + [1] * 2, [0] * 10, 3)
    assert quality["accuracy"] == 0.8 and quality["balanced_accuracy"] == 0.5
    assert quality["recall"] == [1.0, 0.0, 0.0]  # Class 2 has no example: recall 0, left out of the means.
    assert quality["macro_f1"] == pytest.approx((2 * 0.8 / 1.8 + 0.0) / 2)


def test_a_balanced_augmented_run_records_macro_f1_and_selects_on_it(tiny, tmp_path):
    result = train(TrainConfig(**tiny, epochs=3, out=str(tmp_path / "run"), balance="sampler", augment=True,
                               select_on="macro_f1"))
    history = _rows(result.run_dir / "metrics.csv")
    assert all(0 <= float(r["val_macro_f1"]) <= 1 and 0 <= float(r["val_balanced_acc"]) <= 1 for r in history)
    f1 = [float(r["val_macro_f1"]) for r in history]
    assert result.best_epoch == 1 + f1.index(max(f1))  # The first epoch with the best macro-F1.
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["select_on"] == "macro_f1" and set(summary["val_recall"]) == set(summary["classes"])
    args = load_checkpoint(result.best_checkpoint).train_args
    assert (args["augment"], args["balance"], args["mixup_alpha"], args["lr"], args["schedule"]) == (
        True, "sampler", 0.2, 1e-3, "plateau")  # The recipe as it ran, Nones resolved.
    assert "balanced accuracy" in (result.run_dir / "classification_report.txt").read_text()


def test_bf16_run_on_cpu_records_it_and_saves_fp32_weights(tiny, tmp_path, monkeypatch):
    import toolchain.training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_isa", lambda: {"bf16": True})  # The hardware probe: bf16 runs anywhere.
    result = train(TrainConfig(**tiny, epochs=1, out=str(tmp_path / "run"), mixed_precision="bf16"))
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint.train_args["mixed_precision"] == "bf16"
    assert {t.dtype for t in checkpoint.state_dict.values() if t.is_floating_point()} == {torch.float32}


def test_default_run_dir_is_a_fresh_utc_stamp(tmp_path):
    first = default_run_dir(tmp_path)
    assert re.fullmatch(r"\d{8}T\d{6}Z", first.name)
    first.mkdir()
    second = default_run_dir(tmp_path)
    assert second != first and not second.exists()


def test_resume_on_other_data_is_refused_unless_asked_and_then_keeps_old_val_out(tiny, tiny_run, tmp_path,
                                                                                  fsdd_dir):
    _, snapshot = tiny_run
    last = str(snapshot / "resnet_18_last.pth")
    old_val = set(load_checkpoint(last).val_files)
    # The same 30 clips plus another speaker's: same classes, other data, so another split.
    bigger = write_fsdd_manifest(fsdd_dir, tmp_path / "bigger.csv", speakers={"george", "jackson", "lucas", "theo"},
                                 takes=range(1))
    other = {**tiny, "data": str(bigger)}
    with pytest.raises(TrainingError, match="other data than --data .*--resume-with-new-data"):
        train(TrainConfig(**other, epochs=3, out=str(tmp_path / "refused"), resume=last))
    with pytest.raises(TrainingError, match="--seed 42"):
        train(TrainConfig(**{**tiny, "seed": 7}, epochs=3, out=str(tmp_path / "refused"), resume=last))
    assert not (tmp_path / "refused").exists()

    notes: list[str] = []
    resumed = train(TrainConfig(**other, epochs=3, out=str(tmp_path / "new-data"), resume=last,
                                resume_with_new_data=True), on_note=notes.append)
    assert resumed.epochs_run == 1
    assert any(f"{len(old_val)} of the checkpoint's {len(old_val)} validation files" in n for n in notes), notes
    assert any(n.startswith("resuming ") and "at epoch 3 of 3" in n for n in notes), notes
    assert old_val <= set(load_checkpoint(resumed.last_checkpoint).val_files)  # Never trained on.


def test_resume_on_new_data_measures_the_best_on_the_new_validation_split(tiny, tiny_run, tmp_path, fsdd_dir):
    """The carried best score was measured on the checkpoint's validation split: on new data the best checkpoint is
    measured again on the new split before training, and that is the figure to beat and the one reported."""
    _, snapshot = tiny_run
    run = tmp_path / "run"
    shutil.copytree(snapshot, run)
    last = run / "resnet_18_last.pth"
    raw = torch.load(last, map_location="cpu", weights_only=True)
    raw["best_val_acc"] = raw["best_score"] = 1.0  # As if the old split had been easy: a score no new epoch reaches.
    save_checkpoint(raw, last)
    bigger = write_fsdd_manifest(fsdd_dir, tmp_path / "bigger.csv", speakers={"george", "jackson", "lucas", "theo"},
                                 takes=range(1))
    notes: list[str] = []
    resumed = train(TrainConfig(**{**tiny, "data": str(bigger)}, epochs=3, resume=str(last),
                                resume_with_new_data=True), on_note=notes.append)
    summary = json.loads((run / "summary.json").read_text())
    assert resumed.epochs_run == 1 and resumed.best_val_acc < 1.0
    # The best checkpoint's accuracy on this run's validation split, whichever epoch it is.
    assert summary["best_val_acc"] == pytest.approx(summary["final_val_acc"]) == resumed.best_val_acc
    remeasured = [n for n in summary["notes"] if n.startswith("new data: the best checkpoint")]
    assert len(remeasured) == 1 and "(was 1.000 on the checkpoint's)" in remeasured[0] and remeasured[0] in notes


def test_an_existing_run_folder_is_refused_unless_overwrite(tiny, tiny_run, tmp_path):
    straight, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(TrainingError, match=r"already holds a training run .*--resume .*resnet_18_last.pth.*--overwrite"):
        train(TrainConfig(**tiny, epochs=1, out=str(run)))
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    again = train(TrainConfig(**tiny, epochs=1, out=str(run), overwrite=True))
    assert again.epochs_run == 1 and load_checkpoint(again.last_checkpoint).epoch == 1


def test_an_unwritable_out_is_refused_before_any_work(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = tmp_path / "cache"
    with pytest.raises(OutputPathError, match=f"--out {blocker / 'run'} is inside {blocker}, which is a file"):
        train(TrainConfig(**{**tiny, "cache_dir": str(cache)}, epochs=1, out=str(blocker / "run")))
    assert not cache.exists()  # Refused before a single feature was computed.


@pytest.mark.slow  # About a minute of ResNet152 training on 2 cores.
def test_resnet152_from_scratch_leaves_chance_within_a_few_epochs(fsdd_dir, tmp_path):
    """The from-scratch defaults (lr 1e-3, warm-up, cosine, zero-initialized residual branches) make the deepest
    ResNet learn at once: 4 epochs on 200 clips of 1 s put its training accuracy far above the 10 % of chance."""
    manifest = write_fsdd_manifest(fsdd_dir, tmp_path / "small.csv", speakers={"george", "jackson", "lucas",
                                                                                "nicolas"}, takes=range(5))
    result = train(TrainConfig(data=str(manifest), arch="resnet152", weights="none", epochs=4, batch_size=16,
                               out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), num_workers=0,
                               feature_config=FeatureConfig(clip_seconds=1.0), augment=False,
                               bn_recalibration_batches=8))
    args = load_checkpoint(result.best_checkpoint).train_args
    assert (args["lr"], args["schedule"], args["warmup_epochs"], args["zero_init_residual"]) == (
        1e-3, "cosine", 2, True)
    train_acc = [h["train_acc"] for h in result.history]
    assert max(train_acc) > 0.3, result.history  # Chance is 0.1.
    assert max(h["val_acc"] for h in result.history) > 0.15, result.history


def test_a_weight_averaged_run_selects_and_saves_the_average_and_resumes_the_raw_weights(tiny, tmp_path):
    result = train(TrainConfig(**tiny, epochs=1, out=str(tmp_path / "run"), ema_half_life=0.5))
    best = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    weight = "fc.weight"
    assert torch.equal(best["state_dict"][weight], averaged[weight])  # Epoch 1 is the best: the average is saved.
    assert not torch.equal(last["state_dict"][weight], averaged[weight])  # Resume continues from the raw weights.
    assert best["train_args"]["ema_half_life"] == 0.5
    resumed = train(TrainConfig(**tiny, epochs=2, out=str(tmp_path / "resumed"), ema_half_life=0.5,
                                resume=str(result.last_checkpoint)))
    assert [r["epoch"] for r in resumed.history] == [1, 2]


@pytest.mark.parametrize("augment,stops_after", [(False, 2), (True, 4)])
def test_no_early_stop_is_judged_while_augmentation_ramps_in(tiny, tmp_path, augment, stops_after):
    # At lr 1e-9 nothing improves after epoch 1: patience 1 stops the first epoch it may judge.
    fields = {**tiny, "lr": 1e-9}
    result = train(TrainConfig(**fields, epochs=6, patience=1, out=str(tmp_path / "run"), augment=augment,
                               augment_from_epoch=3, augment_ramp_epochs=2))
    assert result.stopped_early and result.epochs_run == stops_after
    assert result.best_epoch == 1
