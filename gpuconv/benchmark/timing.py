"""Timers and the device's measured ceilings.

GPU calls are timed with CUDA events around each call; CPU calls with a monotonic clock.
Each measurement warms up first (compilation, autotuning, caches), then runs many times,
rotating among several input sets so that a result never comes from a cache the previous
run filled, and reports the median and the spread.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .. import backend

WARMUP = 3
# CPU: stop repeating after this many seconds (at least MIN_RUNS, at most MAX_RUNS).
CPU_BUDGET_S = 1.0
MIN_RUNS = 5
MAX_RUNS = 50
GPU_RUNS = 50


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int


def _summary(samples_ms: list) -> Timing:
    return Timing(statistics.median(samples_ms), min(samples_ms), max(samples_ms), len(samples_ms))


def time_call(fn: Callable, input_sets: Sequence[tuple], device: str, quick: bool = False) -> Timing:
    """Time ``fn(*input_sets[i % len(input_sets)])`` after warm-up; milliseconds."""
    for i in range(WARMUP):
        fn(*input_sets[i % len(input_sets)])
    if device == "cuda":
        return _time_gpu(fn, input_sets, MIN_RUNS if quick else GPU_RUNS)
    return _time_cpu(fn, input_sets, MIN_RUNS if quick else MAX_RUNS)


def _time_cpu(fn, input_sets, max_runs: int) -> Timing:
    samples, spent = [], 0.0
    while len(samples) < MIN_RUNS or (spent < CPU_BUDGET_S and len(samples) < max_runs):
        args = input_sets[len(samples) % len(input_sets)]
        t0 = time.perf_counter()
        fn(*args)
        dt = time.perf_counter() - t0
        samples.append(dt * 1e3)
        spent += dt
    return _summary(samples)


def _time_gpu(fn, input_sets, runs: int) -> Timing:
    cp = backend.cupy_or_none()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    samples = []
    for i in range(runs):
        args = input_sets[i % len(input_sets)]
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, end))
    return _summary(samples)


def measure_ceilings(device: str, quick: bool = False) -> dict:
    """Copy bandwidth (bytes read + written per second) and float32 GEMM rate, measured here.

    The sizes are large enough to reach the plateau; ``quick`` uses CPU-sized arrays on the
    GPU too and fewer repeats, so its GPU ceilings are rough (a smoke test, not a figure)."""
    xp = backend.cupy_or_none() if device == "cuda" else np
    full_gpu = device == "cuda" and not quick
    copy_elems = (1 << 28) if full_gpu else (1 << 24)
    n = 8192 if full_gpu else 1024
    rng = np.random.default_rng(0)
    src = [xp.asarray(rng.standard_normal(copy_elems, dtype=np.float32)) for _ in range(2)]
    dst = xp.empty_like(src[0])
    copy = time_call(lambda s: xp.copyto(dst, s), [(s,) for s in src], device, quick)
    mats = [xp.asarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2)]
    gemm = time_call(lambda a: xp.matmul(a, a), [(m,) for m in mats], device, quick)
    return {
        "copy_bytes_per_s": 2 * 4 * copy_elems / (copy.median_ms * 1e-3),
        "gemm_flops_per_s": 2 * n ** 3 / (gemm.median_ms * 1e-3),
    }
