"""`toolchain train` and `toolchain predict`: parse, call the library, print where things are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolchain.cli.common import config_defaults, console, rich_progress, user_errors
from toolchain.errors import EXIT_INTERRUPTED
from toolchain.registry.tracking import DEFAULT_EXPERIMENT, Tracker
from toolchain.training.config import (
    Arch,
    Balance,
    Device,
    MixedPrecision,
    Schedule,
    SelectOn,
    TrainConfig,
    last_checkpoint_name,
)

app = typer.Typer()
TRAIN = config_defaults(TrainConfig)


# Option defaults are TrainConfig's. Paths are checked by the library, whose one-line errors say what to pass instead.
@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option(help="Labelled clips: a folder with one subfolder per class, or a CSV "
                                            "manifest with filename,label[,group] columns.")],
    test: Annotated[Optional[Path], typer.Option(help="Optional labelled test set (same layouts); gets its own "
                                                      "reports and test_predictions_resnet.csv.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (with --resume: the checkpoint's folder).",
                                                show_default="artifacts/runs/<UTC timestamp>/")] = None,
    arch: Annotated[Arch, typer.Option(help="ResNet depth; resnet18 for quick runs.")] = Arch(TRAIN["arch"]),
    weights: Annotated[str, typer.Option(help="Starting weights: imagenet (torchvision IMAGENET1K_V1 from "
                                              "$TORCH_HOME), none (random init) or a path to a .pth.")] = TRAIN["weights"],
    device: Annotated[Device, typer.Option(help="auto picks CUDA (with AMP + channels-last) when present.")] = Device(TRAIN["device"]),
    mixed_precision: Annotated[MixedPrecision, typer.Option(help="auto: bf16 (or fp16) on CUDA, fp32 on CPU; bf16: "
                                                        "also on a CPU with native bf16 (AVX512-BF16/AMX, ~2x "
                                                        "faster there); off: fp32 everywhere.")] = MixedPrecision(TRAIN["mixed_precision"]),
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = TRAIN["epochs"],
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per optimizer step.")] = TRAIN["batch_size"],
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate.", show_default="1e-4 from pretrained "
                                                "weights, 1e-3 with --weights none")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of clips held out for validation (stratified, "
                                                     "group- and duplicate-aware).")] = TRAIN["val_fraction"],
    seed: Annotated[int, typer.Option(help="Seed for the split, shuffling and initialization.")] = TRAIN["seed"],
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without improvement of "
                                                      "--select-on.")] = TRAIN["patience"],
    augment: Annotated[bool, typer.Option(help="Augment training batches (time shift, SpecAugment masks, "
                                               "mixup); validation, test and export stay clean.")] = TRAIN["augment"],
    time_shift: Annotated[float, typer.Option(min=0.0, max=0.99, help="Largest time shift, a fraction of the "
                                                                     "clip.")] = TRAIN["time_shift"],
    spec_masks: Annotated[int, typer.Option(min=0, help="SpecAugment: time masks and frequency masks per "
                                                        "clip (each).")] = TRAIN["spec_masks"],
    mixup_alpha: Annotated[float, typer.Option(min=0.0, help="Mixup Beta(alpha, alpha); 0 turns it "
                                                             "off.")] = TRAIN["mixup_alpha"],
    augment_from_epoch: Annotated[int, typer.Option(min=1, help="First epoch with augmentation (earlier ones "
                                                    "train on clean clips).")] = TRAIN["augment_from_epoch"],
    augment_ramp_epochs: Annotated[int, typer.Option(min=0, help="Augmentation grows to full strength over this "
                                                     "many epochs (0: full at once).")] = TRAIN["augment_ramp_epochs"],
    ema_half_life: Annotated[float, typer.Option(min=0.0, help="Evaluate and keep a moving average of the weights "
                                                 "with this half-life in epochs (0: off).")] = TRAIN["ema_half_life"],
    balance: Annotated[Balance, typer.Option(help="Class balance: a balanced sampler, or inverse-frequency loss "
                                                  "weights.")] = Balance(TRAIN["balance"]),
    select_on: Annotated[SelectOn, typer.Option(help="Validation metric that picks the best epoch and drives "
                                                    "plateau and early stop.")] = SelectOn(TRAIN["select_on"]),
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule.", show_default="cosine "
                                                         "for resnet50-152 with --weights none, else plateau")] = None,
    warmup_epochs: Annotated[Optional[int], typer.Option(min=0, help="Linear learning-rate warm-up epochs.",
                                                         show_default="2 for resnet50-152 from scratch, else 0")] = None,
    zero_init_residual: Annotated[Optional[bool], typer.Option(help="Zero the last BatchNorm of each residual "
                                                               "branch (random init).", show_default="on for "
                                                               "resnet50-152 from scratch")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue from a resnet_<depth>_last.pth at its next "
                                                        "epoch.")] = None,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache folder (shared across runs).")] = Path(TRAIN["cache_dir"]),
    num_workers: Annotated[Optional[int], typer.Option(min=0, help="Feature-extraction processes (0: in this "
                                                                   "process).", show_default="one per CPU core")] = None,
    bn_recalibration_batches: Annotated[int, typer.Option(min=0, help="Recompute BatchNorm statistics on this "
                                                          "many training batches before each evaluation (0: off).")] = TRAIN["bn_recalibration_batches"],
    overwrite: Annotated[bool, typer.Option(help="Replace the training run already in --out (refused "
                                                 "otherwise).")] = TRAIN["overwrite"],
    resume_with_new_data: Annotated[bool, typer.Option(help="With --resume: continue on data other than the "
                                                             "checkpoint's; its validation files stay out of "
                                                             "training.")] = TRAIN["resume_with_new_data"],
    tracking: Annotated[bool, typer.Option(help="Log the run to MLflow (parameters, data fingerprint, every "
                                                "epoch's metrics, plots and reports); training goes on without "
                                                "it when the store cannot be reached.")] = True,
    tracking_uri: Annotated[Optional[str], typer.Option(
        envvar="MLFLOW_TRACKING_URI", show_envvar=True, help="MLflow tracking server or store, e.g. "
        "http://mlflow:5000.", show_default="sqlite:///mlflow.db in the current folder")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment the run goes into.")] = DEFAULT_EXPERIMENT,
) -> None:
    """Fine-tune a ResNet on log-mel spectrograms of labelled audio clips.

    The run folder gets best and last checkpoints, metrics.csv, training_curves.png, summary.json,
    and a confusion matrix and classification report for val (and for --test, with its predictions CSV).
    The run is tracked in MLflow (see `mlflow ui`) unless --no-tracking.
    """
    import dataclasses

    from toolchain.training.train import run_dir_for
    from toolchain.training.train import train as run_training

    config = TrainConfig(
        data=str(data), test=str(test) if test else None, out=str(out) if out else None, arch=arch.value,
        weights=weights, device=device.value, mixed_precision=mixed_precision.value, epochs=epochs,
        batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, patience=patience, resume=str(resume) if resume else None,
        cache_dir=str(cache_dir), num_workers=num_workers, bn_recalibration_batches=bn_recalibration_batches,
        overwrite=overwrite, resume_with_new_data=resume_with_new_data, augment=augment, time_shift=time_shift,
        spec_masks=spec_masks, mixup_alpha=mixup_alpha, augment_from_epoch=augment_from_epoch,
        augment_ramp_epochs=augment_ramp_epochs, ema_half_life=ema_half_life, balance=balance.value, select_on=select_on.value,
        schedule=schedule.value if schedule else None, warmup_epochs=warmup_epochs,
        zero_init_residual=zero_init_residual,
    )
    config = dataclasses.replace(config, out=str(run_dir_for(config)))  # Known now, for the Ctrl-C hint.

    finished: list[int] = []  # Epochs this command completed (their checkpoints are written).

    def report_epoch(row: dict[str, float]) -> None:
        finished.append(int(row["epoch"]))
        console.print(f"epoch {int(row['epoch'])}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
                      f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} macro-F1 {row['val_macro_f1']:.3f}"
                      f" | lr {row['lr']:.2e} | "
                      f"{row['seconds']:.1f} s ({row['train_data_share']:.1%} of training waiting for data)")

    def report_note(message: str) -> None:
        console.print(f"[yellow]note:[/] {message}", soft_wrap=True)

    try:
        with rich_progress() as progress:
            tracker = Tracker(tracking_uri, experiment, enabled=tracking, note=report_note)
            result = run_training(config, progress, on_epoch=report_epoch, on_note=report_note, tracker=tracker)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {_resume_hint(config, bool(finished))}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None

    shown = sorted(result.failures.items())
    for path, cause in shown[:10]:
        console.print(f"[yellow]skipped undecodable file[/] {path}: {cause}", soft_wrap=True)
    if len(shown) > 10:
        console.print(f"[yellow]... and {len(shown) - 10} more[/] (all in {result.run_dir / 'summary.json'})")
    stop = " (early stop)" if result.stopped_early else ""
    console.print(f"best val accuracy {result.best_val_acc:.3f} at epoch {result.best_epoch}{stop}")
    lines = {"run folder": result.run_dir, "best checkpoint": result.best_checkpoint,
             "last checkpoint": result.last_checkpoint,
             **{name.replace("_", " "): path for name, path in result.outputs.items()}}
    width = max(map(len, lines)) + 2
    for name, path in lines.items():
        typer.echo(f"{name + ':':<{width}}{path}")
    if tracker.enabled and tracker.run_id:
        typer.echo(f"{'mlflow run:':<{width}}{tracker.run_id} ({tracker.seconds:.1f} s of tracking)")


def _resume_hint(config: TrainConfig, epoch_finished: bool) -> str:
    """How to continue an interrupted run: the run folder's last checkpoint after a finished epoch, else the
    --resume the command already had (a resumed run writes its last checkpoint into its run folder, which is
    the --resume file's own folder unless --out says otherwise)."""
    last = Path(config.out) / last_checkpoint_name(config.arch)
    if not config.resume:
        return (f"continue with the same command plus --resume {last}" if epoch_finished
                else "no epoch had finished, so there is nothing to resume")
    if not epoch_finished or Path(config.resume).resolve() == last.resolve():
        return f"run the same command again to continue: its --resume {config.resume} holds the latest epoch"
    return f"run the same command with --resume {last} in place of --resume {config.resume} to continue"


@app.command()
@user_errors
def predict(
    checkpoint: Annotated[Path, typer.Option(help="A .pth written by `toolchain train`.")],
    input: Annotated[Path, typer.Option(help="A folder of audio files (searched recursively), a CSV with a "
                                             "filename column, or one audio file.")],
    out: Annotated[Path, typer.Option(help="Predictions CSV to write.")] = Path("predictions.csv"),
    device: Annotated[Device, typer.Option(help="auto picks CUDA when present.")] = Device.auto,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per forward pass.")] = 32,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache folder.")] = Path(TRAIN["cache_dir"]),
    num_workers: Annotated[Optional[int], typer.Option(min=0, help="Feature-extraction processes.",
                                                       show_default="one per CPU core")] = None,
) -> None:
    """Predict class names for audio files with a trained checkpoint (PyTorch, the checkpoint's own features).

    Columns: file, label (predicted), confidence, prob_<class>..., error.
    A file that cannot be decoded gets a row with its error instead of stopping the run.
    """
    from toolchain.training.predict import predict as run_predict
    from toolchain.training.reports import prediction_counts

    with rich_progress() as progress:
        path = run_predict(checkpoint, input, out, progress, device=device.value, batch_size=batch_size,
                           cache_dir=cache_dir, num_workers=num_workers)
    predicted, failed = prediction_counts(path)
    if failed:
        console.print(f"[yellow]{failed} of {predicted + failed} file(s) could not be decoded[/]: see the error column")
    typer.echo(f"predictions: {path.resolve()}")
