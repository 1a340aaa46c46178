"""PyTorch inference from a checkpoint: a folder or CSV of audio files -> predictions CSV with class names.

The checkpoint carries its own feature config (and fingerprint) and class list, so predictions always use the
preprocessing the model was trained with. Undecodable files get a row with their error; the rest still run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolchain.io import check_output_file
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.training.cache import (
    DEFAULT_CACHE_DIR,
    CachedFeatureDataset,
    FeatureCache,
)
from toolchain.training.checkpoint import load_checkpoint
from toolchain.training.data import list_inputs
from toolchain.training.epochs import per_file
from toolchain.training.reports import PredictionRow, write_predictions_csv
from toolchain.training.runtime import resolve_runtime


def predict(
    checkpoint_path: str | Path,
    input: str | Path,
    out_csv: str | Path,
    progress: ProgressReporter | None = None,
    *,
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    num_workers: int | None = None,
) -> Path:
    """Predict every file of `input` (folder, CSV manifest or one file) and write `out_csv`.

    Columns: file, label (predicted), confidence, prob_<class>..., error (see reports.write_predictions_csv).
    Runs fp32 (no autocast) so results match export parity checks. Returns the CSV path.
    """
    progress = progress or NullProgress()
    checkpoint = load_checkpoint(checkpoint_path)
    files = list_inputs(input)
    out_csv = check_output_file(out_csv, "--out")
    runtime = resolve_runtime(device, mixed_precision="off")
    model = checkpoint.build_model().to(runtime.device)

    cache = FeatureCache(Path(cache_dir), checkpoint.feature_config)
    report = cache.ensure(files, num_workers=num_workers, progress=progress)
    good = [f for f in files if f not in report.failures]
    dataset = CachedFeatureDataset(cache, good, [0] * len(good))  # Every window, aggregated per file as scoring.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    window_probabilities: list[np.ndarray] = []
    progress.start("predict", f"predicting {len(good)} files ({len(dataset)} windows)", total=len(loader))
    with torch.no_grad():
        for images, _ in loader:
            logits = model(images.to(runtime.device))
            window_probabilities.extend(torch.softmax(logits.float(), dim=1).cpu().numpy())
            progress.advance("predict")
    progress.finish("predict")
    probabilities = per_file(np.array(window_probabilities), np.zeros(len(dataset), dtype=np.int64),
                             dataset.file_index)[0] if good else []

    by_path = dict(zip(good, probabilities))
    rows = [PredictionRow(f, probabilities=by_path.get(f), error=report.failures.get(f)) for f in files]
    return write_predictions_csv(rows, checkpoint.classes, out_csv)
