"""The scoring engine and folder scoring on real FSDD clips and on generated bad input.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from support import TRAINED_TAKES, fsdd_rows, read_rows

from toolchain.errors import FeatureConfigError, ModelMetadataError, ScoringError
from toolchain.inference.contract import PREFIX, variant_path
from toolchain.inference.providers import (
    cuda_driver_present,
)
from toolchain.io import file_sha256
from toolchain.scoring.engine import load_model, score_files
from toolchain.scoring.engine_config import EngineConfig
from toolchain.scoring.ledger import Ledger
from toolchain.scoring.models import describe_model
from toolchain.scoring.runs import folder_job
from toolchain.scoring.shards import score_shard

CPU_ONLY = dict(decode_workers=0, intra_op_threads=1)

# Two decode workers exercise the process pool; one ORT thread keeps a 2-core CI box from oversubscribing.
CONFIG = EngineConfig(batch_size=8, decode_workers=1, intra_op_threads=1)




def test_scores_unseen_fsdd_takes_well_above_chance(model, fsdd_dir):
    # Take 40 of every speaker: never seen in training or validation.
    assert 40 not in TRAINED_TAKES
    rows = [r for r in fsdd_rows(fsdd_dir) if r["take"] == "40"]
    files = [r["filename"] for r in rows]
    scored = list(score_files(model, fsdd_dir, files, CONFIG))

    assert [s.file for s in scored] == files  # One row per file, in input order.
    assert all(s.status == "ok" for s in scored)
    assert {s.label for s in scored} <= set(model.classes)
    for s in scored:
        assert s.probabilities is not None and len(s.probabilities) == len(model.classes)
        assert sum(s.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert s.confidence == max(s.probabilities)
    accuracy = np.mean([s.label == r["label"] for s, r in zip(scored, rows)])
    # 0.35 on 60 clips is > 5 standard deviations above chance (0.10) and leaves room for training variance.
    assert accuracy >= 0.35, f"accuracy {accuracy:.2f} on {len(rows)} unseen takes (chance 0.10)"


def test_engine_reproduces_the_training_validation_accuracy(model, trained_checkpoint, fsdd_dir):
    """ONNX scoring of the checkpoint's validation clips agrees with what training measured on them."""
    from toolchain.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained_checkpoint)
    labels = {str(fsdd_dir / r["filename"]): r["label"] for r in fsdd_rows(fsdd_dir)}
    files = [f for f in ckpt.val_files if f in labels]
    assert len(files) == len(ckpt.val_files) >= 30
    scored = list(score_files(model, "/", files, CONFIG))
    accuracy = np.mean([s.label == labels[f] for s, f in zip(scored, files)])
    assert model.metadata.metrics["val_acc"] == pytest.approx(ckpt.metrics["val_acc"])
    assert accuracy == pytest.approx(ckpt.metrics["val_acc"], abs=2 / len(files) + 1e-9)


def test_provider_is_reported(model):
    assert model.provider == model.session.get_providers()[0]
    assert model.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_cuda_demanded_runs_on_cuda_or_refuses_clearly(onnx_model):
    if cuda_driver_present():
        try:
            assert load_model(onnx_model, EngineConfig(provider="cuda")).provider == "CUDAExecutionProvider"
        except ScoringError as exc:  # Driver present but CUDA 13 libraries missing: must say so.
            assert "CUDA 13" in str(exc) and "preload_dlls" in str(exc) and "\n" not in str(exc)
    else:
        with pytest.raises(ScoringError, match="provider 'cuda' requested") as info:
            load_model(onnx_model, EngineConfig(provider="cuda"))
        assert "libcuda.so.1" in str(info.value) and "onnxruntime-gpu[cuda,cudnn]" in str(info.value)


def test_auto_provider_falls_back_to_cpu_without_cuda(onnx_model):
    loaded = load_model(onnx_model, EngineConfig(provider="auto", decode_workers=0, intra_op_threads=1))
    if not cuda_driver_present():
        assert loaded.provider == "CPUExecutionProvider"


def with_metadata(onnx_model: Path, out: Path, **changes: str | None) -> Path:
    """A copy of the model with some toolchain metadata values replaced (None removes the key)."""
    proto = onnx.load(str(onnx_model))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(PREFIX + key, None)
        else:
            props[PREFIX + key] = value
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return out


def test_model_without_metadata_is_refused(onnx_model, tmp_path):
    stripped = with_metadata(onnx_model, tmp_path / "bare.onnx", classes=None, feature_config=None)
    with pytest.raises(ModelMetadataError, match="no toolchain metadata"):
        load_model(stripped)


