"""The one ORT session factory and softmax, on a tiny graph built here (no torch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME
from toolchain.inference.providers import (
    CPU_EP,
)
from toolchain.inference.session import candidate_providers, open_session, run_batches, run_logits, softmax


def _linear_model(path, n_in=6, n_out=3):
    weight = np.arange(n_in * n_out, dtype=np.float32).reshape(n_in, n_out) / 10
    graph = helper.make_graph(
        [helper.make_node("Flatten", [INPUT_NAME], ["flat"]), helper.make_node("MatMul", ["flat", "w"], [OUTPUT_NAME])],
        "linear",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, 2, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n_out])],
        [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.flatten())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return weight


def test_session_runs_on_cpu_in_batches_of_any_size(tmp_path):
    weight = _linear_model(tmp_path / "m.onnx")
    session = open_session(tmp_path / "m.onnx", CPU_EP, threads=1)
    assert session.get_providers()[0] == CPU_EP and CPU_EP in candidate_providers()
    x = np.random.default_rng(0).standard_normal((5, 1, 2, 3)).astype(np.float32)
    expected = x.reshape(5, -1) @ weight
    for batch in (1, 2, 5):
        np.testing.assert_allclose(run_batches(session, x, batch), expected, rtol=1e-5, atol=1e-5)


def test_softmax_is_stable_for_huge_logits():
    probs = softmax(np.array([[1e7, 0.0, -1e7], [1.0, 1.0, 1.0]], dtype=np.float32))
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(probs[1], 1 / 3)


def test_io_binding_and_padding_return_what_session_run_returns(onnx_model, features):
    session = open_session(onnx_model)
    (expected,) = session.run([OUTPUT_NAME], {INPUT_NAME: features})
    bound = run_logits(session, features, io_binding=True, device="cpu")
    np.testing.assert_allclose(bound, expected, rtol=1e-5, atol=1e-5)
    padded = run_logits(session, features[:3], io_binding=True, pad_to=8)
    assert padded.shape == (3, expected.shape[1]) and padded.dtype == np.float32
    np.testing.assert_allclose(padded, expected[:3], rtol=1e-4, atol=1e-4)  # Batch size changes ORT's blocking.
