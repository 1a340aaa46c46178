"""Fine-tune a ResNet on cached log-mel images: the reference notebook recipe as named, testable functions.

`train(config)`: load data -> cache features (parallel, once per file) -> leak-free split -> epochs of
`train_one_epoch` + `evaluate` with AdamW, label smoothing, ReduceLROnPlateau on val accuracy and early stopping ->
best and last checkpoints every epoch -> reports of the best model (toolchain.training.reports).
`--resume PATH` (a `*_last.pth`) restores weights, optimizer, scheduler and early-stopping state and starts at the
next epoch; each epoch's shuffle is seeded by (seed, epoch), so a resumed run sees the batches an unbroken one would.
On new data the best checkpoint is first re-measured on the new validation split (toolchain.training.resume).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolchain.errors import TrainingError
from toolchain.health.reference import build_reference
from toolchain.io import check_output_dir, file_sha256, write_json
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.registry.tracking import Tracker
from toolchain.training import reports
from toolchain.training.augment import NONE as NO_AUGMENTATION
from toolchain.training.augment import Augmentation
from toolchain.training.augment import strength as augment_strength
from toolchain.training.cache import FeatureCache
from toolchain.training.checkpoint import make_payload, save_checkpoint
from toolchain.training.config import TrainConfig, best_checkpoint_name, last_checkpoint_name
from toolchain.training.data import content_hashes, data_fingerprint
from toolchain.training.epochs import (
    Evaluation,
    evaluate,
    recalibrate_batchnorm,
    train_one_epoch,
    weight_average,
)
from toolchain.training.model import build_model
from toolchain.training.prepared import (
    PreparedData,
    load_labelled,
    loader_for,
    prepare_data,
)
from toolchain.training.resume import StopState, carried_state, carry_best, check_resume, remeasure_best
from toolchain.training.runtime import (
    Runtime,
    resolve_runtime,
    seed_everything,
)

__all__ = ["Evaluation", "TrainConfig", "TrainResult", "evaluate", "train", "train_one_epoch"]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced. `outputs` maps a name (metrics, curves, ...) to its file in `run_dir`."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_val_acc: float
    epochs_run: int  # Epochs trained by this call (a resumed run counts only its own).
    stopped_early: bool
    history: list[dict[str, float]]  # Every epoch so far, resumed ones included.
    failures: dict[str, str]  # Undecodable files (path -> cause), excluded from training.
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # Warnings and notices about the data, given before training.


def default_run_dir(root: Path = Path("artifacts") / "runs") -> Path:
    """`<root>/<UTC YYYYmmddTHHMMSSZ>`, with a `-2`, `-3`... suffix when two runs start in the same second."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = root / stamp, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}-{n}"
    return candidate


def run_dir_for(config: TrainConfig) -> Path:
    """The run folder: `out`, else the resumed checkpoint's folder, else a fresh `artifacts/runs/<UTC stamp>`."""
    return Path(config.out or (Path(config.resume).parent if config.resume else default_run_dir())).absolute()


def _refuse_existing_run(run_dir: Path) -> None:
    earlier = sorted(p.name for pattern in ("resnet_*_model.pth", "resnet_*_last.pth") for p in run_dir.glob(pattern))
    if earlier:
        last = next((name for name in earlier if name.endswith("_last.pth")), earlier[0])
        raise TrainingError(f"--out {run_dir} already holds a training run ({', '.join(earlier)}): pass another "
                            f"--out, --resume {run_dir / last} to continue it, or --overwrite to replace it")


def scheduled_lr(config: TrainConfig, epoch: int) -> float | None:
    """The learning rate `epoch` (1-based) starts with when the schedule sets it: linear warm-up over
    `warmup_epochs`, then (cosine) half a cosine from `lr` down to 0 at the last epoch. None: plateau after
    warm-up, where ReduceLROnPlateau owns the rate."""
    base, warmup = float(config.lr), int(config.warmup_epochs or 0)
    if epoch <= warmup:
        return base * epoch / warmup
    if config.schedule == "cosine":
        span = max(1, config.epochs - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * (epoch - warmup - 1) / span))
    return None


def _augmentation(config: TrainConfig) -> Augmentation:
    if not config.augment:
        return NO_AUGMENTATION
    return Augmentation(time_shift=config.time_shift, time_masks=config.spec_masks,
                        freq_masks=config.spec_masks, mixup_alpha=config.mixup_alpha)


