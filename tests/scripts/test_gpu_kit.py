"""scripts/gpu_kit.sh and its install.sh, rehearsed as the lent GPU machine will use them: a kit built for this
interpreter, its parts gathered in a stash, verified and installed with no package index into a target folder,
then scripts/gpu_check.sh run (on the CPU, a resnet18) by a Python that holds only what that machine has.

The machine's Python is imitated by a fresh virtual environment without pip's registry access that sees only the
distributions that machine has (its package list, read there), linked from this environment: torch, onnx, numpy,
... but not onnxruntime, librosa, soundfile or soxr, which the kit must bring.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The distributions the lent GPU machine's Python holds (its package list, read there in 2026-11).
MACHINE_HAS = {
    "absl-py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio",
    "attrs", "botorch", "build", "certifi", "charset-normalizer", "chex", "click", "cloudpickle", "cmake",
    "colorama", "contourpy", "coverage", "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit",
    "cupy-cuda13x", "cycler", "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock",
    "flatbuffers", "flax", "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch", "grpcio", "h11", "h5py",
    "hf-xet", "httpcore", "httpx", "huggingface-hub", "humanize", "hypothesis", "idna", "imageio", "iniconfig",
    "interface-meta", "jax", "jax-cuda13-pjrt", "jax-cuda13-plugin", "jaxlib", "jaxtyping", "jinja2", "joblib",
    "kiwisolver", "lazy-loader", "lightning", "lightning-utilities", "linear-operator", "lineax", "llvmlite",
    "lxml", "markdown", "markdown-it-py", "markupsafe", "matplotlib", "mdurl", "meson", "ml-dtypes", "mpi4py",
    "mpmath", "msgpack", "multidict", "multipledispatch", "mypy-extensions", "nanobind", "narwhals", "networkx",
    "ninja", "numba", "numba-cuda", "numpy", "numpyro", "nvidia-cublas", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc",
    "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-cufile", "nvidia-curand",
    "nvidia-cusolver", "nvidia-cusparse", "nvidia-cusparselt-cu13", "nvidia-ml-py", "nvidia-nccl-cu13",
    "nvidia-nvjitlink", "nvidia-nvshmem-cu13", "nvidia-nvtx", "onnx", "onnx-ir", "onnxruntime", "onnxscript",
    "opencv-python-headless", "optax", "opt-einsum", "opt-einsum-fx", "optimistix", "orbax-checkpoint",
    "packaging", "pandas", "pathspec", "patsy", "peft", "pillow", "pip", "pluggy", "portalocker",
    "prometheus-client", "propcache", "protobuf", "psutil", "pyarrow", "pybind11", "py-cpuinfo", "pygments",
    "pyparsing", "pyproject-hooks", "pyre-extensions", "pytest", "pytest-benchmark", "pytest-cov", "pytest-mock",
    "pytest-timeout", "pytest-xdist", "python-dateutil", "pytorch-lightning", "pyyaml", "regex", "requests",
    "rich", "sacrebleu", "safetensors", "scikit-build-core", "scikit-image", "scikit-learn", "scipy", "seaborn",
    "sentencepiece", "sentence-transformers", "setuptools", "shellingham", "simplejson", "six",
    "sortedcontainers", "statsmodels", "sympy", "tabulate", "tensorboard", "tensorboard-data-server",
    "tensorstore", "threadpoolctl", "tifffile", "tiktoken", "timm", "tokenizers", "toolz", "torch", "torchaudio",
    "torchdiffeq", "torch-geometric", "torchmetrics", "torchvision", "tqdm", "transformers", "treescope",
    "triton", "typer", "typing-extensions", "typing-inspect", "urllib3", "uvloop", "wadler-lindig", "werkzeug",
    "wheel", "wrapt", "xarray", "xxhash", "yarl", "zipp",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _machine_like_python(root: Path) -> Path:
    """A venv whose site-packages links only MACHINE_HAS's distributions of this environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    site = root / "machine-site"
    site.mkdir()
    for dist in importlib.metadata.distributions():
        name = _normal(dist.metadata["Name"])
        if name not in MACHINE_HAS:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or ()} - {".."}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    [venv_site] = (root / "venv" / "lib").glob("python3.*/site-packages")
    (venv_site / "machine.pth").write_text(str(site) + "\n")
    return root / "venv" / "bin" / "python"


