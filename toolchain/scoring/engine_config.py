"""How to run a model: the engine's frozen settings and the thread split they resolve to on this machine.

Nothing here changes what a model computes; `toolchain.scoring.engine` loads and runs the model with them.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from enum import Enum

from toolchain.cpu import available_cores
from toolchain.errors import ScoringError
from toolchain.inference.providers import CONV_ALGO_SEARCHES, PROVIDERS, ConvAlgoSearch, Provider
from toolchain.scoring.precision import PRECISION_CHOICES, Precision


class IoBinding(str, Enum):
    """auto = bind inputs/outputs on CUDA, plain session.run on CPU; on/off force it."""

    auto = "auto"
    on = "on"
    off = "off"


IO_BINDING = tuple(b.value for b in IoBinding)


class Frontend(str, Enum):
    """Where the log-mel images are computed: python = this library (numpy, in the decode workers); graph = inside
    `model.audio.onnx` beside the model (the workers only decode and cut windows)."""

    python = "python"
    graph = "graph"


FRONTENDS = tuple(f.value for f in Frontend)


@dataclass(frozen=True)
class EngineConfig:
    """How to run a model; nothing here changes what it computes. `None` means "size for this machine"."""

    batch_size: int = 16  # Clips per ORT call: amortizes per-call overhead; 16 x 3x128x216 fp32 = 5.3 MB.
    provider: Provider = Provider.auto  # auto = CUDA EP when it really starts, else CPU; cuda = fail unless it runs.
    decode_workers: int | None = None  # Worker processes decoding audio; 0 = decode in the calling thread.
    intra_op_threads: int | None = None  # ORT threads per model call; None = the cores shared by the runners.
    runners: int | None = None  # Model calls in flight at once; None = 2 on a CPU with 2+ cores, 1 on a GPU.
    max_in_flight: int | None = None  # Files decoded ahead of the model; None = 2 x batch_size.
    precision: Precision = Precision.auto  # auto = the certified model.fp16.onnx on CUDA, the given file on CPU.
    device_id: int = 0  # Which GPU the CUDA EP uses.
    conv_algo_search: ConvAlgoSearch = ConvAlgoSearch.EXHAUSTIVE  # cuDNN: time every algorithm once per shape.
    io_binding: IoBinding = IoBinding.auto  # auto = bind inputs/outputs on CUDA, plain session.run on CPU.
    frontend: Frontend = Frontend.python  # graph = run model.audio.onnx (log-mel in the graph) beside the model.

    def __post_init__(self) -> None:
        # Enum members are stored as their plain string values: JSON-able for Prefect, hashable like strings.
        for name in ("provider", "precision", "conv_algo_search", "io_binding", "frontend"):
            value = getattr(self, name)
            if isinstance(value, Enum):
                object.__setattr__(self, name, value.value)
        if self.batch_size < 1:
            raise ScoringError(f"batch_size={self.batch_size} must be at least 1")
        for name, allowed in (("provider", PROVIDERS), ("precision", PRECISION_CHOICES),
                              ("conv_algo_search", CONV_ALGO_SEARCHES), ("io_binding", IO_BINDING),
                              ("frontend", FRONTENDS)):
            if getattr(self, name) not in allowed:
                raise ScoringError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.device_id < 0:
            raise ScoringError(f"device_id={self.device_id} is out of range: pass a GPU index (0 = the first)")
        for name in ("decode_workers", "intra_op_threads", "max_in_flight", "runners"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "decode_workers" else 1):
                raise ScoringError(f"{name}={value} is out of range: pass a positive number or leave it unset")


def resolve_runners(config: EngineConfig, on_gpu: bool, cores: int | None = None) -> int:
    """Model calls in flight at once. ORT splits each op of a call over its intra-op threads and waits for the
    slowest; when a decode worker takes a core from one thread, the others wait at every op. Two calls in flight,
    each on half the cores, leave no core waiting (docs/performance.md, "Long recordings"). A GPU runs one stream."""
    if config.runners is not None:
        return config.runners
    cores = cores or available_cores()
    return 1 if on_gpu or cores < 2 else 2


def resolve_threads(config: EngineConfig, on_gpu: bool, cores: int | None = None) -> tuple[int, int]:
    """(decode_workers, intra_op_threads) for this machine; the threads are per model call (`resolve_runners`).

    On CPU the model calls share every core and one decode worker per four cores runs beside them: with the fast
    feature path a clip costs ~5 ms to decode and featurize against ~400 ms of ResNet152 on two cores, so a worker
    that mostly sleeps beats taking cores from the model (ORT threads are told not to spin while idle, so they
    yield to it). On a GPU the model needs one feeding thread and every core decodes.
    """
    cores = cores or available_cores()
    if on_gpu:
        workers, threads = cores, 1
    else:
        workers, threads = max(1, cores // 4), max(1, cores // resolve_runners(config, on_gpu, cores))
    if multiprocessing.current_process().daemon:
        workers = 0  # Daemonic processes (e.g. Dask workers) may not start children: decode inline.
    if config.decode_workers is not None:
        workers = config.decode_workers
    if config.intra_op_threads is not None:
        threads = config.intra_op_threads
    return workers, threads
