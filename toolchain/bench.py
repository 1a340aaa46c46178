"""One benchmark, one process, the same real clips: the reference notebook's loop against each stage of ours.

(a) the reference notebook's loop: librosa reference features per file, then eager PyTorch on batches, sequentially
(b) eager PyTorch, model only (features precomputed)
(c) ONNX Runtime fp32, model only
(d) ONNX Runtime INT8, model only (when an INT8 model is given)
(e) our end-to-end engine: decode -> fast features (worker processes) -> ORT, overlapped, on the fp32 model
(h) the same engine on the variant `--precision auto` picks, when it picks one (the certified model.int8.onnx on a
    CPU, model.fp16.onnx on CUDA): what a user's scoring run gets
(g) the same engine with the graph front end (model.audio.onnx beside the model, when it is certified): the
    workers decode and cut windows, the log-mel is computed inside the graph
plus feature milliseconds per clip, librosa reference vs the fast path, on one core, and a batch-size sweep:
the engine's model-only path (its provider, CUDA when it runs, the fp16 choice, IO binding, padding) at each
size in `batch_sizes`, with the fastest recorded as `best_batch_size`; and the compute ceiling: a `torch` fp32
matmul's GFLOP/s on the same cores against the model's effective GFLOP/s in (c).
Figures are printed and written as JSON; nothing here asserts a speed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.audio.decode import check_audio_file, find_audio_files
from toolchain.cpu import available_cores, cpu_isa
from toolchain.errors import AudioDecodeError, DatasetError, ScoringError
from toolchain.inference.providers import CPU_EP
from toolchain.inference.session import open_session
from toolchain.io import write_json
from toolchain.progress import NullProgress, ProgressReporter


@dataclass(frozen=True)
class BenchConfig:
    checkpoint: Path  # PyTorch checkpoint the ONNX models were exported from.
    model: Path  # fp32 .onnx
    clips: tuple[str, ...]  # Real audio files, all used by every measurement.
    int8_model: Path | None = None
    batch_size: int = 16  # The reference notebook's batch size.
    threads: int = 0  # Torch/ORT threads for model-only runs; 0 = all cores.
    batch_sizes: tuple[int, ...] = ()  # Sizes the sweep tries; () = just batch_size.
    long_file: Path | None = None  # A long recording: the engine's windows/s on it, against (c) model-only.


@dataclass
class BenchResult:
    clips: int
    batch_size: int
    throughput: dict[str, float] = field(default_factory=dict)  # clips/s per measurement
    ratios: dict[str, float] = field(default_factory=dict)
    feature_ms_per_clip: dict[str, float] = field(default_factory=dict)
    int8_top1_agreement: float | None = None
    engine_provider: str = ""
    engine_model: str = ""  # The file the engine ran (model.fp16.onnx when CUDA picked the certified variant).
    engine_model_reason: str = ""  # Why that file (e.g. why the fp16 variant was not used on CUDA).
    batch_sweep: dict[str, float] = field(default_factory=dict)  # Batch size -> clips/s, engine model only.
    best_batch_size: int = 0  # The fastest size in batch_sweep.
    long_file: dict[str, Any] = field(default_factory=dict)  # Seconds, windows, windows/s of the long-file case.
    # gflop_per_clip (the model's forward), matmul_gflops (torch fp32 matmul, same threads), ort_fp32_gflops (c).
    compute: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _batches(items: np.ndarray | list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    isa = cpu_isa()
    return {
        "cpu": isa.pop("model") or platform.processor(),
        "isa": isa,  # The instruction-set features that pick ORT's INT8 kernels (and CPU bf16).
        "cores": available_cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def feature_timings(clips: tuple[str, ...], config) -> dict[str, float]:
    """ms per clip on one core: decode, librosa reference (trim + log-mel), fast path (trim + log-mel)."""
    from threadpoolctl import threadpool_limits

    from toolchain.audio.decode import load_audio
    from toolchain.audio.features import fix_length_fast, log_mel_fast
    from toolchain.audio.reference import extract_log_mel, fix_length

    with threadpool_limits(1):
        load_audio(clips[0], config)  # librosa's lazy imports and numba compilation stay outside the timing.
        raw, decode_s = _timed(lambda: [load_audio(c, config) for c in clips])
        _, librosa_s = _timed(lambda: [extract_log_mel(fix_length(y, config), config) for y in raw])
        log_mel_fast(fix_length_fast(raw[0], config), config)  # Builds the cached filterbank outside the timing.
        _, fast_s = _timed(lambda: [log_mel_fast(fix_length_fast(y, config), config) for y in raw])
    n = len(clips)
    return {"decode": 1e3 * decode_s / n, "librosa": 1e3 * librosa_s / n, "fast": 1e3 * fast_s / n}


def _torch_logits(model, features: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(b)).numpy() for b in _batches(features, batch_size)])


def _ort_logits(session, features: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([session.run(None, {"features": b})[0] for b in _batches(features, batch_size)])


def sweep_batch_sizes(model, features: np.ndarray, sizes: tuple[int, ...]) -> dict[int, float]:
    """clips/s of `engine.infer_logits` (the exact call scoring makes per batch, as many at once as the engine's
    runners) at each size, same features.

    One warm-up batch per size first: on CUDA that is where cuDNN's exhaustive search for the new shape runs.
    """
    from concurrent.futures import ThreadPoolExecutor

    from toolchain.scoring.engine import infer_logits

    rates: dict[int, float] = {}
    with ThreadPoolExecutor(model.runners) as runners:
        for size in sizes:
            infer_logits(model, features[:size], size)
            batches = list(_batches(features, size))
            while len(batches) < 4 * model.runners:  # Enough calls that the runners are rarely left waiting.
                batches += batches
            _, seconds = _timed(lambda: list(runners.map(lambda b: infer_logits(model, b, size), batches)))
            rates[size] = _rate(sum(len(b) for b in batches), seconds)
    return rates


def frontend_rate(path: Path, config, rule) -> tuple[int, float]:
    """(windows, windows/s) of the front end alone on one long file: decode, resample and log-mel, on one core
    (this thread, one BLAS thread), as one decode worker computes them."""
    from threadpoolctl import threadpool_limits

    from toolchain.scoring.workers import ordered_windows

    def windows() -> int:
        return sum(len(r.windows.features) for _, r in ordered_windows([str(path)], config, rule, 0, 1)
                   if r.windows is not None)

    with threadpool_limits(1):
        n, seconds = _timed(windows)
    return n, _rate(n, seconds)


def window_limit(model_rate: float, frontend_rate_one_core: float, cores: int) -> float:
    """The windows/s a perfect pipeline reaches when the front end and the model share `cores`: each window costs
    cores / model_rate core-seconds of model (measured on every core) plus 1 / frontend_rate of front end."""
    return cores / (cores / model_rate + 1.0 / frontend_rate_one_core)


MATMUL_SIZE = 2048  # Large enough for the BLAS's peak on a few cores, small enough for a second's timing.


def matmul_gflops(threads: int, repeats: int = 5) -> float:
    """The best of `repeats` fp32 MATMUL_SIZE^3 products in torch on `threads` threads: the cores' practical peak."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b))[1] for _ in range(repeats))
    return 2 * MATMUL_SIZE**3 / best / 1e9


