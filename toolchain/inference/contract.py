"""The model-file contract: what an exported ONNX model says about itself, and what its files are called.

Metadata is stored as JSON strings in `metadata_props`. A scorer handed only the `.onnx` file reads the class
labels and the feature config from here, never from flags, so it cannot pair the model with the wrong
preprocessing. File names: `model.onnx` (the certified fp32 model) with its `parity.json`, and its variants
`model.int8.onnx` / `model.fp16.onnx` with `parity.int8.json` / `parity.fp16.json`, all in one folder.

Export writes this contract and scoring reads it; it lives here, below both, because scoring may not import
the export side (which needs torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.audio.config import FeatureConfig, check_reproducible
from toolchain.errors import ModelMetadataError

PREFIX = "toolchain."
INPUT_NAME = "features"  # (batch, channels, n_mels, frames) float32
OUTPUT_NAME = "logits"  # (batch, n_classes) float32
MODEL_NAME = "model.onnx"
# model.audio.onnx (`toolchain.export.audio_graph`): waveform in, the same logits out.
WAVEFORM_NAME = "waveform"  # (batch, samples) float32, mono at the model's sample rate
LENGTHS_NAME = "lengths"  # (batch,) int64 valid samples per row
TRIM_NAME = "trim"  # () bool, optional (default true): trim leading/trailing silence
PROBABILITIES_NAME = "probabilities"  # (batch, n_classes) float32


def variant_path(model: str | Path, precision: str) -> Path:
    """`model.onnx` -> `model.int8.onnx` / `model.fp16.onnx` (fp32: the model itself)."""
    model = Path(model)
    return model if precision == "fp32" else model.with_name(f"{model.stem}.{precision}{model.suffix}")


def report_path(model: str | Path, precision: str = "fp32") -> Path:
    """The parity report beside a model: `parity.json` (fp32), `parity.int8.json`, `parity.fp16.json`."""
    return Path(model).parent / ("parity.json" if precision == "fp32" else f"parity.{precision}.json")


@dataclass(frozen=True)
class ModelMetadata:
    classes: tuple[str, ...]
    feature_config: FeatureConfig
    arch: str
    checkpoint_sha256: str
    precision: str = "fp32"  # fp32 | int8 | fp16
    opset: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    toolchain_version: str = ""
    exported_at: str = ""  # UTC ISO-8601
    # What "normal" output looks like (`toolchain.health.reference.Reference.to_dict()`), None for models exported
    # before it existed or from checkpoints that lack it: their runs' health says "no reference".
    health_reference: dict[str, Any] | None = None

    @property
    def feature_fingerprint(self) -> str:
        return self.feature_config.fingerprint

    def to_props(self) -> dict[str, str]:
        """String -> JSON-string map for `onnx.ModelProto.metadata_props`."""
        values: dict[str, Any] = {
            "classes": list(self.classes),
            "feature_config": self.feature_config.to_dict(),
            "feature_fingerprint": self.feature_fingerprint,
            "arch": self.arch,
            "checkpoint_sha256": self.checkpoint_sha256,
            "precision": self.precision,
            "opset": self.opset,
            "metrics": self.metrics,
            "toolchain_version": self.toolchain_version,
            "exported_at": self.exported_at,
        }
        if self.health_reference is not None:
            values["health_reference"] = self.health_reference
        return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in values.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse the map back; a model without our metadata, or a foreign feature config, is refused."""
        try:
            values = {k.removeprefix(PREFIX): json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
        except json.JSONDecodeError as exc:
            raise ModelMetadataError(f"{source}: toolchain metadata is not valid JSON ({exc}); re-export it") from exc
        missing = [k for k in ("classes", "feature_config", "feature_fingerprint", "arch") if k not in values]
        if missing:
            raise ModelMetadataError(
                f"{source} has no toolchain metadata {missing}: export it with `toolchain export-onnx`"
            )
        return cls(
            classes=tuple(str(c) for c in values["classes"]),
            feature_config=check_reproducible(values["feature_config"], values["feature_fingerprint"]),
            arch=str(values["arch"]),
            checkpoint_sha256=str(values.get("checkpoint_sha256", "")),
            precision=str(values.get("precision", "fp32")),
            opset=values.get("opset"),
            metrics={str(k): float(v) for k, v in (values.get("metrics") or {}).items()},
            toolchain_version=str(values.get("toolchain_version", "")),
            exported_at=str(values.get("exported_at", "")),
            health_reference=values.get("health_reference") if isinstance(values.get("health_reference"), dict)
            else None,
        )


def write_metadata(model: Any, meta: ModelMetadata) -> None:
    """Set our keys on an `onnx.ModelProto` in place (other keys are kept)."""
    props = meta.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in kept:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def metadata_from_session(session: Any, source: str = "model") -> ModelMetadata:
    """Read from an open `onnxruntime.InferenceSession` (no second parse of the file)."""
    return ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), source)


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read from an `.onnx` file on disk."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelMetadataError(f"ONNX model {path} does not exist: pass the file written by `toolchain export-onnx`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelMetadataError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path))
