"""`model.audio.onnx`: the whole feature contract as standard ONNX ops in front of the classifier.

Inputs:
  waveform  float32 [batch, samples]   mono at the model's sample rate (metadata `feature_config.sample_rate`),
                                       rows of unequal length zero-padded on the right
  lengths   int64 [batch]               valid samples of each row
  trim      bool []  (default true)     trim leading/trailing silence as `librosa.effects.trim` (frame 2048, hop
                                       512, `trim_top_db` below the loudest frame); false takes each row as it is
                                       (the scorer passes windows it already cut from a trimmed recording)
Outputs:
  logits         float32 [batch, classes]
  probabilities  float32 [batch, classes]   softmax of the logits
  features       float32 [batch, channels, n_mels, frames]   the log-mel image the classifier saw

Per row, exactly `toolchain.audio.features` for one clip: trim (energy of 512-sample chunks, summed over centred
2048-sample frames), cut or zero-pad to `num_samples`, peak-normalize, centred zero-padded STFT (periodic Hann,
`n_fft`, `hop_length`), power, the librosa Slaney mel filterbank (a constant), dB with the 1e-10 floor, the 80-dB
clip below the peak, min-max to [0, 1] (all-zero when flat: silent input), stacked to `channels`. Only standard
ops (opset >= 18: STFT, and Reduce* axes as inputs): no custom-op library is needed to run it, in any ONNX Runtime (C++, C#, Java, Node,
the browser). A row must hold at least one sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolchain.audio.config import FeatureConfig
from toolchain.audio.features import AMIN, TOP_DB, TRIM_FRAME, TRIM_HOP, window_and_filterbank
from toolchain.errors import ExportError
from toolchain.export.exporter import used_opset
from toolchain.inference.contract import (
    INPUT_NAME,
    LENGTHS_NAME,
    OUTPUT_NAME,
    PREFIX,
    PROBABILITIES_NAME,
    TRIM_NAME,
    WAVEFORM_NAME,
    read_metadata,
    write_metadata,
)

WAVEFORM, LENGTHS, TRIM = WAVEFORM_NAME, LENGTHS_NAME, TRIM_NAME
LOGITS, PROBABILITIES, FEATURES = OUTPUT_NAME, PROBABILITIES_NAME, INPUT_NAME  # The classifier's input, exposed.
MIN_OPSET = 18  # STFT (17) and Reduce* ops taking their axes as an input (18).
_PREFIX = "frontend/"


class _Graph:
    """A tiny builder: constants and nodes with generated names, all prefixed so they cannot clash with the
    classifier's."""

    def __init__(self):
        self.nodes, self.initializers, self._n = [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{_PREFIX}{hint}_{self._n}"

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs) -> str | list[str]:
        outs = [name] if name and outputs == 1 else [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if outputs == 1 else outs


def _width(g: _Graph, x: str) -> str:
    """int64 scalar: the size of axis 1 of `x` (samples, or chunks)."""
    return g.op("Gather", g.op("Shape", x), g.const(1, np.int64), axis=0)


def _arange(g: _Graph, stop: str | int) -> str:
    """int64 [stop]: 0, 1, ..., stop - 1."""
    stop = g.const(stop, np.int64) if isinstance(stop, int) else stop
    return g.op("Range", g.const(0, np.int64), stop, g.const(1, np.int64))


def _before(g: _Graph, index: str, bound: str) -> str:
    """bool [batch, n]: index[j] < bound[row], for a 1-d `index` (n,) and a per-row `bound` (batch,)."""
    i64 = np.int64
    return g.op("Less", g.op("Unsqueeze", index, g.const([0], i64)), g.op("Unsqueeze", bound, g.const([1], i64)))


def _db(g: _Graph, x: str) -> str:
    """10 * log10(max(AMIN, x))."""
    return g.op("Mul", g.op("Log", g.op("Max", x, g.const(AMIN))), g.const(10.0 / np.log(10.0)))


def _trim_bounds(g: _Graph, y: str, lengths: str, top_db: float) -> tuple[str, str]:
    """(start, end) int64 [batch] of `toolchain.audio.features.trim_from_energy` for each row."""
    i64 = np.int64
    width = _width(g, y)  # L
    chunks_n = g.op("Div", g.op("Add", width, g.const(TRIM_HOP - 1, i64)), g.const(TRIM_HOP, i64))  # ceil(L/512)
    pad = g.op("Sub", g.op("Mul", chunks_n, g.const(TRIM_HOP, i64)), width)
    pads = g.op("Concat", g.const([0, 0, 0], i64), g.op("Unsqueeze", pad, g.const([0], i64)), axis=0)
    padded = g.op("Pad", g.op("Mul", y, y), pads)
    shape = g.op("Concat", g.const([0], i64), g.op("Unsqueeze", chunks_n, g.const([0], i64)),
                 g.const([TRIM_HOP], i64), axis=0)
    chunks = g.op("ReduceSum", g.op("Reshape", padded, shape), g.const([2], i64), keepdims=0)  # [B, K]
    # Frame i (centred, 2048 samples) covers chunks i-2 .. i+1: a length-4 box sum over two zeros either side.
    box = g.op("Pad", chunks, g.const([0, 2, 0, 2], i64))
    energy = g.op("Squeeze", g.op("Conv", g.op("Unsqueeze", box, g.const([1], i64)),
                                  g.const(np.ones((1, 1, TRIM_FRAME // TRIM_HOP)))), g.const([1], i64))  # [B, K+1]
    db = _db(g, g.op("Div", energy, g.const(float(TRIM_FRAME))))
    frames = _arange(g, g.op("Add", chunks_n, g.const(1, i64)))
    n_frames = g.op("Add", g.op("Div", lengths, g.const(TRIM_HOP, i64)), g.const(1, i64))  # 1 + n // 512
    valid = _before(g, frames, n_frames)
    peak = g.op("ReduceMax", g.op("Where", valid, db, g.const(-1e30)), g.const([1], i64), keepdims=1)
    loud = g.op("And", valid, g.op("Greater", db, g.op("Sub", peak, g.const(float(top_db)))))
    loud_i = g.op("Cast", loud, to=6)  # int32: ArgMax over booleans is not in every runtime.
    first = g.op("ArgMax", loud_i, axis=1, keepdims=0, select_last_index=0)
    last = g.op("ArgMax", loud_i, axis=1, keepdims=0, select_last_index=1)
    start = g.op("Mul", first, g.const(TRIM_HOP, i64))
    end = g.op("Min", lengths, g.op("Mul", g.op("Add", last, g.const(1, i64)), g.const(TRIM_HOP, i64)))
    return start, end


def _clip(g: _Graph, y: str, start: str, end: str, num_samples: int) -> str:
    """Each row's [start, end) cut or zero-padded to `num_samples`, peak-normalized: [B, num_samples]."""
    i64 = np.int64
    j = _arange(g, num_samples)
    src = g.op("Add", g.op("Unsqueeze", start, g.const([1], i64)), g.op("Unsqueeze", j, g.const([0], i64)))
    inside = _before(g, j, g.op("Sub", end, start))
    last_index = g.op("Sub", _width(g, y), g.const(1, i64))
    src = g.op("Min", g.op("Max", src, g.const(0, i64)), last_index)
    clip = g.op("Where", inside, g.op("GatherElements", y, src, axis=1), g.const(0.0))
    peak = g.op("ReduceMax", g.op("Abs", clip), g.const([1], i64), keepdims=1)
    safe = g.op("Where", g.op("Greater", peak, g.const(0.0)), peak, g.const(1.0))
    return g.op("Div", clip, safe)


def _log_mel(g: _Graph, clip: str, config: FeatureConfig) -> str:
    """[B, num_samples] -> [B, n_mels, frames] in [0, 1], as `toolchain.audio.features.log_mel_fast`."""
    i64 = np.int64
    window, filterbank = window_and_filterbank(config)
    half = config.n_fft // 2
    signal = g.op("Unsqueeze", g.op("Pad", clip, g.const([0, half, 0, half], i64)), g.const([2], i64))
    spectrum = g.op("STFT", signal, g.const(config.hop_length, i64), g.const(window), g.const(config.n_fft, i64),
                    onesided=1)  # [B, frames, bins, 2]
    power = g.op("ReduceSumSquare", spectrum, g.const([3], i64), keepdims=0)
    mel = g.op("Transpose", g.op("MatMul", power, g.const(filterbank)), perm=[0, 2, 1])
    axes = g.const([1, 2], i64)
    db = g.op("Sub", _db(g, mel), _db(g, g.op("ReduceMax", mel, axes, keepdims=1)))
    db = g.op("Max", db, g.op("Sub", g.op("ReduceMax", db, axes, keepdims=1), g.const(TOP_DB)))
    lo, hi = g.op("ReduceMin", db, axes, keepdims=1), g.op("ReduceMax", db, axes, keepdims=1)
    span = g.op("Sub", hi, lo)
    flat = g.op("Greater", span, g.const(0.0))
    scaled = g.op("Div", g.op("Sub", db, lo), g.op("Where", flat, span, g.const(1.0)))
    return g.op("Where", flat, scaled, g.const(0.0))


def frontend_graph(config: FeatureConfig, opset: int, ir_version: int):
    """The front end alone as an `onnx.ModelProto`: (waveform, lengths, trim) -> features."""
    if opset < MIN_OPSET:
        raise ExportError(f"the classifier uses opset {opset}; the in-graph front end needs >= {MIN_OPSET} (STFT): "
                          f"re-export with --opset {MIN_OPSET} or later, or pass --no-audio-model")
    g = _Graph()
    y = g.op("Where", _before(g, _arange(g, _width(g, WAVEFORM)), LENGTHS), WAVEFORM, g.const(0.0))  # Padding: 0.
    start, end = _trim_bounds(g, y, LENGTHS, config.trim_top_db)
    start = g.op("Where", TRIM, start, g.op("Mul", LENGTHS, g.const(0, np.int64)))
    end = g.op("Where", TRIM, end, LENGTHS)
    image = g.op("Unsqueeze", _log_mel(g, _clip(g, y, start, end, config.num_samples), config),
                 g.const([1], np.int64))
    g.op("Concat", *([image] * config.channels), axis=1, name=FEATURES)
    trim_default = numpy_helper.from_array(np.array(True), TRIM)
    graph = helper.make_graph(
        g.nodes, "toolchain-frontend",
        [helper.make_tensor_value_info(WAVEFORM, TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info(LENGTHS, TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info(TRIM, TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT,
                                       ["batch", config.channels, config.n_mels, config.num_frames])],
        initializer=[*g.initializers, trim_default],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def audio_model(classifier, config: FeatureConfig):
    """`classifier` (the certified `model.onnx` as an `onnx.ModelProto`, input `features`, output `logits`) with
    the front end in front: the `model.audio.onnx` graph (metadata is the caller's to write)."""
    opset = used_opset(classifier)
    front = frontend_graph(config, opset, classifier.ir_version)
    front.opset_import.extend(o for o in classifier.opset_import if o.domain not in ("", "ai.onnx"))
    merged = onnx.compose.merge_models(front, classifier, io_map=[(FEATURES, FEATURES)])
    merged.graph.node.append(helper.make_node("Softmax", [LOGITS], [PROBABILITIES], axis=1,
                                              name=_PREFIX + "softmax"))
    classes = [d for d in classifier.graph.output[0].type.tensor_type.shape.dim][1]
    merged.graph.output.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT,
                                                             ["batch", classes.dim_value]))
    merged.graph.output.append(helper.make_tensor_value_info(
        FEATURES, TensorProto.FLOAT, ["batch", config.channels, config.n_mels, config.num_frames]))
    del merged.metadata_props[:]
    return merged


INPUT_CONTRACT = {
    "inputs": {
        WAVEFORM: "float32 [batch, samples]: mono at feature_config.sample_rate, rows zero-padded on the right",
        LENGTHS: "int64 [batch]: valid samples per row (at least 1)",
        TRIM: "bool [] (optional, default true): trim leading/trailing silence first",
    },
    "outputs": {
        LOGITS: "float32 [batch, classes]", PROBABILITIES: "float32 [batch, classes] (softmax of logits)",
        FEATURES: "float32 [batch, channels, n_mels, frames]: the log-mel image, in [0, 1]",
    },
}


def write_audio_model(classifier_path: str | Path, out_path: str | Path) -> Path:
    """Build `model.audio.onnx` from a certified `model.onnx` at `out_path` (not yet gated), with the classifier's
    metadata plus `toolchain.input_contract` (the inputs and outputs above, and the sample rate)."""
    meta = read_metadata(classifier_path)
    proto = audio_model(onnx.load(str(classifier_path)), meta.feature_config)
    write_metadata(proto, meta)
    contract = {**INPUT_CONTRACT, "sample_rate": meta.feature_config.sample_rate}
    proto.metadata_props.add(key=PREFIX + "input_contract", value=json.dumps(contract, sort_keys=True))
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the audio model built from {classifier_path} fails onnx.checker: {exc}") from exc
    onnx.save_model(proto, str(out_path), save_as_external_data=False)
    return Path(out_path)