@pytest.mark.slow
def test_the_kit_installs_offline_and_the_check_runs_on_what_the_gpu_machine_has(tmp_path, fsdd_dir):
    kit, stash, site = tmp_path / "kit", tmp_path / "stash", tmp_path / "site"
    built = subprocess.run(["bash", str(REPO / "scripts" / "gpu_kit.sh")], capture_output=True, text=True,
                           timeout=1200, env={**os.environ, "KIT": str(kit), "KIT_PYTHON": sys.executable,
                                              "KIT_DATA": str(fsdd_dir), "XZ_LEVEL": "0"})
    assert built.returncode == 0, built.stdout + built.stderr
    parts = sorted(kit.glob("p*/kit.tar.xz.part*"))
    assert len(parts) >= 2 and all(p.stat().st_size <= 60 * 2**20 for p in parts)  # ORT alone is > 60 MiB.
    plan = (kit / "PLAN.md").read_text()
    assert f"| {len(parts)} | `.gpu-kit/p{len(parts)}` |" in plan and "scripts/gpu_check.sh" in plan
    last_command = plan.split("```bash\n")[1].split("\n```")[0]
    assert len(last_command) <= 2000  # What one device call takes.

    python = _machine_like_python(tmp_path)
    probe = "import torch, onnx, numpy; import importlib.util as u; print(u.find_spec('onnxruntime'), u.find_spec('librosa'))"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True,
                          env={"PATH": os.environ["PATH"]}).stdout.split() == ["None", "None"]
    # No registry: pip may read nothing but the rebuilt wheels.
    offline = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull,
               "PIP_NO_INDEX": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    install = kit / f"p{len(parts)}" / "install.sh"  # The one that travels with the last part.

    stash.mkdir()
    for part in parts[:-1]:  # One part short: named, nothing installed.
        shutil.copy(part, stash)
    short = subprocess.run(["bash", str(install), str(stash), str(site), str(python)], capture_output=True,
                           text=True, env=offline)
    assert short.returncode == 1 and parts[-1].name in short.stderr and not site.exists()
    shutil.copy(parts[-1], stash)
    damaged = stash / parts[0].name
    original = damaged.read_bytes()
    damaged.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    bad = subprocess.run(["bash", str(install), str(stash), str(site), str(python)], capture_output=True, text=True,
                         env=offline)
    assert bad.returncode == 1 and "damaged" in bad.stderr and parts[0].name in bad.stderr and not site.exists()
    damaged.write_bytes(original)

    done = subprocess.run(["bash", str(install), str(stash), str(site), str(python)], capture_output=True, text=True,
                          env=offline, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (stash / "data" / "fsdd" / "recordings").is_dir()

    out = tmp_path / "gpu_check.json"
    check = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                           timeout=900, env={**offline, "PYTHON": str(python), "PYTHONPATH": str(site),
                                             "GPU_CHECK_PROVIDER": "cpu", "ARCH": "resnet18", "CLIPS": "40",
                                             "BATCH_SIZES": "4,8", "OUT_JSON": str(out),
                                             "TOOLCHAIN_FSDD": str(stash / "data" / "fsdd")})
    assert check.returncode == 0, check.stdout + check.stderr
    figures = json.loads(out.read_text())
    assert figures["preflight"]["onnxruntime"] == "1.31.1"  # The kit's: the machine-like Python had none.
    assert figures["score"]["clips"] == figures["score"]["ok"] == 40