def test_feature_config_this_library_cannot_reproduce_is_refused(onnx_model, tmp_path):
    foreign = with_metadata(onnx_model, tmp_path / "foreign.onnx", feature_fingerprint='"0123456789abcdef"')
    with pytest.raises(FeatureConfigError, match="fingerprint"):
        load_model(foreign)
    newer = with_metadata(
        onnx_model, tmp_path / "newer.onnx",
        feature_config='{"sample_rate": 22050, "pcen": true}',
    )
    with pytest.raises(FeatureConfigError, match="unknown fields"):
        load_model(newer)


def test_labels_that_disagree_with_the_graph_are_refused(onnx_model, tmp_path):
    wrong = with_metadata(onnx_model, tmp_path / "wrong.onnx", classes='["a", "b", "c"]')
    with pytest.raises(ModelMetadataError, match="3 classes"):
        load_model(wrong)


def test_short_files_score_exactly_as_one_clip_each(model, fsdd_dir):
    """A file no longer than the model's window is one window, featurized as a training clip: the engine's
    probabilities are those of the clip's features through the model (the engine before windows), to 1e-6."""
    from toolchain.audio.features import features_from_path, stack_channels
    from toolchain.inference.session import run_logits, softmax

    files = [r["filename"] for r in fsdd_rows(fsdd_dir) if r["speaker"] == "lucas" and r["take"] == "46"]
    rows = list(score_files(model, fsdd_dir, files, EngineConfig(batch_size=4, **CPU_ONLY)))
    batch = np.stack([stack_channels(features_from_path(fsdd_dir / f, model.feature_config), model.feature_config)
                      for f in files])
    want = softmax(run_logits(model.session, batch))
    for row, probs in zip(rows, want):
        assert len(row.windows) == 1 and row.aggregation == "mean"
        np.testing.assert_allclose(row.probabilities, probs, atol=1e-6)
        assert row.scored_s <= row.duration_s <= model.feature_config.clip_seconds


def test_events_in_a_long_recording_are_found_at_their_times(model, fsdd_dir, tmp_path):
    """Real clips placed at 3 s, 17 s and 41 s of a 60-s recording (a quiet noise floor between): by default each
    clip gets one window from its onset, labelled with its digit; on the grid, the windows that hold each clip
    carry its label, and the file has windows covering every non-silent second."""
    import soundfile

    from toolchain.audio.decode import load_audio
    from toolchain.audio.features import trim_bounds
    from toolchain.audio.windows import WindowRule
    from toolchain.inference.predictions import top_class

    cfg = model.feature_config
    truth = {r["filename"]: r["label"] for r in fsdd_rows(fsdd_dir) if r["take"] == "48" and r["speaker"] == "jackson"}
    candidates = sorted(truth)
    alone = {f: r for f, r in zip(candidates, score_files(model, fsdd_dir, candidates, EngineConfig(**CPU_ONLY)))}
    # Clips the model gets right on their own, three different digits.
    chosen: dict[str, str] = {}
    for f, r in alone.items():
        if r.label == truth[f] and r.confidence > 0.5 and truth[f] not in chosen.values():
            chosen[f] = truth[f]
    chosen = dict(list(chosen.items())[:3])
    assert len(chosen) == 3, {f: (r.label, r.confidence) for f, r in alone.items()}
    # A quiet noise floor (~40 dB below the speech), as in a real recording: nothing is trimmed, all 60 s count.
    recording = np.random.default_rng(0).normal(0, 1e-3, 60 * cfg.sample_rate).astype(np.float32)
    spans = []  # Where each clip's sound is, in the recording: the clip's own non-silent part.
    for offset, f in zip((3.0, 17.0, 41.0), chosen):
        clip = load_audio(fsdd_dir / f, cfg)
        at = int(offset * cfg.sample_rate)
        recording[at:at + clip.size] += clip
        lo, hi = trim_bounds(clip, cfg)
        spans.append(((at + lo) / cfg.sample_rate, (at + hi) / cfg.sample_rate))
    soundfile.write(tmp_path / "field.wav", recording, cfg.sample_rate, subtype="FLOAT")

    [row] = score_files(model, tmp_path, ["field.wav"], EngineConfig(**CPU_ONLY))  # Windows on the sounds.
    assert len(row.windows) == 3 and row.scored_s == pytest.approx(sum(e - s for s, e in spans), abs=0.3)
    for w, (start, end), digit in zip(row.windows, spans, chosen.values()):
        assert w.start_s == pytest.approx(start, abs=0.1) and w.end_s == pytest.approx(end, abs=0.15)
        assert top_class(w.probabilities, model.classes)[0] == digit, (start, digit)

    [row] = score_files(model, tmp_path, ["field.wav"], EngineConfig(**CPU_ONLY), rule=WindowRule(sound_db=None))
    hop = cfg.clip_seconds / 2
    assert row.duration_s == pytest.approx(60.0) and row.scored_s == pytest.approx(60.0)
    assert row.windows[0].start_s == 0.0 and row.windows[-1].end_s == pytest.approx(60.0)
    assert all(b.start_s - a.start_s == pytest.approx(hop) for a, b in zip(row.windows, row.windows[1:-1]))
    assert len(row.windows) == int((60.0 - cfg.clip_seconds) / hop) + 1
    for (start, end), digit in zip(spans, chosen.values()):
        # The windows that hold the whole clip: at least one says its digit, and they lie within one hop of it.
        holding = [w for w in row.windows if w.start_s <= start and w.end_s >= end]
        assert holding and all(start - w.start_s <= cfg.clip_seconds - (end - start) for w in holding)
        labels = [top_class(w.probabilities, model.classes)[0] for w in holding]
        assert digit in labels, (start, digit, labels)
        first = holding[-1]  # The one that starts nearest the clip, as its training clips did.
        assert start - first.start_s <= hop and labels[-1] == digit, (start, digit, labels)


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


