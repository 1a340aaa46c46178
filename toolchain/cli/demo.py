"""`toolchain demo-data`: the synthesized dataset behind `make demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolchain.cli.common import console, user_errors
from toolchain.training.synth import CLASSES, make_demo_data

app = typer.Typer()


@app.command("demo-data")
@user_errors
def demo_data(
    out: Annotated[Path, typer.Option(help="Folder to write train/, test/ and inbox/ into.")] = Path(
        "artifacts/demo/data"
    ),
    per_class: Annotated[int, typer.Option(min=2, help="Training clips per class.")] = 12,
    test_per_class: Annotated[int, typer.Option(min=1, help="Test clips per class.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 0,
) -> None:
    """Synthesize a small labelled dataset (beeps, chirp, clicks, noise, tone) and a two-day inbox to score."""
    data = make_demo_data(out, per_class=per_class, test_per_class=test_per_class, seed=seed)
    console.print(f"{len(CLASSES)} classes: train {data.train}, test {data.test}, inbox {data.inbox}")
