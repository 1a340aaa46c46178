"""Training's typed, frozen configuration and the names it uses, importable without torch (the CLI builds its
options from here; a scoring process never loads torch).

`TrainConfig` holds every training knob with the reference notebook recipe's value as default; `Arch` the ResNets
we build; `Device` where training runs; the checkpoint file names follow the reference notebook's
(`resnet_152_model.pth`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

from toolchain.audio.config import DEFAULT_CONFIG, FeatureConfig
from toolchain.errors import CheckpointError, TrainingError
from toolchain.training.cache import DEFAULT_CACHE_DIR


class Arch(str, Enum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    resnet101 = "resnet101"
    resnet152 = "resnet152"

    @property
    def depth(self) -> int:
        return int(self.value.removeprefix("resnet"))


DEFAULT_ARCH = Arch.resnet152


def parse_arch(name: str) -> Arch:
    try:
        return Arch(name)
    except ValueError:
        allowed = ", ".join(a.value for a in Arch)
        raise CheckpointError(f"unknown arch {name!r}: use one of {allowed}") from None


class Device(str, Enum):
    """Where training runs: auto = CUDA when visible (AMP + channels-last), else CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DEVICES = tuple(d.value for d in Device)


class MixedPrecision(str, Enum):
    """auto: bf16 (fp16 where the GPU lacks it) on CUDA, fp32 on CPU; bf16: also on a CPU with native bf16
    (AVX512-BF16 or AMX, about 2x faster there); off: fp32 everywhere."""

    auto = "auto"
    bf16 = "bf16"
    off = "off"


MIXED_PRECISIONS = tuple(m.value for m in MixedPrecision)


def best_checkpoint_name(arch: Arch | str) -> str:
    """The reference notebook's name for the best weights: `resnet_152_model.pth` (`resnet_<depth>_model.pth`)."""
    return f"resnet_{parse_arch(arch.value if isinstance(arch, Arch) else arch).depth}_model.pth"


def last_checkpoint_name(arch: Arch | str) -> str:
    return f"resnet_{parse_arch(arch.value if isinstance(arch, Arch) else arch).depth}_last.pth"


class Balance(str, Enum):
    none = "none"
    sampler = "sampler"
    weights = "weights"


class SelectOn(str, Enum):
    macro_f1 = "macro_f1"
    accuracy = "accuracy"


class Schedule(str, Enum):
    plateau = "plateau"
    cosine = "cosine"


BALANCES = tuple(b.value for b in Balance)
SELECT_ON = tuple(s.value for s in SelectOn)
SCHEDULES = tuple(s.value for s in Schedule)


