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


def _python_engine(onnx_model: Path, clips: list[Path]) -> dict[str, tuple[str, list[float]]]:
    """{file name: (label, probabilities)} from the Python engine (python front end) on `clips` (one folder)."""
    from toolchain.scoring.engine import load_model, score_files
    from toolchain.scoring.engine_config import EngineConfig

    model = load_model(onnx_model, EngineConfig(decode_workers=0, intra_op_threads=2))
    rows = score_files(model, clips[0].parent, [p.name for p in clips], EngineConfig(decode_workers=0))
    return {r.file: (r.label, list(r.probabilities)) for r in rows}


@pytest.fixture(scope="module")
def python_engine(onnx_model, clips_at_model_rate) -> dict[str, tuple[str, list[float]]]:
    """The Python engine's results on the clips at the model's rate."""
    return _python_engine(onnx_model, clips_at_model_rate)


@pytest.fixture(scope="module")
def clips_at_any_rate(fsdd_dir, tmp_path_factory) -> list[Path]:
    """The six FSDD clips as recorded (8 kHz) and three of them at 44.1 and 48 kHz (soxr VHQ, float WAV)."""
    import soxr

    folder = tmp_path_factory.mktemp("any_rate")
    paths = []
    for k, name in enumerate(CLIP_NAMES):
        source = fsdd_dir / "recordings" / f"{name}.wav"
        shutil.copy(source, folder / source.name)
        paths.append(folder / source.name)
        if k % 2 == 0:
            y, rate = sf.read(source, dtype="float32")
            for to in (44_100, 48_000):
                path = folder / f"{name}_{to}.wav"
                sf.write(path, soxr.resample(y, rate, to, quality="VHQ"), to, subtype="FLOAT")
                paths.append(path)
    return paths


@pytest.fixture(scope="module")
def python_engine_any_rate(onnx_model, clips_at_any_rate) -> dict[str, tuple[str, list[float]]]:
    """The Python engine's results on the clips at any rate (its decoder resamples each file itself)."""
    return _python_engine(onnx_model, clips_at_any_rate)