def test_concurrent_model_calls_change_nothing_but_the_speed(onnx_model, fsdd_dir, tmp_path):
    """Several model calls in flight (the CPU default is two): the same rows, in input order, as one call at a
    time, over short clips, a bad file and a long recording streamed in parts, batches cutting across files."""
    import soundfile

    from toolchain.audio.windows import LONG_FILE_SECONDS

    clips = [fsdd_dir / r["filename"] for r in fsdd_rows(fsdd_dir) if r["speaker"] == "nicolas" and r["take"] == "12"]
    files = [clip.name for clip in clips]
    long_rate = 8_000
    rng = np.random.default_rng(3)  # A noise floor with clicks every 2 s: a file the engine streams in parts.
    recording = rng.normal(0, 1e-3, int((LONG_FILE_SECONDS + 30) * long_rate)).astype(np.float32)
    recording[::long_rate * 2] = 0.5
    soundfile.write(tmp_path / "long.wav", recording, long_rate)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    for clip in clips:
        (tmp_path / clip.name).write_bytes(clip.read_bytes())
    names = [files[0], "broken.wav", *files[1:4], "long.wav", *files[4:]]
    results = {}
    for runners in (1, 3):
        config = EngineConfig(batch_size=3, decode_workers=1, intra_op_threads=1, runners=runners)
        model = load_model(onnx_model, config)
        assert model.runners == runners
        results[runners] = list(score_files(model, tmp_path, names, config))
    assert [r.file for r in results[3]] == names == [r.file for r in results[1]]
    assert [r.status for r in results[3]] == ["ok", "error", "ok", "ok", "ok", "ok", *["ok"] * (len(names) - 6)]
    long_row = results[3][5]
    assert len(long_row.windows) > 50
    for a, b in zip(results[1], results[3]):
        assert (a.label, a.error, len(a.windows)) == (b.label, b.error, len(b.windows))
        if a.status == "ok":
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
            np.testing.assert_allclose([w.probabilities for w in a.windows], [w.probabilities for w in b.windows],
                                       atol=1e-6)


def test_engine_io_binding_switch_changes_nothing_but_the_call(onnx_model, fsdd_dir):
    plain = load_model(onnx_model, EngineConfig(**CPU_ONLY))
    bound = load_model(onnx_model, EngineConfig(io_binding="on", **CPU_ONLY))
    assert (plain.io_binding, bound.io_binding) == (False, True)  # auto: off on CPU.
    files = [r["filename"] for r in fsdd_rows(fsdd_dir) if r["speaker"] == "george" and r["take"] == "44"]
    config = EngineConfig(batch_size=4, **CPU_ONLY)
    for a, b in zip(score_files(plain, fsdd_dir, files, config), score_files(bound, fsdd_dir, files, config)):
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_ort_refusals_keep_their_reason(tiny_onnx, tmp_path):
    """ORT buries the reason after a C++ signature; the message keeps the reason (here: a too-new IR version)."""
    proto = onnx.load(tiny_onnx)
    proto.ir_version = 99
    onnx.save(proto, tmp_path / "future.onnx")
    with pytest.raises(ScoringError, match=r"future.onnx: .*Unsupported model IR version: 99") as info:
        load_model(tmp_path / "future.onnx", EngineConfig(decode_workers=0, intra_op_threads=1))
    assert "onnxruntime_src" not in str(info.value)
