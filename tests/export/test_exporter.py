"""export_onnx: one self-contained, self-describing fp32 file with a dynamic batch axis.

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil

import numpy as np
import onnx
import pytest

from toolchain.audio.features import features_from_path, stack_channels
from toolchain.errors import CheckpointError, ExportError, OutputPathError
from toolchain.export.exporter import export_onnx, publishing, used_opset
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME, metadata_from_session, read_metadata
from toolchain.inference.session import open_session
from toolchain.io import file_sha256
from toolchain.training.checkpoint import load_checkpoint


def test_metadata_round_trips(exported_model):
    ckpt = load_checkpoint(exported_model.parity.checkpoint_path)
    meta = read_metadata(exported_model.model_path)
    assert meta.classes == ckpt.classes
    assert meta.feature_config == ckpt.feature_config
    assert meta.feature_fingerprint == ckpt.feature_config.fingerprint
    assert meta.arch == ckpt.arch.value
    assert meta.checkpoint_sha256 == file_sha256(ckpt.path)
    assert meta.precision == "fp32"
    assert meta.metrics == ckpt.metrics
    assert meta.opset == used_opset(onnx.load(str(exported_model.model_path), load_external_data=False))
    exported_at = dt.datetime.fromisoformat(meta.exported_at)
    assert exported_at.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - exported_at) < dt.timedelta(hours=1)
    # The scorer reads the same thing from an open session.
    assert metadata_from_session(open_session(exported_model.model_path)) == meta


def test_graph_has_named_io_and_dynamic_batch(exported_model):
    model = onnx.load(str(exported_model.model_path))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims, out_dims = inp.type.tensor_type.shape.dim, out.type.tensor_type.shape.dim
    assert in_dims[0].dim_param and not in_dims[0].HasField("dim_value")
    assert out_dims[0].dim_param == in_dims[0].dim_param


def test_model_file_alone_loads_and_runs_elsewhere(exported_model, tmp_path, fsdd_dir):
    model = onnx.load(str(exported_model.model_path), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    lonely = tmp_path / "elsewhere" / "copied.onnx"
    lonely.parent.mkdir()
    shutil.copy(exported_model.model_path, lonely)
    assert sorted(p.name for p in lonely.parent.iterdir()) == ["copied.onnx"]

    session = open_session(lonely)
    meta = metadata_from_session(session)
    clips = sorted((fsdd_dir / "recordings").glob("*_theo_0.wav"))[:5]
    batch = np.stack([stack_channels(features_from_path(c, meta.feature_config), meta.feature_config) for c in clips])
    for size in (1, 5):
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch[:size]})
        assert logits.shape == (size, len(meta.classes))
        assert np.all(np.isfinite(logits))


def test_export_leaves_only_the_requested_file(exported_model, tmp_path):
    out = tmp_path / "sub" / "x.onnx"
    assert export_onnx(exported_model.parity.checkpoint_path, out, opset=18) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.onnx"]
    assert read_metadata(out).opset == 18


def test_exporter_failure_is_one_line_export_error(exported_model, tmp_path, monkeypatch):
    import toolchain.export.exporter as onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::weird\nlong traceback-ish detail")

    monkeypatch.setattr(onnx_export, "_to_onnx_proto", broken)
    with pytest.raises(ExportError) as info:
        export_onnx(exported_model.parity.checkpoint_path, tmp_path / "m.onnx")
    assert "\n" not in str(info.value) and "aten::weird" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_not_a_checkpoint_is_refused(tmp_path):
    bogus = tmp_path / "model.pth"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="model.pth"):
        export_onnx(bogus, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_exported_weights_are_the_checkpoints(exported_model):
    """Export did not re-initialize anything: the fc bias is in the graph, bit for bit."""
    ckpt = load_checkpoint(exported_model.parity.checkpoint_path)
    bias = ckpt.state_dict["fc.bias"].numpy()
    model = onnx.load(str(exported_model.model_path))
    arrays = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer]
    assert any(a.shape == bias.shape and np.array_equal(a, bias) for a in arrays)


def test_a_refused_rename_is_one_line_and_removes_the_reports_of_the_model(tmp_path, monkeypatch):
    final, report = tmp_path / "model.onnx", tmp_path / "parity.json"
    final.write_bytes(b"earlier model")

    def refuse(src, dst):  # What the OS says when the folder was made read-only after the checks.
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputPathError) as caught, publishing(final, unpublished=[report], note="; kept") as pending:
        pending.write_bytes(b"new model")
        report.write_text('{"status": "passed"}')
    assert str(caught.value) == (f"cannot replace {final} (Permission denied): make {tmp_path} writable and export "
                                 "again; kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"] and final.read_bytes() == b"earlier model"


def test_an_error_in_the_block_is_not_a_rename_failure(tmp_path):
    report = tmp_path / "parity.json"
    report.write_text("{}")
    with pytest.raises(FileNotFoundError), publishing(tmp_path / "model.onnx", unpublished=[report]):
        (tmp_path / "missing").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.json"]  # Not the gate's: it stays.
