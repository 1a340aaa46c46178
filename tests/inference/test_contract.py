"""The model-file contract: names of the model, its variants and their reports, in one place; what a scoring
model is, and the one-line refusal of anything else."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from toolchain.errors import ModelMetadataError
from toolchain.inference.contract import (
    LENGTHS_NAME,
    MODEL_NAME,
    OUTPUT_NAME,
    WAVEFORM_NAME,
    model_file_problem,
    read_metadata,
    read_scoring_metadata,
    report_path,
    variant_path,
)


def test_variant_and_report_names(tmp_path):
    model = tmp_path / MODEL_NAME
    assert variant_path(model, "fp32") == model
    assert variant_path(model, "int8") == tmp_path / "model.int8.onnx"
    assert variant_path(model, "fp16") == tmp_path / "model.fp16.onnx"
    assert report_path(model) == tmp_path / "parity.json"
    assert report_path(model, "int8") == tmp_path / "parity.int8.json"
    assert report_path(tmp_path / "other.onnx", "fp16") == tmp_path / "parity.fp16.json"


def test_a_folder_is_not_a_model_file(tiny_onnx, tmp_path):
    folder = tmp_path / "x.onnx"
    folder.mkdir()
    assert model_file_problem(folder).startswith("is a directory, not an ONNX file: pass the .onnx file")
    (folder / MODEL_NAME).write_bytes(tiny_onnx.read_bytes())
    assert model_file_problem(folder) == f"is a directory, not an ONNX file: pass {folder / MODEL_NAME}"
    assert model_file_problem(tmp_path / "absent.onnx").startswith("does not exist")
    assert model_file_problem(tiny_onnx) == ""
    with pytest.raises(ModelMetadataError, match=f"ONNX model {folder} is a directory"):
        read_metadata(folder)


def _waveform_model(tiny_onnx, out):
    """tiny_onnx's metadata on a graph with model.audio.onnx's inputs (waveform, lengths -> logits)."""
    source = onnx.load(str(tiny_onnx))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [WAVEFORM_NAME], ["mean"], keepdims=1),
         helper.make_node("Concat", ["mean", "mean"], [OUTPUT_NAME], axis=1)],
        "audio", [helper.make_tensor_value_info(WAVEFORM_NAME, TensorProto.FLOAT, ["batch", "samples"]),
                  helper.make_tensor_value_info(LENGTHS_NAME, TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    proto.metadata_props.extend(source.metadata_props)
    onnx.save(proto, str(out))
    return out


def test_scoring_metadata_refuses_what_is_not_a_scoring_model(tiny_onnx, tmp_path):
    assert read_scoring_metadata(tiny_onnx) == read_metadata(tiny_onnx)
    audio = _waveform_model(tiny_onnx, tmp_path / "model.audio.onnx")
    assert read_metadata(audio).classes == ("a", "b")  # Its metadata is complete: export reads it.
    with pytest.raises(ModelMetadataError) as caught:
        read_scoring_metadata(audio)
    assert str(caught.value).startswith(f"{audio} is the waveform-in model for Node and the browser; pass the "
                                        "model.onnx beside it")
    renamed = onnx.load(str(tiny_onnx))
    renamed.graph.input[0].name = "input"
    renamed.graph.node[0].input[0] = "input"
    onnx.save(renamed, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ModelMetadataError, match=r"has inputs \['input'\].*expected 'features' -> 'logits'"):
        read_scoring_metadata(tmp_path / "foreign.onnx")
    wide = onnx.load(str(tiny_onnx))
    wide.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    with pytest.raises(ModelMetadataError, match="outputs 3 logits but its metadata lists 2 classes"):
        read_scoring_metadata(tmp_path / "wide.onnx")
