"""The feature contract's parameters: one frozen config, travelling with every checkpoint and model, and its fingerprint.

Everything the front end computes is a function of a `FeatureConfig`; its fingerprint (a hash of the contract
version and every parameter) is what checkpoints, ONNX models, CSVs and the feature cache are keyed on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from toolchain.errors import FeatureConfigError

# Bumped whenever the meaning of a config field changes, so old fingerprints stop matching.
FEATURE_CONTRACT_VERSION = "logmel-v1"


@dataclass(frozen=True)
class FeatureConfig:
    """Every parameter of the front end, with the reference notebook recipe's values as defaults."""

    sample_rate: int = 22_050  # Hz; every input is resampled to this.
    clip_seconds: float = 5.0  # Clips are padded or truncated to this length.
    n_mels: int = 128  # Mel bands: the image height.
    n_fft: int = 2048  # FFT window, samples (~93 ms at 22,050 Hz).
    hop_length: int = 512  # Samples between frames: 5 s -> 216 frames.
    trim_top_db: float = 60.0  # librosa.effects.trim threshold below peak for leading/trailing silence.
    channels: int = 3  # The log-mel image is stacked to 3 channels for ImageNet-style models.
    # A single clip (`features_from_path`: parity clips, the reference) decodes at most this much of a file; whole
    # recordings are cut into windows instead (`toolchain.audio.windows`, limit: `WindowRule.max_duration_s`).
    max_decode_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FeatureConfigError(f"feature config {name}={value!r} must be a positive integer")
        for name in ("clip_seconds", "trim_top_db", "max_decode_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise FeatureConfigError(f"feature config {name}={value!r} must be a positive number")
        if self.max_decode_seconds < self.clip_seconds:
            raise FeatureConfigError(
                f"feature config max_decode_seconds={self.max_decode_seconds} is shorter than "
                f"clip_seconds={self.clip_seconds}"
            )

    @property
    def num_samples(self) -> int:
        """Samples per clip after padding/truncation."""
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def num_frames(self) -> int:
        """Spectrogram frames per clip (librosa centers frames: 1 + samples // hop)."""
        return 1 + self.num_samples // self.hop_length

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Model input for one clip: (channels, n_mels, frames)."""
        return (self.channels, self.n_mels, self.num_frames)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (safe for `torch.load(weights_only=True)`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Rebuild a config; unknown keys mean a newer or foreign contract and are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FeatureConfigError(
                f"feature config has unknown fields {unknown}: it was made by another version of toolchain; "
                "re-export the model with this version"
            )
        return cls(**data)

    @property
    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the contract version and every parameter."""
        payload = json.dumps(
            {"contract": FEATURE_CONTRACT_VERSION, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


DEFAULT_CONFIG = FeatureConfig()


def check_reproducible(config_dict: dict[str, Any], fingerprint: str | None) -> FeatureConfig:
    """Rebuild a stored config and refuse it when this library would compute different features."""
    config = FeatureConfig.from_dict(config_dict)
    if fingerprint is not None and config.fingerprint != fingerprint:
        raise FeatureConfigError(
            f"feature fingerprint {fingerprint} does not match this library's {config.fingerprint} for the same "
            f"parameters (contract {FEATURE_CONTRACT_VERSION}): re-export the model with this toolchain version"
        )
    return config