@dataclass(frozen=True)
class TrainConfig:
    """Every training knob with the reference notebook recipe's value as default, and why."""

    data: str  # Folder-per-class tree or CSV manifest (filename,label[,group]).
    test: str | None = None  # Optional labelled test set (same layouts): reported, never trained or tuned on.
    out: str | None = None  # Run folder; None -> artifacts/runs/<UTC timestamp>/ (resume: the checkpoint's folder).
    arch: str = DEFAULT_ARCH.value  # The notebook's model; resnet18 trains ~5x faster for tests and small machines.
    weights: str = "imagenet"  # Pretrained start: small audio datasets converge in a few epochs. "none" | PATH.
    device: str = "auto"  # CUDA when present (AMP + channels-last), else CPU.
    # Not in the notebook: bf16 autocast on a CPU with native bf16 halves a ResNet152 step (0.25 -> 0.13 s a clip on
    # an AMD EPYC with AVX512-BF16); opt-in because fp32 CPU runs stay bit-comparable across machines.
    mixed_precision: str = "auto"
    epochs: int = 40  # Notebook recipe; early stopping usually ends sooner.
    batch_size: int = 16  # Notebook recipe; ResNet152 activations at 3x128x216 fit in a few GB.
    # None: the notebook's 1e-4 from pretrained weights (keeps their filters); 1e-3 from scratch, where 1e-4 leaves a
    # deep ResNet near chance for epochs.
    lr: float | None = None
    weight_decay: float = 0.01  # AdamW's default decoupled decay.
    label_smoothing: float = 0.1  # Notebook recipe; tempers over-confidence on small datasets.
    lr_factor: float = 0.5  # ReduceLROnPlateau: halve the LR when the selection metric stalls.
    lr_patience: int = 2  # Stalled epochs before the LR drops; below `patience`, so it drops before we stop.
    patience: int = 6  # Notebook recipe: early stop after this many epochs without improvement of `select_on`.
    val_fraction: float = 0.2  # Notebook recipe; stratified, group- and duplicate-aware.
    seed: int = 42  # Python, numpy and torch RNGs, the split and each epoch's shuffle.
    resume: str | None = None  # A *_last.pth to continue from; training resumes at its epoch + 1.
    cache_dir: str = str(DEFAULT_CACHE_DIR)  # Feature cache shared by every run with the same feature config.
    num_workers: int | None = None  # Feature-extraction processes; None -> one per CPU core.
    # Not in the notebook: recompute BatchNorm statistics on this many training batches before each evaluation, or
    # eval mode lags the weights (from scratch, 100 % train accuracy but chance in eval). 0 turns it off.
    bn_recalibration_batches: int = 32
    feature_config: FeatureConfig = DEFAULT_CONFIG  # The front end; stored in every checkpoint.
    overwrite: bool = False  # Replace the run already in `out`; without it an existing run folder is refused.
    # Resume on data other than the checkpoint's (its validation files are kept out of training); without it a
    # resume on other data is refused, since the new split would validate on clips the model has trained on.
    resume_with_new_data: bool = False
    # Not in the notebook: what makes small, messy, imbalanced data generalize (toolchain.training.augment).
    augment: bool = True  # Time shift, SpecAugment masks and mixup on training batches; never on val/test/export.
    time_shift: float = 0.25  # Largest shift, a fraction of the clip's frames.
    spec_masks: int = 2  # SpecAugment: this many time masks and this many frequency masks per clip.
    mixup_alpha: float = 0.2  # Beta(alpha, alpha) mixing weight; 0 turns mixup off.
    # Augmentation starts in epoch augment_from_epoch and grows to full strength over augment_ramp_epochs (0: full
    # at once); early stop and plateau do not count the epochs before full strength. Full strength from epoch 1
    # held 400 FSDD clips near chance for 3 epochs (resnet18 from scratch).
    augment_from_epoch: int = 4
    augment_ramp_epochs: int = 3
    # Not in the notebook: evaluate and keep an exponential moving average of the weights (torchvision's references
    # offer it), with this half-life in epochs; 0 turns it off.
    ema_half_life: float = 0.0
    balance: str = "none"  # none | sampler (class-balanced draws) | weights (inverse-frequency loss weights).
    select_on: str = "macro_f1"  # The best epoch, plateau and early stop follow val macro-F1 (or accuracy).
    schedule: str | None = None  # plateau (ReduceLROnPlateau) | cosine; None: see `resolved`.
    warmup_epochs: int | None = None  # Linear LR warm-up; None: 2 for a bottleneck ResNet from scratch, else 0.
    zero_init_residual: bool | None = None  # Last BN of each residual branch at 0; None: as warm-up.

    @property
    def from_scratch(self) -> bool:
        return self.weights == "none"

    @property
    def deep_from_scratch(self) -> bool:
        """A bottleneck ResNet (50, 101, 152) from random weights: the case warm-up, cosine and zero-init are for."""
        return self.from_scratch and parse_arch(self.arch).depth >= 50

    def resolved(self) -> TrainConfig:
        """This config with every None that depends on the starting weights filled in (what a run records).

        From scratch the rate is 1e-3 (1e-4 leaves a random ResNet near chance for epochs); a bottleneck ResNet
        also gets 2 warm-up epochs, a cosine schedule and zero-initialized residual branches, which let ResNet152
        learn at once. ResNet18/34 keep the notebook's plateau: the warm-up/cosine/zero-init start cost resnet18 from
        scratch half its cross-validated accuracy on FSDD (docs/performance.md).
        """
        deep = self.deep_from_scratch
        return dataclasses.replace(
            self,
            lr=self.lr if self.lr is not None else (1e-3 if self.from_scratch else 1e-4),
            schedule=self.schedule or ("cosine" if deep else "plateau"),
            warmup_epochs=self.warmup_epochs if self.warmup_epochs is not None else (2 if deep else 0),
            zero_init_residual=self.zero_init_residual if self.zero_init_residual is not None else deep,
        )

    def __post_init__(self) -> None:
        parse_arch(self.arch)  # Unknown arch -> error listing the allowed ones.
        checks = {  # name: (valid, the valid range in words)
            "epochs": (self.epochs >= 1, "at least 1"), "batch_size": (self.batch_size >= 1, "at least 1"),
            "lr": (self.lr is None or self.lr > 0, "above 0, e.g. 1e-4"),
            "weight_decay": (self.weight_decay >= 0, "0 or more"),
            "label_smoothing": (0 <= self.label_smoothing < 1, "in [0, 1)"),
            "lr_factor": (0 < self.lr_factor < 1, "in (0, 1)"), "lr_patience": (self.lr_patience >= 0, "0 or more"),
            "patience": (self.patience >= 1, "at least 1"),
            "val_fraction": (0 < self.val_fraction < 1, "between 0 and 1 exclusive, e.g. 0.2"),
            "num_workers": (self.num_workers is None or self.num_workers >= 0, "0 or more"),
            "bn_recalibration_batches": (self.bn_recalibration_batches >= 0, "0 or more"),
            "time_shift": (0 <= self.time_shift < 1, "in [0, 1)"), "spec_masks": (self.spec_masks >= 0, "0 or more"),
            "mixup_alpha": (self.mixup_alpha >= 0, "0 (off) or more, e.g. 0.2"),
            "augment_from_epoch": (self.augment_from_epoch >= 1, "at least 1"),
            "augment_ramp_epochs": (self.augment_ramp_epochs >= 0, "0 (full strength at once) or more"),
            "ema_half_life": (self.ema_half_life >= 0, "0 (off) or more epochs, e.g. 1"),
            "warmup_epochs": (self.warmup_epochs is None or self.warmup_epochs >= 0, "0 or more"),
        }
        for name, (ok, valid) in checks.items():
            if not ok:
                raise TrainingError(f"{name}={getattr(self, name)!r} is out of range: it must be {valid}")
        if self.device not in DEVICES:
            raise TrainingError(f"device {self.device!r} is unknown: use one of {', '.join(DEVICES)}")
        for name, allowed in (("mixed_precision", MIXED_PRECISIONS), ("balance", BALANCES),
                              ("select_on", SELECT_ON), ("schedule", (None, *SCHEDULES))):
            if getattr(self, name) not in allowed:
                shown = ", ".join(a for a in allowed if a)
                raise TrainingError(f"{name}={getattr(self, name)!r} is unknown: use one of {shown}")

    def to_train_args(self) -> dict[str, Any]:
        """Plain-typed dict for checkpoints (loads with weights_only=True); the feature config is stored apart."""
        args = dataclasses.asdict(self)
        args.pop("feature_config")
        return args
