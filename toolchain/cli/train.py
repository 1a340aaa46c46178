"""`toolchain train` and `toolchain predict`: parse, call the library, print where things are."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolchain.cache import DEFAULT_CACHE_DIR
from toolchain.cli import app
from toolchain.cli.common import console, rich_progress, user_errors
from toolchain.model import Arch


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# Option defaults mirror TrainConfig's (tests/test_cli_train.py checks they agree). Paths are checked by the
# library, whose one-line errors say what to pass instead.
@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option(help="Labelled clips: a folder with one subfolder per class, or a CSV "
                                            "manifest with filename,label[,group] columns.")],
    test: Annotated[Optional[Path], typer.Option(help="Optional labelled test set (same layouts); gets its own "
                                                      "reports and test_predictions_resnet.csv.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (with --resume: the checkpoint's folder).",
                                                show_default="artifacts/runs/<UTC timestamp>/")] = None,
    arch: Annotated[Arch, typer.Option(help="ResNet depth; resnet18 for quick runs.")] = Arch.resnet152,
    weights: Annotated[str, typer.Option(help="Starting weights: imagenet (torchvision IMAGENET1K_V1 from "
                                              "$TORCH_HOME), none (random init) or a path to a .pth.")] = "imagenet",
    device: Annotated[Device, typer.Option(help="auto picks CUDA (with AMP + channels-last) when present.")] = Device.auto,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = 40,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per optimizer step.")] = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    val_fraction: Annotated[float, typer.Option(help="Share of clips held out for validation (stratified, "
                                                     "group- and duplicate-aware).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split, shuffling and initialization.")] = 42,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without val-accuracy "
                                                      "improvement.")] = 6,
    resume: Annotated[Optional[Path], typer.Option(help="Continue from a resnet_<depth>_last.pth at its next "
                                                        "epoch.")] = None,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache folder (shared across runs).")] = DEFAULT_CACHE_DIR,
    num_workers: Annotated[Optional[int], typer.Option(min=0, help="Feature-extraction processes (0: in this "
                                                                   "process).", show_default="one per CPU core")] = None,
    bn_recalibration_batches: Annotated[int, typer.Option(min=0, help="Recompute BatchNorm statistics on this "
                                                          "many training batches before each evaluation (0: off).")] = 32,
) -> None:
    """Fine-tune a ResNet on log-mel spectrograms of labelled audio clips.

    The run folder gets best and last checkpoints, metrics.csv, training_curves.png, summary.json,
    and a confusion matrix and classification report for val (and for --test, with its predictions CSV).
    """
    from toolchain.train import TrainConfig, train as run_training

    config = TrainConfig(
        data=str(data), test=str(test) if test else None, out=str(out) if out else None, arch=arch.value,
        weights=weights, device=device.value, epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, patience=patience, resume=str(resume) if resume else None,
        cache_dir=str(cache_dir), num_workers=num_workers, bn_recalibration_batches=bn_recalibration_batches,
    )

    def report_epoch(row: dict[str, float]) -> None:
        console.print(f"epoch {int(row['epoch'])}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
                      f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} | lr {row['lr']:.2e} | "
                      f"{row['seconds']:.1f} s ({row['train_data_share']:.1%} of training waiting for data)")

    with rich_progress() as progress:
        result = run_training(config, progress, on_epoch=report_epoch)

    for path, cause in sorted(result.failures.items()):
        console.print(f"[yellow]skipped undecodable file[/] {path}: {cause}")
    stop = " (early stop)" if result.stopped_early else ""
    console.print(f"best val accuracy {result.best_val_acc:.3f} at epoch {result.best_epoch}{stop}")
    lines = {"run folder": result.run_dir, "best checkpoint": result.best_checkpoint,
             "last checkpoint": result.last_checkpoint,
             **{name.replace("_", " "): path for name, path in result.outputs.items()}}
    width = max(map(len, lines)) + 2
    for name, path in lines.items():
        typer.echo(f"{name + ':':<{width}}{path}")


@app.command()
@user_errors
def predict(
    checkpoint: Annotated[Path, typer.Option(help="A .pth written by `toolchain train`.")],
    input: Annotated[Path, typer.Option(help="A folder of audio files (searched recursively), a CSV with a "
                                             "filename column, or one audio file.")],
    out: Annotated[Path, typer.Option(help="Predictions CSV to write.")] = Path("predictions.csv"),
    device: Annotated[Device, typer.Option(help="auto picks CUDA when present.")] = Device.auto,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per forward pass.")] = 32,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache folder.")] = DEFAULT_CACHE_DIR,
    num_workers: Annotated[Optional[int], typer.Option(min=0, help="Feature-extraction processes.",
                                                       show_default="one per CPU core")] = None,
) -> None:
    """Predict class names for audio files with a trained checkpoint (PyTorch, the checkpoint's own features).

    Columns: filename, predicted_label, confidence, prob_<class>..., error.
    A file that cannot be decoded gets a row with its error instead of stopping the run.
    """
    from toolchain.predict import predict as run_predict

    with rich_progress() as progress:
        path = run_predict(checkpoint, input, out, progress, device=device.value, batch_size=batch_size,
                           cache_dir=cache_dir, num_workers=num_workers)
    typer.echo(f"predictions: {path.resolve()}")
