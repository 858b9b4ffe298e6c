"""Timers and the device's measured ceilings.

Ceilings: copy bandwidth, the float32 GEMM rate (SGEMM through the array library) and, on
a GPU with tensor cores, the tensor-core GEMM rates (cuBLAS ``gemmEx`` in tf32, bf16 and
fp16 with fp32 accumulation). A row's compute floor divides its FLOPs by the fastest
measured GEMM at its precision (:func:`gemm_ceiling`); GEMM-shaped passes also show their
fraction of the tensor-core ceiling (:func:`tensor_core_ceiling`).

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


# Tensor-core GEMM modes whose ceilings are measured: cuBLAS's operand type (a
# cupy.cuda.runtime data type) and compute type (cupy.cuda.cublas).
TENSOR_CORE_GEMMS = {"tf32": ("CUDA_R_32F", "CUBLAS_COMPUTE_32F_FAST_TF32"),
                     "bf16": ("CUDA_R_16BF", "CUBLAS_COMPUTE_32F"),
                     "fp16": ("CUDA_R_16F", "CUBLAS_COMPUTE_32F")}
# Tensor cores with tf32/bf16 mma: compute capability 8.0 (Ampere) and later.
TENSOR_CORE_MIN_MAJOR = 8
# Rows of the product checked after timing, against a float32 GEMM of the same operands,
# allowed CHECK_FACTOR times the mode's tolerance: the check catches a wrong product (a
# wrong layout or scalar gives errors near 1), not a loose one.
CHECKED_ROWS = 64
CHECK_FACTOR = 10


def measure_ceilings(device: str, quick: bool = False) -> dict:
    """Copy bandwidth (bytes read + written per second), float32 GEMM rate and, on a GPU
    with tensor cores, the tensor-core GEMM rates (``{mode}_gemm_flops_per_s`` for tf32,
    bf16 and fp16 operands with fp32 accumulation; None where not applicable: the CPU, or a
    GPU before compute capability 8.0), measured here.

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
    ceilings = {
        "copy_bytes_per_s": 2 * 4 * copy_elems / (copy.median_ms * 1e-3),
        "gemm_flops_per_s": 2 * n ** 3 / (gemm.median_ms * 1e-3),
    }
    tensor_cores = device == "cuda" and xp.cuda.runtime.getDeviceProperties(
        xp.cuda.Device().id)["major"] >= TENSOR_CORE_MIN_MAJOR
    for mode in TENSOR_CORE_GEMMS:
        ceilings[f"{mode}_gemm_flops_per_s"] = (
            2 * n ** 3 / (_tensor_core_gemm_ms(xp, mats, mode, quick) * 1e-3)
            if tensor_cores else None)
    return ceilings


def tensor_core_ceiling(ceilings: dict, mode: str) -> float | None:
    """The tensor-core GEMM rate for a precision mode (gpuconv.precision): the measured one
    for tf32, bf16 and fp16; for fp32 (3xTF32, three tf32 products per term) a third of the
    measured tf32 rate. None where tensor cores are not applicable."""
    if mode == "fp32":
        tf32 = ceilings.get("tf32_gemm_flops_per_s")
        return None if tf32 is None else tf32 / 3
    return ceilings.get(f"{mode}_gemm_flops_per_s")


def gemm_ceiling(ceilings: dict, mode: str) -> float:
    """The fastest measured GEMM that computes at ``mode``'s accuracy or better: float32
    SGEMM, or the tensor-core rate of the mode where that is faster."""
    return max(ceilings["gemm_flops_per_s"], tensor_core_ceiling(ceilings, mode) or 0.0)


def _tensor_core_gemm_ms(cp, mats: list, mode: str, quick: bool) -> float:
    """Median milliseconds of an n x n x n cuBLAS GEMM (``cublasGemmEx``) on tensor cores
    in ``mode``, fp32 output; checks the product before returning (a ceiling from a GEMM
    that computes something else would be no ceiling)."""
    from .. import testing

    n = mats[0].shape[0]
    data_type, compute_type = TENSOR_CORE_GEMMS[mode]
    cublas = cp.cuda.cublas
    data_type = getattr(cp.cuda.runtime, data_type)
    compute_type = getattr(cublas, compute_type)
    operands = [_operand(cp, m, mode) for m in mats]
    out = cp.empty((n, n), np.float32)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    handle = cp.cuda.device.get_cublas_handle()
    old_mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)

    def gemm(a):
        # Column-major: out^T = a^T a^T, i.e. out = a @ a in row-major terms.
        cublas.gemmEx(handle, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, n, n, n,
                      one.ctypes.data, a.data.ptr, data_type, n, a.data.ptr, data_type, n,
                      zero.ctypes.data, out.data.ptr, cp.cuda.runtime.CUDA_R_32F, n,
                      compute_type, cublas.CUBLAS_GEMM_DEFAULT)

    try:
        timing = time_call(gemm, [(a,) for a in operands], "cuda", quick)
        gemm(operands[0])
    finally:
        cublas.setPointerMode(handle, old_mode)
    values = _values(cp, operands[0], mode)
    err = testing.rel_err(out[:CHECKED_ROWS], cp.matmul(values[:CHECKED_ROWS], values))
    tol = CHECK_FACTOR * testing.TOL[testing.TOL_KEY[mode]]
    if not err <= tol:
        raise RuntimeError(f"the {mode} tensor-core GEMM of the ceiling measurement is off by "
                           f"{err:.1e} (relative; {tol:.0e} allowed): its rate is no ceiling")
    return timing.median_ms


def _operand(cp, a, mode: str):
    """``a`` (float32) as cuBLAS reads it in ``mode``: float32, or bfloat16 / float16 bits."""
    if mode == "bf16":
        return (a.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    if mode == "fp16":
        return a.astype(np.float16).view(np.uint16)
    return a


def _values(cp, operand, mode: str):
    """The float32 values of an :func:`_operand`."""
    if mode == "bf16":
        return (operand.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if mode == "fp16":
        return operand.view(np.float16).astype(np.float32)
    return operand
