"""The scoring engine: audio files -> (label, confidence, probabilities) rows through ONNX Runtime.

Shared by `toolchain score` and the Prefect flow `score-folder`. The model file is the only source of truth: its
metadata (`toolchain.inference.contract`) gives the class labels and the feature config, and a model whose config this
library cannot reproduce is refused before any audio is read.

Pipeline: decode + featurize (`toolchain.audio`) in spawned worker processes (`toolchain.scoring.workers`), at
most `max_in_flight` files ahead of the model, while batched ONNX Runtime inference runs in up to
`ScoringModel.runners` threads at once (ORT releases the GIL). Rows come out as an iterator in the order of the
input list, so memory stays bounded whatever the number of files, and a caller can score any explicit list of
files (a shard) on its own. How to run the model
(batch size, provider, threads, precision, front end) is an `EngineConfig` (`toolchain.scoring.engine_config`).

On a GPU (`toolchain.inference.providers` and `toolchain.scoring.precision` hold those decisions): the CUDA EP with cuDNN's exhaustive algorithm search,
every batch padded to one shape and run through IO binding, and the certified fp16 variant of the model when
there is one; CPU tests cover each decision and mechanism (docs/performance.md says what has run on a GPU).
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.audio.config import FeatureConfig
from toolchain.audio.features import stack_channels
from toolchain.audio.windows import WindowRule
from toolchain.errors import ScoringError, one_line
from toolchain.inference.contract import (
    LENGTHS_NAME,
    OUTPUT_NAME,
    TRIM_NAME,
    WAVEFORM_NAME,
    ModelMetadata,
    check_scoring_graph,
    metadata_from_session,
    model_file_problem,
    read_scoring_metadata,
    variant_path,
)
from toolchain.inference.predictions import Aggregation, aggregate, top_class
from toolchain.inference.providers import (
    CPU_EP,
    CUDA_EP,
    cuda_driver_present,
    cuda_unavailable_message,
    preload_cuda_libraries,
)
from toolchain.inference.session import open_session, run_logits, softmax
from toolchain.io import file_sha256
from toolchain.progress import NullProgress, ProgressReporter
from toolchain.scoring.engine_config import EngineConfig, resolve_runners, resolve_threads
from toolchain.scoring.precision import (
    ModelChoice,
    audio_certificate,
    choose_model_file,
)
from toolchain.scoring.workers import ordered_windows, shared_pool


@dataclass(frozen=True)
class ScoringModel:
    """An open ONNX Runtime session plus what the model says about itself."""

    path: Path  # The .onnx file that runs: the one asked for, or its certified fp16 variant on CUDA.
    sha256: str  # sha256 of `path`, written in CSV rows (the ledger keys runs by `source_sha256`).
    metadata: ModelMetadata
    provider: str  # The execution provider that actually runs (session.get_providers()[0]).
    session: Any  # onnxruntime.InferenceSession
    decode_workers: int
    intra_op_threads: int
    source_sha256: str = ""  # sha256 of the file the caller named (== sha256 unless a variant was chosen).
    choice: str = ""  # Why `path` runs, one line (e.g. why the fp16 variant was or was not used).
    io_binding: bool = False
    device_id: int = 0
    graph_frontend: bool = False  # `path` is a model.audio.onnx: windows go in as samples.
    runners: int = 1  # Model calls in flight at once (`engine_config.resolve_runners`).

    @property
    def on_cuda(self) -> bool:
        return self.provider == CUDA_EP

    @property
    def classes(self) -> tuple[str, ...]:
        return self.metadata.classes

    @property
    def feature_config(self) -> FeatureConfig:
        return self.metadata.feature_config


def _wants_cuda(provider: str, available: list[str]) -> bool:
    """Whether to ask ORT for the CUDA EP; `ScoringError` when provider 'cuda' cannot possibly start."""
    if provider == "cpu":
        return False
    driver = cuda_driver_present()
    if CUDA_EP in available and driver:
        return True
    if provider == "cuda":
        raise ScoringError(cuda_unavailable_message(available, driver))
    return False


def _check_signature(session: Any, meta: ModelMetadata, source: str, waveform: bool) -> None:
    """Refuse a graph whose inputs/outputs do not match what its metadata promises (`check_scoring_graph`);
    `waveform`: the graph front end chose a model.audio.onnx."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    check_scoring_graph(meta, inputs, outputs, source, waveform=waveform)


