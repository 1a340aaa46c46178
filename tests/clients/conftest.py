"""Fixtures for the no-Python clients: their npm packages, the certified audio model, clips at its rate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from toolchain.audio.decode import load_audio
from toolchain.inference.contract import read_metadata, variant_path

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
CLIP_NAMES = ("0_jackson_30", "3_nicolas_31", "5_theo_32", "8_yweweler_33", "9_lucas_34", "2_george_35")


@pytest.fixture(scope="session")
def node() -> str:
    """`node`, with each client's npm packages installed (`npm ci --ignore-scripts`: onnxruntime-node's postinstall
    would download GPU binaries from a host these machines cannot reach; its package already holds the CPU
    library). Missing Node is a failure: `.ci/run` installs Debian's nodejs and npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node/npm are missing: apt-get install -y nodejs npm (.ci/run does)")
    for client in ("node", "web"):
        if not (CLIENTS / client / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=CLIENTS / client,
                           check=True, capture_output=True, timeout=600)
    return node


@pytest.fixture(scope="session")
def audio_model(exported_model) -> Path:
    """The trained model's `model.audio.onnx`, written and certified by the session's export."""
    path = variant_path(exported_model.model_path, "audio")
    assert exported_model.audio is not None and exported_model.audio.passed and path.is_file()
    return path


@pytest.fixture(scope="module")
def clips_at_model_rate(audio_model, fsdd_dir, tmp_path_factory) -> list[Path]:
    """Six FSDD clips (8 kHz) resampled to the model's rate by the library, saved as 16-bit WAV."""
    config = read_metadata(audio_model).feature_config
    folder = tmp_path_factory.mktemp("at_rate")
    paths = []
    for name in CLIP_NAMES:
        path = folder / f"{name}.wav"
        sf.write(path, load_audio(fsdd_dir / "recordings" / f"{name}.wav", config), config.sample_rate,
                 subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def python_engine(onnx_model, clips_at_model_rate) -> dict[str, tuple[str, list[float]]]:
    """{file name: (label, probabilities)} from the Python engine (python front end) on the same files."""
    from toolchain.scoring.engine import load_model, score_files
    from toolchain.scoring.engine_config import EngineConfig

    model = load_model(onnx_model, EngineConfig(decode_workers=0, intra_op_threads=2))
    folder = clips_at_model_rate[0].parent
    rows = score_files(model, folder, [p.name for p in clips_at_model_rate], EngineConfig(decode_workers=0))
    return {r.file: (r.label, list(r.probabilities)) for r in rows}