def _class_weights(config: TrainConfig, data: PreparedData, classes: list[str],
                   runtime: Runtime) -> torch.Tensor | None:
    """Inverse-frequency loss weights (mean 1) over the training split, for `balance="weights"`."""
    if config.balance != "weights":
        return None
    counts = Counter(s.label for s in data.train)
    weights = torch.tensor([len(data.train) / (len(classes) * max(1, counts[c])) for c in classes])
    return weights.to(runtime.device)


def train(
    config: TrainConfig,
    progress: ProgressReporter | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    tracker: Tracker | None = None,
) -> TrainResult:
    """Run the recipe end to end; `on_epoch` receives each epoch's metrics row and `on_note` each warning or
    notice, before training where it can (the CLI prints both). `tracker` (`toolchain.registry.tracking`) logs the
    run to MLflow: parameters and data fingerprint at the start, every epoch's metrics, the outputs at the end; a
    failed or interrupted run ends as such there too.

    Every check that can be made before work starts is: the run folder is writable and holds no earlier run
    (unless `overwrite` or `resume`), the data is readable and consistent, a resume fits this data.
    """
    progress = progress or NullProgress()
    note = on_note or (lambda message: None)
    config = config.resolved()  # lr, schedule, warm-up, zero-init: decided by the starting weights, recorded.
    runtime = resolve_runtime(config.device, mixed_precision=config.mixed_precision)
    run_dir = check_output_dir(run_dir_for(config), "--out")
    if not config.resume and not config.overwrite:
        _refuse_existing_run(run_dir)
    notes: list[str] = []
    samples, test_samples, classes = load_labelled(config.data, config.test, notes)
    for message in notes:
        note(message)
    hashes = content_hashes(samples + test_samples)
    fingerprint = data_fingerprint(samples, hashes)
    resumed = check_resume(Path(config.resume), config, classes, fingerprint) if config.resume else None
    raw = resumed.raw if resumed else None

    tracker = tracker or Tracker(enabled=False)
    tracker.start(run_dir, {**config.to_train_args(), "feature_config": config.feature_config.to_dict()},
                  {"data_fingerprint": fingerprint, "arch": config.arch, "weights": str(config.weights),
                   "classes": ",".join(classes)[:4000], "resumed_from": str(config.resume or "")})
    try:
        seed_everything(config.seed)  # The fresh fc (and the whole net with --weights none) starts identically.
        model = build_model(config.arch, len(classes), weights="none" if raw else config.weights,
                            zero_init_residual=bool(config.zero_init_residual))
        model = model.to(runtime.device, memory_format=runtime.memory_format)
        new_data = raw is not None and raw.get("data_fingerprint") != fingerprint
        held_out = resumed.val_files if new_data else ()
        data = prepare_data(samples, test_samples, classes, FeatureCache(config.cache_dir, config.feature_config),
                            val_fraction=config.val_fraction, seed=config.seed, num_workers=config.num_workers,
                            progress=progress, hashes=hashes, keep_out_of_training=held_out)
        for message in data.notes:
            note(message)

        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience)
        scaler = runtime.grad_scaler()
        criterion = nn.CrossEntropyLoss(weight=_class_weights(config, data, classes, runtime),
                                        label_smoothing=config.label_smoothing)
        eval_criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        augmentation = _augmentation(config)
        generator = torch.Generator()
        train_loader = loader_for(data, data.train, config.batch_size, runtime, generator,
                                  balanced=config.balance == "sampler")
        val_loader = loader_for(data, data.val, config.batch_size, runtime)
        best_path, last_path = run_dir / best_checkpoint_name(config.arch), run_dir / last_checkpoint_name(config.arch)
        state, start_epoch = StopState(), 1
        ema = weight_average(model, config.ema_half_life, len(train_loader))
        judged = ema.module if ema is not None else model  # What is evaluated, selected and saved as best.
        if raw is not None:
            if ema is not None and raw.get("ema"):
                ema.load_state_dict(raw["ema"])
            for part, saved in ((model, raw["state_dict"]), (optimizer, raw["optimizer"]),
                                (scheduler, raw["scheduler"]), (scaler, raw.get("scaler"))):
                if saved:
                    part.load_state_dict(saved)
            state, start_epoch = carried_state(raw), int(raw["epoch"]) + 1
            note(f"resuming {config.resume} at epoch {start_epoch} of {config.epochs} (best so far: epoch "
                 f"{state.best_epoch}, val accuracy {state.best_val_acc:.3f} on the checkpoint's validation split)")
            if not carry_best(Path(config.resume), run_dir, best_path.name):
                state.best_val_acc = state.best_score = -1.0  # No earlier best to carry: the first resumed one is.
            elif new_data:  # The carried score is from another validation split: measure the best on this one.
                notes.append(remeasure_best(state, best_path, model, val_loader, eval_criterion, runtime, progress,
                                            config.select_on, scheduler))
                note(notes[-1])
        epochs_run, stopped_early = 0, state.epochs_without_improvement >= config.patience
        for epoch in range(start_epoch, config.epochs + 1):
            if stopped_early:
                break
            started = time.perf_counter()
            generator.manual_seed(config.seed * 1_000_003 + epoch)  # Resumable shuffle: depends on epoch only.
            torch.manual_seed(config.seed * 1_000_033 + epoch)  # Augmentation and random windows, per epoch too.
            scheduled = scheduled_lr(config, epoch)
            if scheduled is not None:
                for group in optimizer.param_groups:
                    group["lr"] = scheduled
            lr = optimizer.param_groups[0]["lr"]
            tag = f"epoch {epoch}/{config.epochs}"
            strength = augment_strength(epoch, config.augment_from_epoch, config.augment_ramp_epochs)
            # Until augmentation is at full strength the recipe is still changing: a dip then is no plateau.
            settling = augmentation.active and strength < 1.0
            stats = train_one_epoch(model, train_loader, criterion, optimizer, runtime, scaler, progress, f"{tag} train",
                                    augmentation.scaled(strength), len(classes),
                                    on_step=(lambda: ema.update_parameters(model)) if ema is not None else None)
            recalibrate_batchnorm(judged, train_loader, runtime, progress, config.bn_recalibration_batches,
                                  f"{tag} batchnorm statistics")
            val = evaluate(judged, val_loader, eval_criterion, runtime, progress, f"{tag} val")
            quality = reports.class_metrics(val.targets, val.predictions, len(classes))
            score = quality[config.select_on]
            if config.schedule == "plateau" and epoch > (config.warmup_epochs or 0) and not settling:
                scheduler.step(score)
            row = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.accuracy, "val_loss": val.loss,
                   "val_acc": val.accuracy, "val_macro_f1": quality["macro_f1"],
                   "val_balanced_acc": quality["balanced_accuracy"], "lr": lr,
                   "seconds": round(time.perf_counter() - started, 3), "train_data_share": round(stats.data_share, 4)}
            state.history.append(row)
            improved = score > state.best_score
            if improved:
                state.best_val_acc, state.best_epoch, state.epochs_without_improvement = val.accuracy, epoch, 0
                state.best_score = score
            elif not settling:
                state.epochs_without_improvement += 1
            stopped_early = state.epochs_without_improvement >= config.patience
            payload = make_payload(judged, config.arch, classes, config.feature_config, epoch=epoch,
                                   metrics={k: v for k, v in row.items() if k != "epoch"},
                                   train_args={**config.to_train_args(), "out": str(run_dir)}, val_files=data.val_paths,
                                   data_fingerprint=fingerprint, health_reference=_health_reference(val, epoch))
            if improved:
                save_checkpoint(payload, best_path)
            resumable = {"state_dict": model.state_dict(), "ema": ema.state_dict()} if ema is not None else {}
            save_checkpoint({**payload, **resumable, "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             **dataclasses.asdict(state)}, last_path)
            reports.write_metrics_csv(state.history, run_dir / "metrics.csv")
            epochs_run += 1
            tracker.epoch(row)
            if on_epoch is not None:
                on_epoch(row)
        if not best_path.is_file():
            raise TrainingError(f"no best checkpoint in {run_dir}: nothing was trained; raise --epochs above "
                                f"{start_epoch - 1}")

        outputs, scores = _final_reports(model, best_path, data, eval_criterion, runtime, progress, run_dir,
                                         state.history, config.select_on)
        result = TrainResult(run_dir, best_path, last_path, state.best_epoch, state.best_val_acc, epochs_run,
                             stopped_early, state.history, dict(data.failures), outputs, (*notes, *data.notes))
        summary = _summary(result, config, data, scores, runtime)
        outputs["summary"] = write_json(summary, run_dir / "summary.json")
        tracker.finish(outputs, {k: v for k, v in summary.items() if k not in ("train_args", "split")})
        return result
    except BaseException as exc:
        tracker.fail(exc)
        raise


def _health_reference(val: Evaluation, epoch: int) -> dict[str, Any] | None:
    """What this epoch's model outputs on the validation windows (carried into the ONNX model by export, where
    every scoring run's health report compares against it); None without validation windows."""
    if val.window_probabilities is None or not len(val.window_probabilities):
        return None
    return build_reference(val.window_probabilities, val.window_files, val.window_targets,
                           source=f"validation windows, epoch {epoch}").to_dict()


def _final_reports(
    model: nn.Module, best_path: Path, data: PreparedData, criterion: nn.Module, runtime: Runtime,
    progress: ProgressReporter, run_dir: Path, history: list[dict[str, float]], select_on: str = "macro_f1",
) -> tuple[dict[str, Path], dict[str, float]]:
    """Val (and test) reports of the best model, plus metrics and curves. Returns (outputs, accuracies)."""
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    outputs = {"metrics": reports.write_metrics_csv(history, run_dir / "metrics.csv"),
               "curves": reports.plot_training_curves(history, run_dir / "training_curves.png", int(best["epoch"]),
                                                      select_on)}
    val = evaluate(model, loader_for(data, data.val, 32, runtime), criterion, runtime, progress, "val (best)")
    outputs.update(reports.write_split_reports(val.targets, val.predictions, data.classes, run_dir, "",
                                               f"validation, best epoch {best['epoch']}"))
    scores: dict[str, Any] = {"val_acc": val.accuracy,
                              "val": reports.class_metrics(val.targets, val.predictions, len(data.classes))}
    if data.test_order:
        test = evaluate(model, loader_for(data, data.test, 32, runtime), criterion, runtime, progress, "test")
        outputs.update(reports.write_split_reports(test.targets, test.predictions, data.classes, run_dir, "test_",
                                                   f"test, best epoch {best['epoch']}"))
        scores["test"] = reports.class_metrics(test.targets, test.predictions, len(data.classes))
        probs = dict(zip((s.path for s in data.test), test.probabilities))
        rows = [reports.PredictionRow(p, probabilities=probs.get(p), error=data.failures.get(p))
                for p in data.test_order]
        outputs["test_predictions"] = reports.write_predictions_csv(
            rows, data.classes, run_dir / reports.PREDICTIONS_NAME)
        scores["test_acc"] = test.accuracy
    return outputs, scores


def _summary(
    result: TrainResult, config: TrainConfig, data: PreparedData, scores: dict[str, float], runtime: Runtime
) -> dict[str, Any]:
    """summary.json: what was trained on what, how well, and where every output is."""
    return {
        "run_dir": str(result.run_dir),
        "best_checkpoint": str(result.best_checkpoint),
        "checkpoint_sha256": file_sha256(result.best_checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "arch": config.arch, "weights": config.weights, "device": str(runtime.device),
        "feature_fingerprint": config.feature_config.fingerprint,
        "classes": data.classes,
        "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
        "final_val_acc": scores["val_acc"], "test_acc": scores.get("test_acc"),
        "select_on": config.select_on,
        "val_macro_f1": scores["val"]["macro_f1"], "val_balanced_acc": scores["val"]["balanced_accuracy"],
        "val_recall": dict(zip(data.classes, scores["val"]["recall"])),
        "test_macro_f1": scores["test"]["macro_f1"] if "test" in scores else None,
        "test_balanced_acc": scores["test"]["balanced_accuracy"] if "test" in scores else None,
        "test_recall": dict(zip(data.classes, scores["test"]["recall"])) if "test" in scores else None,
        "epochs_run": result.epochs_run, "epochs_total": len(result.history), "stopped_early": result.stopped_early,
        "num_train": len(data.train), "num_val": len(data.val), "num_test": len(data.test),
        "split": data.split_counts(),
        "grouped_split": any(s.group is not None for s in data.train + data.val),
        "test_duplicates_of_training": data.test_duplicates_of_training(),
        "undecodable_files": [{"file": p, "cause": c} for p, c in sorted(result.failures.items())],
        "notes": list(result.notes),
        "outputs": {name: str(path) for name, path in result.outputs.items()},
        "train_args": {**config.to_train_args(), "out": str(result.run_dir)},
    }