def _ort_reason(exc: Exception) -> str:
    """ORT's first line without the C++ source location and signature it buries the reason under."""
    text = one_line(exc, limit=4000)
    # "... failed:/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) Unsupported model IR version: 14"
    tail = re.split(r"/onnxruntime_src/\S+ \S+\(.*?\) ", text)
    return (tail[0].rstrip(":") + ": " + tail[-1]) if len(tail) > 1 else text


def _open_session(path: Path, use_cuda: bool, threads: int, config: EngineConfig) -> Any:
    try:
        return open_session(path, CUDA_EP if use_cuda else CPU_EP, threads=threads, device_id=config.device_id,
                            conv_algo_search=config.conv_algo_search)
    except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, ... for a damaged or foreign file.
        raise ScoringError(
            f"cannot load ONNX model {path}: {_ort_reason(exc)}; pass a file written by `toolchain export-onnx`"
        ) from None


def load_model(path: str | Path, config: EngineConfig = EngineConfig()) -> ScoringModel:
    """Open `path` with ONNX Runtime (CUDA EP first when it can start, then CPU) and read its metadata.

    On CUDA with precision "auto", a certified `model.fp16.onnx` beside `path` runs instead (see
    `toolchain.scoring.precision.choose_model_file`); the returned model's `path`/`sha256` name the file that runs.
    Raises `ScoringError` for a missing/unreadable file or a folder (or provider 'cuda' that cannot run),
    `ModelMetadataError` / `FeatureConfigError` for a model without our metadata, one that is not a scoring model
    (a model.audio.onnx, a foreign graph) or with a feature config this library cannot reproduce.
    """
    path = Path(path).expanduser()
    problem = model_file_problem(path)
    if problem:
        raise ScoringError(f"model {path} {problem}")
    import onnxruntime as ort

    available = ort.get_available_providers()
    use_cuda = _wants_cuda(config.provider, available)
    preload_report = preload_cuda_libraries() if use_cuda else ""
    workers, threads = resolve_threads(config, on_gpu=use_cuda)
    if workers:
        shared_pool(workers)  # Start (or reuse) the decode workers now: they warm up while ORT loads the model.
    choice = _frontend_file(path, config) or choose_model_file(path, on_cuda=use_cuda, precision=config.precision)
    session = _open_session(choice.path, use_cuda, threads, config)
    provider = session.get_providers()[0]
    if use_cuda and provider != CUDA_EP:
        if config.provider == "cuda":
            raise ScoringError(cuda_unavailable_message(available, True, provider, preload_report))
        # The GPU split (1 ORT thread, all cores decoding) and the fp16 choice are wrong for CPU: start over.
        workers, threads = resolve_threads(config, on_gpu=False)
        choice = _frontend_file(path, config) or choose_model_file(path, on_cuda=False, precision=config.precision)
        session = _open_session(choice.path, False, threads, config)
        provider = session.get_providers()[0]
    meta = metadata_from_session(session, str(choice.path))
    _check_signature(session, meta, str(choice.path), waveform=config.frontend == "graph")
    source_sha = file_sha256(path)
    sha = source_sha if choice.path == path else file_sha256(choice.path)
    io_binding = config.io_binding == "on" or (config.io_binding == "auto" and provider == CUDA_EP)
    return ScoringModel(choice.path, sha, meta, provider, session, workers, threads, source_sha, choice.reason,
                        io_binding and config.frontend == "python", config.device_id, config.frontend == "graph",
                        resolve_runners(config, on_gpu=provider == CUDA_EP))