def gflop_per_clip(model, features: np.ndarray) -> float:
    """The model's forward on one clip in GFLOP (2 per multiply-add), counted by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.from_numpy(features[:1]))
    return counter.get_total_flops() / 1e9


def run_benchmark(config: BenchConfig, progress: ProgressReporter = NullProgress()) -> BenchResult:
    import torch

    from toolchain.audio.features import features_from_path, stack_channels
    from toolchain.audio.reference import reference_features_from_path
    from toolchain.audio.windows import WindowRule
    from toolchain.scoring.engine import load_model, score_files
    from toolchain.scoring.engine_config import EngineConfig
    from toolchain.scoring.precision import audio_certificate
    from toolchain.training.checkpoint import load_checkpoint

    if config.long_file is not None:  # Refused before minutes of measurements, not after.
        try:
            check_audio_file(Path(config.long_file))
        except AudioDecodeError as exc:
            raise ScoringError(f"--long-file {exc}: pass a long recording") from None
    threads = config.threads or available_cores()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # Applied to the baseline too: it only makes the baseline faster.
    ckpt = load_checkpoint(config.checkpoint)
    fcfg = ckpt.feature_config
    model = ckpt.build_model()
    clips, bs, n = config.clips, config.batch_size, len(config.clips)
    result = BenchResult(clips=n, batch_size=bs, machine=_machine())
    steps = ["features", "seed", "eager", "ort_fp32 + compute", "ort_int8", "batch sweep", "engines", "graph front end",
             "long file"]
    progress.start("bench", "benchmark", len(steps))

    def step(name: str) -> None:
        progress.advance("bench", 1, description=f"benchmark: {name}")

    result.feature_ms_per_clip = feature_timings(clips, fcfg)
    step("features")
    features = np.stack([stack_channels(features_from_path(c, fcfg), fcfg) for c in clips])
    _torch_logits(model, features[:bs], bs)  # Warm-up: allocator, oneDNN primitives.

    def seed_loop() -> None:
        for group in _batches(list(clips), bs):
            batch = np.stack([stack_channels(reference_features_from_path(c, fcfg), fcfg) for c in group])
            _torch_logits(model, batch, bs)

    _, seconds = _timed(seed_loop)
    result.throughput["a_seed_baseline"] = _rate(n, seconds)
    step("seed")
    _, seconds = _timed(lambda: _torch_logits(model, features, bs))
    result.throughput["b_eager_model"] = _rate(n, seconds)
    step("eager")

    session = open_session(config.model, CPU_EP, threads=threads)
    _ort_logits(session, features[:bs], bs)
    fp32_logits, seconds = _timed(lambda: _ort_logits(session, features, bs))
    result.throughput["c_ort_fp32_model"] = _rate(n, seconds)
    session = None  # Free the fp32 session before the next one loads.
    result.compute = {"gflop_per_clip": gflop_per_clip(model, features), "matmul_gflops": matmul_gflops(threads)}
    result.compute["ort_fp32_gflops"] = result.compute["gflop_per_clip"] * result.throughput["c_ort_fp32_model"]
    step("ort_fp32 + compute")
    if config.int8_model is not None:
        int8 = open_session(config.int8_model, CPU_EP, threads=threads)
        _ort_logits(int8, features[:bs], bs)
        int8_logits, seconds = _timed(lambda: _ort_logits(int8, features, bs))
        result.throughput["d_ort_int8_model"] = _rate(n, seconds)
        result.int8_top1_agreement = float(np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1)))
        del int8
    step("ort_int8")

    engine_model = load_model(config.model, EngineConfig(batch_size=bs))  # What `--precision auto` runs.
    result.engine_provider, result.engine_model = engine_model.provider, str(engine_model.path)
    result.engine_model_reason = engine_model.choice
    sweep = sweep_batch_sizes(engine_model, features, config.batch_sizes or (bs,))
    result.batch_sweep = {str(size): rate for size, rate in sweep.items()}
    result.best_batch_size = max(sweep, key=sweep.__getitem__)
    step("batch sweep")

    def end_to_end(scoring_model, engine: EngineConfig) -> float:
        list(score_files(scoring_model, "/", list(clips[:bs]), engine))  # Warm-up + worker start.
        rows, seconds = _timed(lambda: list(score_files(scoring_model, "/", list(clips), engine)))
        return _rate(len(rows), seconds)

    fp32 = EngineConfig(batch_size=bs, precision="fp32")
    fp32_model = engine_model if engine_model.path == Path(config.model) else load_model(config.model, fp32)
    result.throughput["e_engine_end_to_end"] = end_to_end(fp32_model, fp32)
    if fp32_model is not engine_model:
        del fp32_model
        result.throughput["h_engine_variant_end_to_end"] = end_to_end(engine_model, EngineConfig(batch_size=bs))
    step("engines")
    if audio_certificate(Path(config.model)) == "":
        # The same clips with the log-mel computed inside model.audio.onnx (the workers only decode and cut).
        graph = EngineConfig(batch_size=bs, frontend="graph")
        graph_model = load_model(config.model, graph)
        list(score_files(graph_model, "/", list(clips[:bs]), graph))
        rows, seconds = _timed(lambda: list(score_files(graph_model, "/", list(clips), graph)))
        result.throughput["g_engine_graph_frontend"] = _rate(len(rows), seconds)
    step("graph front end")
    if config.long_file is not None:
        # Windows of one long file through the engine (decode in parts, features, batches) vs (c), model only.
        grid = WindowRule(sound_db=None)  # Every second scored: the pipeline's full load, whatever the audio.
        [row], seconds = _timed(lambda: list(score_files(engine_model, "/", [str(config.long_file)],
                                                         EngineConfig(batch_size=bs), rule=grid)))
        if row.status != "ok":
            raise ScoringError(f"--long-file {config.long_file} did not decode: {row.error}")
        result.throughput["f_engine_long_file_windows"] = _rate(len(row.windows), seconds)
        # The limit: the same model alone (as the engine runs it) and the front end alone on one core, sharing
        # the cores perfectly. The engine's windows/s against it says what the pipeline loses.
        model_rate = sweep[bs] if bs in sweep else sweep_batch_sizes(engine_model, features, (bs,))[bs]
        _, fe_rate = frontend_rate(Path(config.long_file), fcfg, grid)
        limit = window_limit(model_rate, fe_rate, threads)
        result.long_file = {"path": str(config.long_file), "duration_s": row.duration_s,
                            "scored_s": row.scored_s, "windows": len(row.windows), "seconds": seconds,
                            "model": str(engine_model.path), "model_only_windows_per_s": model_rate,
                            "frontend_windows_per_s_one_core": fe_rate, "limit_windows_per_s": limit,
                            "limit_over_model_only": limit / model_rate}
        result.ratios["f_over_limit"] = result.throughput["f_engine_long_file_windows"] / limit
    step("long file")
    progress.finish("bench")

    t = result.throughput
    result.ratios["e_over_a"] = t["e_engine_end_to_end"] / t["a_seed_baseline"]
    result.ratios["e_over_c"] = t["e_engine_end_to_end"] / t["c_ort_fp32_model"]
    if "d_ort_int8_model" in t:
        result.ratios["d_over_c"] = t["d_ort_int8_model"] / t["c_ort_fp32_model"]
    if "h_engine_variant_end_to_end" in t:
        result.ratios["h_over_a"] = t["h_engine_variant_end_to_end"] / t["a_seed_baseline"]
    if "g_engine_graph_frontend" in t:
        result.ratios["g_over_e"] = t["g_engine_graph_frontend"] / t["e_engine_end_to_end"]
    if "f_engine_long_file_windows" in t:
        result.ratios["f_over_c"] = t["f_engine_long_file_windows"] / t["c_ort_fp32_model"]
    return result


def write_result(result: BenchResult, path: Path) -> Path:
    return write_json(asdict(result), path)


def select_clips(sources: list[Path], count: int) -> tuple[str, ...]:
    """`count` real clips spread evenly over the audio under `sources` (folders or CSV manifests)."""
    from toolchain.training.data import load_dataset

    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += find_audio_files(source)
        elif source.suffix.lower() == ".csv":
            files += [Path(s.path) for s in load_dataset(source)]
        else:
            raise DatasetError(f"--data {source} is neither a folder nor a CSV manifest")
    if not files:
        raise DatasetError(f"no audio files under {', '.join(map(str, sources))}: pass --data with real clips")
    step = max(1, len(files) // count)
    return tuple(str(p.resolve()) for p in files[::step][:count])
