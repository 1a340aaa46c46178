"""The CUDA scoring path, tested without a GPU: every decision it makes, and every mechanism the CPU EP also has.

What CI can't run (no GPU): a session on the CUDA EP itself. What is covered instead: the provider list and CUDA
EP options handed to ORT, the one-line messages when CUDA can't run, the fp16-variant choice on real files and
reports written by the real `convert_fp16`, IO binding and batch padding on real sessions (the CPU EP has IO
binding too), and an fp16 model scored end to end through the engine and a flow shard.

Real clips: FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from support import fsdd_rows, read_rows
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.errors import ScoringError, VariantRejectedError
from toolchain.export.quantize import convert_fp16
from toolchain.inference.contract import INPUT_NAME, OUTPUT_NAME, PREFIX, variant_path
from toolchain.inference.providers import (
    CPU_EP,
    CUDA_EP,
    cuda_unavailable_message,
    execution_providers,
    preload_cuda_libraries,
)
from toolchain.inference.session import open_session, run_logits
from toolchain.io import file_sha256
from toolchain.scoring.engine import EngineConfig, load_model, score_files
from toolchain.scoring.folder import describe_model, folder_job, score_shard
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.precision import choose_model_file

CPU_ONLY = dict(decode_workers=0, intra_op_threads=1)  # A 2-core CI box: no pool, one ORT thread.


def copy_folder(model: Path, dest: Path, judged_on: str | None = None) -> Path:
    """A copy of the model's folder; `judged_on` rewrites the report's provider (what a GPU machine's export writes)."""
    shutil.copytree(model.parent, dest)
    if judged_on is not None:
        report = json.loads((dest / "parity.fp16.json").read_text())
        (dest / "parity.fp16.json").write_text(json.dumps({**report, "provider": judged_on}))
    return dest / model.name


def test_variant_name_is_the_exporters(tmp_path):
    model = tmp_path / "model.onnx"
    assert variant_path(model, "fp16") == tmp_path / "model.fp16.onnx"
    assert variant_path(model, "int8") == tmp_path / "model.int8.onnx" and variant_path(model, "fp32") == model


def test_cpu_runs_the_given_file_even_beside_a_certified_variant(certified, tmp_path):
    model = copy_folder(certified, tmp_path / "m", judged_on=CUDA_EP)
    assert choose_model_file(model, on_cuda=False).path == model
    assert choose_model_file(model, on_cuda=True, precision="fp32").path == model


def test_cuda_runs_the_variant_certified_on_cuda(certified, tmp_path):
    model = copy_folder(certified, tmp_path / "m", judged_on=CUDA_EP)
    choice = choose_model_file(model, on_cuda=True)
    assert choice.path == model.with_name("model.fp16.onnx") and "parity.fp16.json" in choice.reason


def test_cuda_keeps_fp32_when_the_variant_was_judged_only_on_cpu(certified):
    assert json.loads((certified.parent / "parity.fp16.json").read_text())["provider"] == CPU_EP  # As written here.
    choice = choose_model_file(certified, on_cuda=True)
    assert choice.path == certified
    assert f"judged on {CPU_EP}, not CUDA" in choice.reason and "export-onnx --fp16` on a GPU" in choice.reason
    # Asked for explicitly, a variant that passed its report runs wherever it was judged.
    assert choose_model_file(certified, on_cuda=True, precision="fp16").path == variant_path(certified, "fp16")


def test_missing_variant_or_report_keeps_fp32(certified, tmp_path):
    no_variant = copy_folder(certified, tmp_path / "a", judged_on=CUDA_EP)
    variant_path(no_variant, "fp16").unlink()
    choice = choose_model_file(no_variant, on_cuda=True)
    assert choice.path == no_variant and "no model.fp16.onnx beside model.onnx" in choice.reason
    with pytest.raises(ScoringError, match="precision fp16 requested .* no model.fp16.onnx"):
        choose_model_file(no_variant, on_cuda=False, precision="fp16")

    no_report = copy_folder(certified, tmp_path / "b", judged_on=CUDA_EP)
    (no_report.parent / "parity.fp16.json").unlink()
    assert "parity.fp16.json is missing" in choose_model_file(no_report, on_cuda=True).reason

    foreign = copy_folder(certified, tmp_path / "c", judged_on=CUDA_EP)
    (foreign.parent / "parity.fp16.json").write_text(json.dumps({"precision": "int8", "status": "kept", "kept": True}))
    assert "is not the fp16 report" in choose_model_file(foreign, on_cuda=True).reason


def test_rejected_variant_is_never_used(onnx_model, features, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(onnx_model, model)
    with pytest.raises(VariantRejectedError):  # No agreement reaches 101 %: the real rule rejects it.
        convert_fp16(model, variant_path(model, "fp16"), features, min_agreement=1.01, report_path=tmp_path / "parity.fp16.json")
    assert not variant_path(model, "fp16").exists()
    shutil.copy(onnx_model, variant_path(model, "fp16"))  # A stray file with the variant's name must not be trusted.
    choice = choose_model_file(model, on_cuda=True)
    assert choice.path == model and "says model.fp16.onnx failed" in choice.reason


def test_stale_variant_from_an_earlier_export_is_not_used(certified, tmp_path):
    model = copy_folder(certified, tmp_path / "m", judged_on=CUDA_EP)
    proto = onnx.load(str(model))  # Re-exported later without --fp16: same weights, a new export time.
    for prop in proto.metadata_props:
        if prop.key == PREFIX + "exported_at":
            prop.value = json.dumps("2099-01-01T00:00:00+00:00")
    onnx.save(proto, str(model))
    choice = choose_model_file(model, on_cuda=True)
    assert choice.path == model and "exported from another model.onnx" in choice.reason


def test_fp16_model_scores_through_the_engine_and_names_itself(certified, fsdd_dir, tmp_path):
    model = load_model(certified, EngineConfig(precision="fp16", **CPU_ONLY))
    variant = variant_path(certified, "fp16")
    assert model.path == variant and model.metadata.precision == "fp16"
    assert model.sha256 == file_sha256(variant) and model.source_sha256 == file_sha256(certified)
    assert load_model(certified, EngineConfig(**CPU_ONLY)).path == certified  # auto on CPU: the given file.

    files = [r["filename"] for r in fsdd_rows(fsdd_dir) if r["speaker"] == "yweweler" and r["take"] == "45"]
    fp16_rows = list(score_files(model, fsdd_dir, files, EngineConfig(batch_size=4, **CPU_ONLY)))
    assert [r.status for r in fp16_rows] == ["ok"] * len(files)
    assert all(sum(r.probabilities) == pytest.approx(1.0, abs=1e-6) for r in fp16_rows)

    # A Prefect shard: the job is started with the named file's identity (describe_model), the fp16 file runs,
    # and the CSV rows name the file that ran.
    identity = describe_model(certified)
    ledger = Ledger.in_dir(tmp_path)
    ledger.start_run("r1", mode="folder", target=str(fsdd_dir), model_path=identity.path,
                     model_sha256=identity.sha256)
    with folder_job(ledger, fsdd_dir, tmp_path, "r1", identity.sha256) as job:
        shard = score_shard(model, job, 0, files, EngineConfig(batch_size=4, **CPU_ONLY))
        rows = read_rows(shard.part.path)
    assert shard.part.files_ok == len(files)
    assert {r["model_sha256"] for r in rows} == {model.sha256}


def test_io_binding_and_padding_return_what_session_run_returns(onnx_model, features):
    session = open_session(onnx_model)
    (expected,) = session.run([OUTPUT_NAME], {INPUT_NAME: features})
    bound = run_logits(session, features, io_binding=True, device="cpu")
    np.testing.assert_allclose(bound, expected, rtol=1e-5, atol=1e-5)
    padded = run_logits(session, features[:3], io_binding=True, pad_to=8)
    assert padded.shape == (3, expected.shape[1]) and padded.dtype == np.float32
    np.testing.assert_allclose(padded, expected[:3], rtol=1e-4, atol=1e-4)  # Batch size changes ORT's blocking.


def test_engine_io_binding_switch_changes_nothing_but_the_call(onnx_model, fsdd_dir):
    plain = load_model(onnx_model, EngineConfig(**CPU_ONLY))
    bound = load_model(onnx_model, EngineConfig(io_binding="on", **CPU_ONLY))
    assert (plain.io_binding, bound.io_binding) == (False, True)  # auto: off on CPU.
    files = [r["filename"] for r in fsdd_rows(fsdd_dir) if r["speaker"] == "george" and r["take"] == "44"]
    config = EngineConfig(batch_size=4, **CPU_ONLY)
    for a, b in zip(score_files(plain, fsdd_dir, files, config), score_files(bound, fsdd_dir, files, config)):
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_cuda_provider_gets_its_options_and_a_cpu_fallback():
    assert execution_providers(use_cuda=False) == [CPU_EP]
    (cuda, options), cpu = execution_providers(use_cuda=True, device_id=1, conv_algo_search="HEURISTIC")
    assert (cuda, cpu) == (CUDA_EP, CPU_EP)
    assert options == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                       "cudnn_conv_use_max_workspace": "1", "do_copy_in_default_stream": "1"}
    assert execution_providers(use_cuda=True)[0][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    with pytest.raises(ScoringError, match="conv_algo_search='FASTEST' is not one of EXHAUSTIVE"):
        execution_providers(use_cuda=True, conv_algo_search="FASTEST")


@pytest.mark.parametrize("field, value", [("precision", "int8"), ("io_binding", "yes"),
                                          ("conv_algo_search", "fast"), ("device_id", -1)])
def test_engine_config_refuses_unknown_settings(field, value):
    with pytest.raises(ScoringError, match=field):
        EngineConfig(**{field: value})


def test_cuda_messages_name_the_missing_part_and_the_fix():
    available = [CUDA_EP, CPU_EP]
    no_ep = cuda_unavailable_message([CPU_EP], driver_found=False)
    no_driver = cuda_unavailable_message(available, driver_found=False)
    no_libs = cuda_unavailable_message(available, True, CPU_EP, "Failed to load libcudnn.so.9: not found")
    assert "pip install onnxruntime-gpu" in no_ep
    assert "libcuda.so.1" in no_driver and "onnxruntime-gpu[cuda,cudnn]" in no_driver
    for text in ("fell back to CPUExecutionProvider", "CUDA 13", "cuDNN 9", "preload_dlls", "libcudnn.so.9",
                 "onnxruntime-gpu[cuda,cudnn]", "--provider auto"):
        assert text in no_libs
    assert all("\n" not in m and m.startswith("provider 'cuda' requested") for m in (no_ep, no_driver, no_libs))


def test_score_help_offers_the_gpu_settings_a_user_changes():
    result = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--precision", "--device-id", "--provider", "--batch-size"):
        assert option in result.output
    assert "--io-binding" not in result.output and "--conv-algo-search" not in result.output


def test_preloading_cuda_libraries_never_raises_or_prints(capsys):
    preload_cuda_libraries.cache_clear()
    assert isinstance(preload_cuda_libraries(), str)  # "" where the nvidia-* wheels load, ORT's complaint if not.
    assert capsys.readouterr().out == ""  # ORT prints failures; a CLI's stdout must carry only its result.
