"""Which layers INT8 hurts: the signal-to-quantization-noise ratio each Conv/Gemm loses, measured on calibration
clips, so that the fallback (`toolchain.export.int8.float_fallback`) can keep the most sensitive layers in float,
fewest first.

Both models (the prepared fp32 graph and its QDQ INT8 build) get every layer's input and output tensor as extra
graph outputs (QDQ keeps the float tensor names) and run on the same clips. A layer's SQNR is
10 log10(sum x^2 / sum (x - x_int8)^2) over the clips; the error accumulates through the net, so what ranks a layer
is what it adds: the SQNR of its input minus the SQNR of its output, in dB (what ORT's `qdq_loss_debug`
activation matching measures, one layer at a time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.export.onnx_graph import layer_tensors, with_outputs
from toolchain.inference.contract import INPUT_NAME
from toolchain.inference.providers import CPU_EP
from toolchain.inference.session import open_session

_TINY = 1e-30


def _sqnr(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    signal = sum(float(np.square(r.astype(np.float64)).sum()) for r in reference)
    noise = sum(float(np.square(r.astype(np.float64) - c.astype(np.float64)).sum())
                for r, c in zip(reference, candidate))
    return 10.0 * np.log10(max(signal, _TINY) / max(noise, _TINY))


def layer_sensitivity(prepared_path: str | Path, int8_path: str | Path, clips: np.ndarray,
                      layers: dict[str, str], scratch: str | Path) -> list[tuple[str, float]]:
    """[(layer, dB of SQNR it loses)] for every layer in `layers` (module name -> node name of the prepared
    graph), most sensitive first. `clips`: float32 (n, channels, n_mels, frames); `scratch`: a folder for the
    two instrumented copies (removed after)."""
    prepared_path, int8_path, scratch = Path(prepared_path), Path(int8_path), Path(scratch)
    tensors = layer_tensors(prepared_path, int8_path, layers)
    names = sorted({t for pair in tensors.values() for t in pair if t != INPUT_NAME})
    outputs: dict[str, dict[str, list[np.ndarray]]] = {}
    for tag, source in (("fp32", prepared_path), ("int8", int8_path)):
        probe = with_outputs(source, names, scratch / f".sensitivity-{tag}.onnx")
        try:
            session = open_session(probe, CPU_EP)
            found = {name: [] for name in names}
            for clip in clips:
                for name, value in zip(names, session.run(names, {INPUT_NAME: clip[np.newaxis]})):
                    found[name].append(value)
            outputs[tag] = found
        finally:
            probe.unlink(missing_ok=True)
    losses = []
    for layer, (source, result) in tensors.items():
        before = 200.0 if source == INPUT_NAME else _sqnr(outputs["fp32"][source], outputs["int8"][source])
        after = _sqnr(outputs["fp32"][result], outputs["int8"][result])
        losses.append((layer, round(before - after, 3)))
    return sorted(losses, key=lambda item: -item[1])
