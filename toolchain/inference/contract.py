"""The model-file contract: what an exported ONNX model says about itself, and what its files are called.

Metadata is stored as JSON strings in `metadata_props`. A scorer handed only the `.onnx` file reads the class
labels and the feature config from here, never from flags, so it cannot pair the model with the wrong
preprocessing. File names: `model.onnx` (the certified fp32 model) with its `parity.json`, and its variants
`model.int8.onnx` / `model.fp16.onnx` with `parity.int8.json` / `parity.fp16.json`, all in one folder.

Export writes this contract and scoring reads it; it lives here, below both, because scoring may not import
the export side (which needs torch). A scoring model is a `features` -> `logits` graph whose shapes agree with
its metadata; `check_scoring_graph` refuses anything else (the waveform-in `model.audio.onnx`, foreign graphs)
in one line, for every caller that opens a model by the path a user gave.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.audio.config import FeatureConfig, check_reproducible
from toolchain.errors import ModelMetadataError, one_line

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
    # A reduced-precision variant: the rule it was certified under (`toolchain.export.variant_gate`: "rule",
    # "description" and the thresholds); None for fp32 models and variants exported before it was recorded.
    gate: dict[str, Any] | None = None

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
        if self.gate is not None:
            values["gate"] = self.gate
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
            gate=values.get("gate") if isinstance(values.get("gate"), dict) else None,
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


def model_file_problem(path: str | Path) -> str:
    """Why `path` cannot be an ONNX model file, as the rest of a sentence that starts with the path ("" if it can)."""
    path = Path(path)
    if path.is_file():
        return ""
    if path.is_dir():
        inside = path / MODEL_NAME
        way_out = f"pass {inside}" if inside.is_file() else "pass the .onnx file written by `toolchain export-onnx`"
        return f"is a directory, not an ONNX file: {way_out}"
    return "does not exist: pass the .onnx file written by `toolchain export-onnx`"


Shape = Sequence[int | str | None]  # One dimension: its size, or a symbolic name / None when it is dynamic.


def _refuse_waveform_model(inputs: Mapping[str, Shape], source: str) -> None:
    if WAVEFORM_NAME in inputs:
        raise ModelMetadataError(f"{source} is the waveform-in model for Node and the browser; pass the {MODEL_NAME} "
                                 "beside it (scoring runs this graph from there with --frontend graph)")


def check_scoring_graph(meta: ModelMetadata, inputs: Mapping[str, Shape], outputs: Mapping[str, Shape], source: str,
                        *, waveform: bool = False) -> None:
    """Refuse a graph that is not a scoring model agreeing with `meta`: `features` (batch, *input_shape) ->
    `logits` (batch, n_classes). `inputs`/`outputs`: {name: shape}. With `waveform` the caller wants a
    `model.audio.onnx` (the graph front end); without it one is refused with the way to the model beside it."""
    if not waveform:
        _refuse_waveform_model(inputs, source)
    if waveform and {WAVEFORM_NAME, LENGTHS_NAME} <= set(inputs) and OUTPUT_NAME in outputs:
        return  # model.audio.onnx: its own gate (parity.audio.json) checked the rest.
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ModelMetadataError(
            f"{source} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, expected '{INPUT_NAME}' -> "
            f"'{OUTPUT_NAME}': export it with `toolchain export-onnx`"
        )
    expected = (None, *meta.feature_config.input_shape)
    shape = inputs[INPUT_NAME]
    fixed = [(got, want) for got, want in zip(shape, expected) if want is not None and isinstance(got, int)]
    if len(shape) != 4 or any(got != want for got, want in fixed):
        raise ModelMetadataError(
            f"{source} input shape {list(shape)} does not match its feature config "
            f"{meta.feature_config.input_shape}: re-export the model"
        )
    n_out = outputs[OUTPUT_NAME][-1] if outputs[OUTPUT_NAME] else None
    if isinstance(n_out, int) and n_out != len(meta.classes):
        raise ModelMetadataError(
            f"{source} outputs {n_out} logits but its metadata lists {len(meta.classes)} classes: re-export it"
        )


def _load_proto(path: Path) -> Any:
    """The `onnx.ModelProto` at `path` (weights stay on disk when external), or `ModelMetadataError`."""
    import onnx

    problem = model_file_problem(path)
    if problem:
        raise ModelMetadataError(f"ONNX model {path} {problem}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelMetadataError(f"{path} is not a readable ONNX model ({one_line(exc)})") from exc


def _graph_io(proto: Any) -> tuple[dict[str, list], dict[str, list]]:
    """({input name: shape}, {output name: shape}) of a graph; initializers listed as inputs are not inputs."""
    def shape(value: Any) -> list:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]

    weights = {t.name for t in proto.graph.initializer}
    inputs = {v.name: shape(v) for v in proto.graph.input if v.name not in weights}
    return inputs, {v.name: shape(v) for v in proto.graph.output}


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read from an `.onnx` file on disk (any of ours: model.onnx, its variants, model.audio.onnx)."""
    path = Path(path)
    proto = _load_proto(path)
    return ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props}, str(path))


def read_scoring_metadata(path: str | Path) -> ModelMetadata:
    """`read_metadata` of a model a user named for scoring, refused unless it is a scoring model
    (`check_scoring_graph`), without starting ONNX Runtime."""
    path = Path(path)
    proto = _load_proto(path)
    inputs, outputs = _graph_io(proto)
    _refuse_waveform_model(inputs, str(path))  # Before the metadata: this message is the one that helps.
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props}, str(path))
    check_scoring_graph(meta, inputs, outputs, str(path))
    return meta
