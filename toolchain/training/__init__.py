"""Training: labelled audio -> cached features -> a fine-tuned ResNet checkpoint with its reports.

`TrainConfig`, `train` and `predict` are imported on first use: the feature-cache workers import this package
(for `toolchain.training.cache`) and must not pay for torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"TrainConfig": "toolchain.training.config", "TrainResult": "toolchain.training.train",
         "train": "toolchain.training.train", "predict": "toolchain.training.predict"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
