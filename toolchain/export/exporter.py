"""Checkpoint -> one self-contained, self-describing fp32 ONNX file (export only; certification is `toolchain.export.parity`).

The graph: input `features` float32 (batch, channels, n_mels, frames) -> output `logits` float32 (batch, n_classes),
batch dynamic. The file carries `ModelMetadata` (labels, feature config + fingerprint, checkpoint sha256, opset,
metrics, version, UTC export time) so a scorer handed only the `.onnx` needs nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import onnx
import torch
from torch import nn

from toolchain import __version__
from toolchain.errors import ExportError, OutputPathError, one_line
from toolchain.inference.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelMetadata,
    write_metadata,
)
from toolchain.io import atomic_write, file_sha256
from toolchain.training.checkpoint import Checkpoint, load_checkpoint

# Batch 1 can silently specialize the batch axis to a constant; 2 keeps it symbolic.
EXAMPLE_BATCH = 2
# protobuf cannot serialize a single message above 2 GiB; beyond that weights must live in a side file.
MAX_SELF_CONTAINED_BYTES = 2**31 - 1


def used_opset(model_proto) -> int:
    """The default-domain (ai.onnx) opset recorded in a model."""
    for entry in model_proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("exported model has no ai.onnx opset import: the exporter produced an invalid graph")


def _to_onnx_proto(model: nn.Module, input_shape: tuple[int, int, int], opset: int | None):
    """Run the dynamo exporter on an eval-mode model; returns the in-memory `onnx.ModelProto`.

    `input_shape` is one clip's (channels, n_mels, frames). A separate function so tests can sabotage this step.
    """
    example = torch.zeros((EXAMPLE_BATCH, *input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export prints deprecation chatter unrelated to the user's model.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program: the dynamo exporter is required")
    return program.model_proto


def _check_graph_signature(model_proto, channels: int, n_classes: int) -> None:
    """Names, dtypes and the dynamic batch axis, as the scorer expects them."""
    inputs = [i for i in model_proto.graph.input]
    outputs = [o for o in model_proto.graph.output]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ExportError(
            f"exported graph has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}, "
            f"expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]"
        )
    for value, rank, fixed in ((inputs[0], 4, {1: channels}), (outputs[0], 2, {1: n_classes})):
        tensor = value.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"exported {value.name!r} is not float32 (elem_type {tensor.elem_type})")
        dims = tensor.shape.dim
        if len(dims) != rank:
            raise ExportError(f"exported {value.name!r} has rank {len(dims)}, expected {rank}")
        if dims[0].HasField("dim_value"):
            raise ExportError(
                f"exported {value.name!r} has a fixed batch axis ({dims[0].dim_value}); it must be dynamic"
            )
        for axis, size in fixed.items():
            if dims[axis].HasField("dim_value") and dims[axis].dim_value != size:
                raise ExportError(f"exported {value.name!r} axis {axis} is {dims[axis].dim_value}, expected {size}")


def metadata_for(ckpt: Checkpoint, opset: int | None, *, precision: str = "fp32") -> ModelMetadata:
    """The metadata an export of `ckpt` carries."""
    return ModelMetadata(
        classes=ckpt.classes,
        feature_config=ckpt.feature_config,
        arch=ckpt.arch.value,
        checkpoint_sha256=file_sha256(ckpt.path),
        precision=precision,
        opset=opset,
        metrics={k: float(v) for k, v in ckpt.metrics.items()},
        toolchain_version=__version__,
        exported_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        health_reference=ckpt.raw.get("health_reference"),  # Built by training on its validation windows.
    )


def save_model_atomic(model_proto, out_path: Path) -> Path:
    """Write one self-contained file via a temporary name in the same folder, then `os.replace`."""
    size = model_proto.ByteSize()
    if size > MAX_SELF_CONTAINED_BYTES:
        raise ExportError(f"model is {size / 2**30:.1f} GiB, over ONNX's 2 GiB single-file limit; use a smaller arch")
    with atomic_write(out_path) as tmp:
        onnx.save_model(model_proto, str(tmp), save_as_external_data=False)
    return out_path


@contextmanager
def publishing(final: Path, unpublished: Iterable[Path] = (), note: str = "") -> Iterator[Path]:
    """A temporary path beside `final` for a model published only when the block (its gate) succeeds.

    `atomic_write(final, ".pending")`, with its closing rename made a user error: when the OS refuses it (folder
    made read-only, a folder in the way) the `unpublished` files -- reports the gate wrote about this model,
    which would describe a file that is not there -- are removed and `OutputPathError` names `final`, the OS's
    reason, the fix and `note`. An error raised in the block propagates as it is.
    """
    gated = False
    try:
        with atomic_write(final, suffix=".pending") as pending:
            yield pending
            gated = True
    except OSError as exc:
        if not gated:
            raise
        for report in unpublished:
            with suppress(OSError):  # Best effort: a folder that refused the rename may refuse this too.
                report.unlink(missing_ok=True)
        reason = exc.strerror or one_line(exc)
        raise OutputPathError(f"cannot replace {final} ({reason}): make {final.parent} writable and export "
                              f"again{note}") from None


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, *, opset: int | None = None) -> Path:
    """Export a toolchain checkpoint to a self-contained fp32 `.onnx` at `out_path` and return that path.

    `opset=None` lets torch pick its recommended opset; the one actually used is recorded in the metadata.
    The file is written atomically but NOT certified: callers that publish it as `model.onnx` pass a temporary
    name here, run `toolchain.export.parity.check_parity` on it, and rename only on pass (see `export_and_certify`).
    Raises `CheckpointError` for a bad checkpoint, `ExportError` when the exporter or `onnx.checker` fails.
    """
    ckpt = load_checkpoint(checkpoint_path)
    out_path = Path(out_path)
    model = ckpt.build_model()
    try:
        with torch.no_grad():
            proto = _to_onnx_proto(model, ckpt.feature_config.input_shape, opset)
    except ExportError:
        raise
    except Exception as exc:  # torch.export / onnxscript raise many types; the user needs one line.
        raise ExportError(
            f"exporting {ckpt.path} ({ckpt.arch.value}, opset {opset or 'default'}) failed: {one_line(exc)}"
        ) from exc
    _check_graph_signature(proto, ckpt.feature_config.channels, ckpt.num_classes)
    write_metadata(proto, metadata_for(ckpt, used_opset(proto)))
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model of {ckpt.path} fails onnx.checker: {one_line(exc)}") from exc
    return save_model_atomic(proto, out_path)
