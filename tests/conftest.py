"""Shared fixtures. Real audio comes from the Free Spoken Digit Dataset in ../shared/data/fsdd.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0 (attribution kept as its license requires).
"""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import CHROMIUM, TRAINED_FEATURES, TRAINED_TAKES, TRAINED_TEST_TAKE, fsdd_rows, write_fsdd_manifest

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("TOOLCHAIN_FSDD", REPO.parent / "shared" / "data" / "fsdd"))


# A test that needs one of these is slow (minutes of training, a Prefect server, a browser): `make test-fast`
# (`-m "not slow"`) leaves it out. Marking by fixture keeps the marker true when a test gains such a dependency.
SLOW_FIXTURES = frozenset({
    "trained_checkpoint", "exported_model", "onnx_model", "prefect_api", "prefect_env", "dask_cluster", "chromium",
    "mlflow_server", "mlflow_server_root",
})


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _own_ledger_location(monkeypatch) -> None:
    """Every test starts with the default ledger location, and gets it back afterwards: `--ledger-url` run through
    CliRunner sets TOOLCHAIN_LEDGER_URL for its process (so the runs it starts inherit it), which is this one."""
    from toolchain.scoring.ledger_db import LEDGER_URL_ENV

    monkeypatch.setenv(LEDGER_URL_ENV, "")  # Records the value before (unset: removed again afterwards)...
    monkeypatch.delenv(LEDGER_URL_ENV)  # ...which `delenv` alone does not when the variable is unset.


@pytest.fixture(autouse=True)
def _own_mlflow(monkeypatch, tmp_path) -> None:
    """Every test tracks into its own local MLflow store and caches registered models in its own folder (a
    `toolchain train` run tracks by default; nothing may land in the checkout or the user's home)."""
    store = tmp_path.with_name(tmp_path.name + "-mlflow")  # Beside the test's folder: tests list tmp_path.
    store.mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("TOOLCHAIN_MODEL_CACHE", str(store / "model-cache"))


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_root) -> str:
    """The URL of a real `mlflow server` (SQLite backend, artifacts proxied from a local folder), as a team would
    run it. Tests that share it use registered-model names of their own."""
    return (mlflow_server_root / "url").read_text()


@pytest.fixture(scope="session")
def mlflow_server_root(tmp_path_factory) -> Iterator[Path]:
    """The folder of the session's `mlflow server`: its database, its artifact store (`artifacts/`), its log,
    and `url`."""
    import sys
    import urllib.request

    from support import free_port, stop, wait_until

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"), "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(healthy, 240, "mlflow server", server, log)
        (root / "url").write_text(url)
        yield root
    finally:
        stop(server)


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, which Playwright drives (its own browser download is never used)."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run does)")