def _frontend_file(path: Path, config: EngineConfig) -> ModelChoice | None:
    """With the graph front end, the certified `model.audio.onnx` beside `path` (None: the python front end)."""
    if config.frontend != "graph":
        return None
    if config.precision not in ("auto", "fp32"):
        raise ScoringError(f"--frontend graph runs model.audio.onnx, which is fp32: drop --precision "
                           f"{config.precision} or use --frontend python")
    read_scoring_metadata(path)  # The file named is not opened by ORT here: refuse a model.audio.onnx by name now.
    problem = audio_certificate(path)
    if problem:
        raise ScoringError(f"--frontend graph needs a certified model.audio.onnx beside {path}: {problem}")
    return ModelChoice(variant_path(path, "audio"), "graph front end: model.audio.onnx")


@dataclass(frozen=True)
class WindowScore:
    """One window of a file: where it lies in the original file and the model's probabilities for it."""

    start_s: float
    end_s: float
    probabilities: tuple[float, ...]
    audible: bool = True  # False: silence by the trim's rule (`toolchain.audio.windows`), not counted.


@dataclass(frozen=True)
class ScoredRow:
    """One file's result. `probabilities` follow `classes` order, aggregated over `windows`; None for error rows."""

    file: str  # As given by the caller (relative posix path for folder scoring).
    status: str  # "ok" | "error"
    label: str = ""
    confidence: float = float("nan")
    error: str = ""
    probabilities: tuple[float, ...] | None = None
    duration_s: float = float("nan")  # The decoded file's length.
    scored_s: float = float("nan")  # Seconds the windows cover (the file minus leading/trailing silence).
    windows: tuple[WindowScore, ...] = ()
    aggregation: str = ""

    @property
    def counted(self) -> tuple[WindowScore, ...]:
        """The windows the row's label, detections, events and health count: the audible ones (all of them in a
        file with none)."""
        audible = tuple(w for w in self.windows if w.audible)
        return audible or self.windows