@pytest.fixture
def unwritable() -> Iterator[Callable[[Path], None]]:
    """`unwritable(path)` makes a file or folder refuse writes even to root (`chattr +i`, as an operator's
    immutable flag or a read-only mount would), or to this user (`chmod a-w`) when not root; undone afterwards."""
    made: list[tuple[Path, int]] = []

    def make(path: Path) -> None:
        if os.geteuid() == 0:
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"chattr +i {path} failed ({done.stderr.strip()}): this test needs an ext4-like "
                            "file system and CAP_LINUX_IMMUTABLE when run as root")
        made.append((path, path.stat().st_mode))
        if os.geteuid() != 0:
            path.chmod(path.stat().st_mode & ~0o222)

    yield make
    for path, mode in reversed(made):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(mode)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's postgresql package; .ci/run installs it), listening on a Unix
    socket only, trust auth; yields a base URL (database `postgres`). Stopped at the end of the session."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.fail("PostgreSQL is missing (no /usr/lib/postgresql/*/bin/initdb): apt-get install -y postgresql "
                    "(.ci/run does)")
    pgbin = bins[-1].parent
    work = Path(tempfile.mkdtemp(prefix="toolchain-pg-"))  # Not under pytest's root-only tmp: postgres runs it.
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:  # initdb and postgres refuse to run as root.
        shutil.chown(work, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run([*as_pg, str(pgbin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    subprocess.run([*as_pg, str(pgbin / "pg_ctl"), "-D", str(data), "-l", str(work / "postgres.log"), "-w",
                    "-t", "120", "-o", f"-c listen_addresses='' -k {sock} -c max_connections=200", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={sock}"
    finally:
        subprocess.run([*as_pg, str(pgbin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


_databases = itertools.count()


@pytest.fixture
def postgres_ledger_url(postgres) -> str:
    """A URL of a new, empty database on the throwaway cluster: one ledger per test."""
    import psycopg

    name = f"ledger_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return postgres.replace("/postgres?", f"/{name}?")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_location(request, tmp_path) -> str:
    """Where a ledger lives, once per kind: an SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger-out" / "ledger.sqlite")
    return request.getfixturevalue("postgres_ledger_url")


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    """The FSDD folder (labels.csv + recordings/). Missing data is a failure, never a skip."""
    if not (FSDD / "labels.csv").is_file():
        pytest.fail(f"FSDD not found at {FSDD}: put ../shared beside the checkout or set TOOLCHAIN_FSDD")
    return FSDD


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, fsdd_dir) -> Path:
    """An untrained resnet18 checkpoint over the 10 FSDD classes; val_files are real FSDD clips."""
    import torch

    from toolchain.audio.config import DEFAULT_CONFIG
    from toolchain.training.checkpoint import make_payload, save_checkpoint
    from toolchain.training.config import best_checkpoint_name
    from toolchain.training.model import build_model

    torch.manual_seed(0)
    rows = fsdd_rows(fsdd_dir)
    classes = sorted({r["label"] for r in rows})
    model = build_model("resnet18", len(classes), weights="none")
    val = [str(fsdd_dir / r["filename"]) for r in rows if r["speaker"] == "jackson" and int(r["take"]) < 1]
    payload = make_payload(model, "resnet18", classes, DEFAULT_CONFIG, epoch=1, metrics={"val_acc": 0.1},
                           train_args={"arch": "resnet18"}, val_files=val)
    out = tmp_path_factory.mktemp("tiny") / best_checkpoint_name("resnet18")
    return save_checkpoint(payload, out)


@pytest.fixture(scope="session")
def exported_model(trained_checkpoint, tmp_path_factory):
    """`export_and_certify` of `trained_checkpoint`, run once per session -> `ExportResult` (model.onnx +
    parity.json, 6 clips); the checkpoint path is `result.parity.checkpoint_path`. Tests that alter the model must
    work on a copy.
    """
    from toolchain.export.certify import ExportOptions, export_and_certify

    checkpoint = trained_checkpoint
    out = tmp_path_factory.mktemp("exported") / "model.onnx"
    return export_and_certify(checkpoint, ExportOptions(out=out, parity_samples=6))


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, fsdd_dir) -> Path:
    """The best checkpoint of one real, brief training run (the only training of that size in the suite).

    What it is: resnet18, `--weights none`, lr 1e-3, 6 epochs, the reference notebook's recipe (no augmentation,
    plateau, selected on accuracy), trained by `toolchain.training.train.train` on FSDD takes
    0-7 of all six speakers (480 clips) with group = speaker, so the group-aware split holds one whole speaker out
    as validation: `checkpoint.val_files` are that speaker's 80 real FSDD clips (absolute paths) and
    `metrics["val_acc"]` is speaker-held-out accuracy (well above the 10 % chance level).
    NOTE its feature config is NOT the default: clip_seconds=1.0, so inputs are (3, 128, 44). Take shapes from
    `load_checkpoint(path).feature_config` (or the ONNX metadata), never from DEFAULT_CONFIG.
    Its folder (`path.parent`) is a complete run folder: resnet_18_last.pth, metrics.csv, training_curves.png,
    confusion_matrix.png, classification_report.txt, test_* reports, test_predictions_resnet.csv, summary.json.
    The training manifest (`train_args["data"]`) also lists one undecodable file (`broken.wav`, excluded and
    named in summary.json); the test set (`train_args["test"]`) is take 49 of every speaker plus that undecodable
    file (an error row in the predictions CSV). Features are cached in `train_args["cache_dir"]`.
    Read-only for users: copy it before modifying anything.
    """
    from toolchain.audio.config import FeatureConfig
    from toolchain.training.config import TrainConfig
    from toolchain.training.train import train

    root = tmp_path_factory.mktemp("trained")
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot really audio at all")
    manifest = write_fsdd_manifest(fsdd_dir, root / "train.csv", takes=TRAINED_TAKES)
    with manifest.open("a", newline="") as f:
        csv.writer(f).writerow([str(broken), "zero", "george"])
    test_csv = write_fsdd_manifest(fsdd_dir, root / "test.csv", takes=range(TRAINED_TEST_TAKE, TRAINED_TEST_TAKE + 1))
    with test_csv.open("a", newline="") as f:
        csv.writer(f).writerow([str(broken), "one", "george"])
    config = TrainConfig(
        data=str(manifest), test=str(test_csv), out=str(root / "run"), arch="resnet18", weights="none",
        epochs=6, lr=1e-3, cache_dir=str(root / "cache"), num_workers=2,
        feature_config=FeatureConfig(**TRAINED_FEATURES),
        # The reference notebook's recipe: 6 epochs are too few for augmentation and a cosine warm-up to pay off,
        # and the tests downstream need a model well above chance, not the new defaults (tests/training covers those).
        augment=False, schedule="plateau", warmup_epochs=0, zero_init_residual=False, select_on="accuracy",
    )
    return train(config).best_checkpoint


@pytest.fixture(scope="session")
def onnx_model(exported_model) -> Path:
    """the trained model as scoring sees it, a self-describing `.onnx` (the parity-certified export of
    `trained_checkpoint`, shared with the export tests so the suite exports once). Read-only: copy to modify."""
    return exported_model.model_path


@pytest.fixture(scope="module")
def features(onnx_model, fsdd_dir):
    """(6, 3, n_mels, frames) float32 features of real clips, in `onnx_model`'s own feature config."""
    from toolchain.export.clips import Clip, featurize_clips
    from toolchain.inference.contract import read_metadata

    config = read_metadata(onnx_model).feature_config
    clips = [Clip(fsdd_dir / "recordings" / f"{d}_nicolas_41.wav") for d in range(6)]
    return featurize_clips(clips, config)[0]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny self-describing `.onnx` (no torch, no training): a linear map over the features with toolchain
    metadata for classes `a`, `b`. Enough wherever only the model's identity and metadata matter."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from toolchain.audio.config import FeatureConfig
    from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME, ModelMetadata, write_metadata

    config = FeatureConfig(clip_seconds=1.0, n_mels=16)
    c, m, f = config.input_shape
    weight = np.random.default_rng(0).standard_normal((c * m * f, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", [INPUT_NAME], ["flat"]), helper.make_node("MatMul", ["flat", "w"], [OUTPUT_NAME])],
        "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", c, m, f])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.flatten())],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    write_metadata(proto, ModelMetadata(classes=("a", "b"), feature_config=config, arch="linear",
                                        checkpoint_sha256="0" * 64))
    path = tmp_path_factory.mktemp("tiny_onnx") / "model.onnx"
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx_successor(tiny_onnx, tmp_path_factory) -> Path:
    """`tiny_onnx` retrained, as far as the ledger can tell: the same graph in another file (another sha256)."""
    import onnx

    proto = onnx.load(tiny_onnx)
    proto.doc_string = "retrained"
    path = tmp_path_factory.mktemp("tiny_onnx_successor") / "model.onnx"
    onnx.save(proto, path)
    return path