def infer_logits(model: ScoringModel, batch: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Logits (n, n_classes) of one batch (n, channels, n_mels, frames) float32 -- or, for a model.audio.onnx,
    (n, num_samples) clips already cut and padded (its silence trim off) -- the way the engine runs it.

    On CUDA a short batch is padded to `batch_size` (one shape, one cuDNN algorithm search); IO binding as the
    model was loaded with.
    """
    if model.graph_frontend:
        lengths = np.full(len(batch), batch.shape[1], dtype=np.int64)
        feeds = {WAVEFORM_NAME: batch, LENGTHS_NAME: lengths, TRIM_NAME: np.array(False)}
        return model.session.run([OUTPUT_NAME], feeds)[0]
    return run_logits(model.session, batch, io_binding=model.io_binding, device="cuda" if model.on_cuda else "cpu",
                      device_id=model.device_id, pad_to=batch_size if model.on_cuda else None)


@dataclass
class _File:
    """A file whose windows are being scored."""

    index: int
    name: str
    error: str = ""
    duration_s: float = float("nan")
    scored_s: float = float("nan")
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    audible: list[bool] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    all_read: bool = False

    @property
    def done(self) -> bool:
        return self.all_read and (bool(self.error) or len(self.probabilities) == len(self.starts))

    def row(self, classes: tuple[str, ...], aggregation: Aggregation) -> ScoredRow:
        if self.error:
            return ScoredRow(self.name, "error", error=self.error)
        probs = np.stack(self.probabilities)
        audible = np.asarray(self.audible, dtype=bool)
        combined = aggregate(probs[audible] if audible.any() else probs, aggregation)
        label, confidence = top_class(combined, classes)
        windows = tuple(WindowScore(s, e, tuple(float(v) for v in p), bool(a))
                        for s, e, p, a in zip(self.starts, self.ends, probs, audible))
        return ScoredRow(self.name, "ok", label, confidence, "", tuple(float(v) for v in combined),
                         self.duration_s, self.scored_s, windows, aggregation.value)


def score_files(
    model: ScoringModel,
    root: str | Path,
    files: Sequence[str],
    config: EngineConfig = EngineConfig(),
    progress: ProgressReporter = NullProgress(),
    rule: WindowRule = WindowRule(),
    aggregation: Aggregation | str = Aggregation.mean,
) -> Iterator[ScoredRow]:
    """Score `files` (paths relative to `root`, or absolute) and yield one row per file, in input order.

    Every file is scored whole, in windows (`toolchain.audio.windows`, cut by `rule`); windows of many files share
    the model's batches, and a file's row (probabilities aggregated by `aggregation`) comes out once all its
    windows are scored. A file that cannot be decoded yields an error row and never stops the run; features are
    computed with the model's own feature config.
    """
    root = Path(root)
    aggregation = Aggregation(aggregation)
    cfg = model.feature_config
    rule.hop_for(cfg)  # A hop longer than the model's window is refused before any file is read.
    rule = dataclasses.replace(rule, samples=model.graph_frontend)
    paths = [str(root / f) for f in files]
    progress.start("score", f"scoring {len(files)} files on {model.provider}", len(files))
    in_flight = config.max_in_flight or 2 * config.batch_size
    open_files: deque[_File] = deque()
    batch: list[tuple[_File, np.ndarray]] = []
    # Model calls in flight (`ScoringModel.runners`), oldest first: their windows' files wait for them.
    running: deque[tuple[list[_File], Future]] = deque()
    runner = ThreadPoolExecutor(model.runners, thread_name_prefix="model") if model.runners > 1 else None

    windows_done = 0

    def collect(states: list[_File], logits: np.ndarray) -> None:
        nonlocal windows_done
        for state, p in zip(states, softmax(logits)):
            state.probabilities.append(p)
        windows_done += len(states)  # A long file is one file for minutes: its windows show the progress.
        progress.advance("score", 0, description=f"scoring {len(files)} files on {model.provider}: "
                         f"{windows_done} windows")

    def run_batch(n: int) -> None:
        chunk, batch[:] = batch[:n], batch[n:]
        inputs = [f for _, f in chunk] if model.graph_frontend else [stack_channels(f, cfg) for _, f in chunk]
        stacked = np.stack(inputs).astype(np.float32, copy=False)
        states = [state for state, _ in chunk]
        if runner is None:
            collect(states, infer_logits(model, stacked, config.batch_size))
            return
        running.append((states, runner.submit(infer_logits, model, stacked, config.batch_size)))
        while len(running) > model.runners:  # Every runner busy and one more batch ready: wait for the oldest.
            drain_one()

    def drain_one() -> None:
        states, call = running.popleft()
        collect(states, call.result())

    def finished() -> Iterator[ScoredRow]:
        while open_files and open_files[0].done:
            yield open_files.popleft().row(model.classes, aggregation)
            progress.advance("score", 1)

    try:
        decoded = ordered_windows(paths, cfg, rule, model.decode_workers, in_flight)
        with closing(decoded):
            for index, result in decoded:
                if not open_files or open_files[-1].index != index:
                    open_files.append(_File(index, files[index]))
                state = open_files[-1]
                if result.error or result.windows is None:
                    state.error, state.all_read = result.error or "no audio windows", True
                else:
                    w = result.windows
                    state.duration_s, state.scored_s = w.duration_s, w.scored_s
                    state.starts.extend(w.starts_s)
                    state.ends.extend(w.ends_s)
                    state.audible.extend(w.audible or (True,) * len(w.starts_s))
                    state.all_read = w.last
                    batch.extend((state, f) for f in w.features)
                while len(batch) >= config.batch_size:
                    run_batch(config.batch_size)
                while running and running[0][1].done():  # Calls done meanwhile: their files may be complete.
                    drain_one()
                yield from finished()
            while batch:
                run_batch(config.batch_size)
            while running:
                drain_one()
            yield from finished()
    finally:
        if runner is not None:
            runner.shutdown(wait=True, cancel_futures=True)
        progress.finish("score")
