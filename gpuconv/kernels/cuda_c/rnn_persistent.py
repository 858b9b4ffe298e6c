"""LSTM and GRU in few launches: the kernels of ``kernels/rnn_persistent.cu`` (products on
the CUDA cores) and ``kernels/rnn_persistent_mma.cu`` (on tensor cores), registered as two
impls of the recurrent ops (float32 and float64 CuPy arrays).

- ``cuda_persistent`` (ops ``lstm``, ``gru`` and their backwards): per layer, one GEMM
  projects the input of every step for both directions (``x [W_ih fwd; W_ih rev]^T``), then
  one cooperative launch runs all T steps of both directions with each block's slice of
  W_hh held in shared memory; backward is the same partition run in reverse time, then the
  weight and input gradients as GEMMs over all steps and the bias gradients as sums.
- ``cuda_fused``: the same steps with W_hh streamed from global memory, one launch per step
  (the fallback where the slices do not fit on chip or the grid cannot be resident), and
  ``lstm_cell`` / ``gru_cell`` in one launch (both gate products, biases and gate math).

The priority rule: ``cuda_persistent`` (30) wins when one of its plans fits, the occupancy
API saying that the whole grid is resident; otherwise it is never chosen (forcing it raises)
and ``cuda_fused`` (20) runs, ahead of the per-step cuBLAS impl ``cuda`` (10). So
``nn.LSTM``, ``nn.GRU`` and the classifiers use them on a GPU without a change.

Which persistent kernels: the tensor-core kernels (``MMA_FAMILY``) for float32 arrays on
sm_80 and later wherever their plan fits, else the FMA kernels (``FAMILY``: float64, older
GPUs, and the hidden sizes that only the FMA kernels' tighter shared memory holds). The
tensor-core kernels are kept even at batch 1, where an m16 fragment carries one useful row
of 16: per step a block of the FMA kernels runs its reduction on one warp there (one unit
per thread, K x (2G + 1) shared-memory and FMA instructions: about 9,000 clocks for an LSTM
with H = 1024), while the tensor-core kernels split K over 8 warps and issue G*U/8 x H/16
mma per unit of 16 rows (1,536 m16n8k8 in fp32's 3xTF32 at H = 1024: about 2,300 clocks on
an H100); both pay the same wait for L2 and the same barriers, which dominate at small H
(bench/NOTES.md has the model). Nothing here has been timed on a GPU.

On-chip limits: one block per SM, U = ceil(H / (SMs / D)) units per block, 227 KB of shared
memory per block on an H100 (132 SMs), 163 KB on an A100 (108 SMs). The tensor-core
kernels hold the slice (G*U columns of H forward, U columns of G*H backward, the reduction
rounded up to 16; 4 bytes a weight in fp32 and tf32, 2 in bf16 and fp16) plus 32 KB of
staging and partial sums, and at most 64 gate columns per block; the FMA kernels hold G*U*H
weights (8 bytes in float64) plus the staged input (8.3 KB in fp32). The largest hidden
size that runs persistent, unidirectional / bidirectional (both directions' weights at once):

=================  ===========  ===========  ===========  ===========
kernels, precision  LSTM H100    GRU H100     LSTM A100    GRU A100
=================  ===========  ===========  ===========  ===========
mma fp32, tf32      1248 / 880   1452 / 1040   928 / 648   1080 / 756
mma bf16, fp16      1776 / 1056  2080 / 1386  1296 / 864   1512 / 1080
fma fp32, tf32      1320 / 933   1556 / 1098   991 / 708   1188 / 826
fma bf16, fp16      1867 / 1334  2197 / 1556  1416 / 1026  1652 / 1188
fma float64         924 / 660    1056 / 749    670 / 486    782 / 569
=================  ===========  ===========  ===========  ===========

(:func:`max_persistent_hidden` computes them; ``tests/test_rnn_persistent.py`` checks the
table; occupancy aside: ptxas gives every persistent kernel at most 255 registers at 256
threads, one block per SM, also checked there.) Beyond the fma rows the fallback runs.

Precision (float32 arrays, per :mod:`gpuconv.precision`, the setting the convolution shares;
float64 arrays always compute in float64 on the FMA kernels): ``"fp32"`` (default) fp32
accuracy: the recurrence on tensor cores in 3xTF32 (each operand split into tf32 big +
small, three mma per product), the other GEMMs in fp32; ``"tf32"`` the recurrence's operands
and the GEMMs (input projection, input and weight gradients) in TF32; ``"bf16"`` /
``"fp16"`` both operands of every product rounded to bfloat16 / float16 (W_hh stored in 16
bits on chip) with fp32 accumulation. Every sum, state and gate is fp32. The FMA kernels
multiply fp32 h by the (16-bit) weights in fp32. The GEMMs are cuBLAS through CuPy (its
compute type switched to TF32 for the tensor-core modes, a TF32 GEMM being exact on
bf16/fp16-rounded operands). The cells compute in their arrays' precision.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ... import backend
from ...precision import mode_of as precision_of
from .. import register
from .._rnn_loop import _bias_grads, _layer_weights, _stacked_w_ih, backward_through_layers
from . import DTYPES, NULL, device_properties, gpu_op, kernel
from .rnn import CELLS

FAMILY = "rnn_persistent"
# The persistent kernels with the recurrent product on tensor cores (sm_80 and later).
MMA_FAMILY = "rnn_persistent_mma"
# Must equal the #defines of kernels/rnn_persistent.cu and kernels/rnn_persistent_mma.cu
# (tests/test_rnn_persistent.py checks).
K_CHUNK = 32
BATCH_TILE = 64
TILE_STRIDE = BATCH_TILE + 1
MAX_THREADS = 256
MMA_WARPS = 8
MMA_THREADS = 32 * MMA_WARPS
MMA_KSTEP = 16
MMA_WARP_BYTES = 4096
MMA_MAX_NTILES = 8
# The backward kernel's slice has at most this many n-tiles (8 columns each).
MMA_BWD_MAX_NTILES = 4
# Batch rows each thread accumulates when the batch allows (at most RNN_ROWS_PER_THREAD).
ROWS_PER_THREAD_TARGET = 2
GATES = {"lstm": 4, "gru": 3}
# Bytes of one stored recurrent weight, per precision.
WEIGHT_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp64": 8}
_SUFFIX = {"fp32": "f32", "tf32": "f32", "bf16": "f32_bf16w", "fp16": "f32_f16w", "fp64": "f64"}
_MMA_SUFFIX = {"fp32": "f32", "tf32": "f32_tf32", "bf16": "f32_bf16", "fp16": "f32_f16"}
# Dynamic shared memory above this needs the kernel's attribute raised first.
DEFAULT_DYNAMIC_SMEM = 48 * 1024
# Priorities: above the per-step cuBLAS impl ``cuda`` (10).
PERSISTENT_PRIORITY = 30
FUSED_PRIORITY = 20
NEVER = -1000
# Tests lower these to split a small hidden size over several blocks (None: the device's
# SMs) and to stage the persistent kernels' reduction in several chunks (None: as few as fit).
BLOCKS_PER_DIRECTION: int | None = None
PERSISTENT_CHUNK: int | None = None
# Tests set this to "fma" or "mma" to run one kind of persistent kernel (None: tensor cores
# where their plan fits, else the FMA kernels). Where it is None the environment variable
# KERNELS_ENV does the same, so that a benchmark run can time the FMA kernels on the cases
# where the tensor-core kernels would run (`GPUCONV_RNN_PERSISTENT_KERNELS=fma gpuconv bench
# lstm`; bench/NOTES.md).
PERSISTENT_KERNELS: str | None = None
KERNELS_ENV = "GPUCONV_RNN_PERSISTENT_KERNELS"
KERNEL_KINDS = ("fma", "mma")


# --------------------------------------------------------------------------- GEMMs

def _round_to(a, mode: str):
    """a (float32) with every value rounded to tf32 (to nearest, ties away from zero, as
    cvt.rna.tf32.f32), bf16 or fp16 (to nearest even), kept in float32."""
    xp = backend.array_module(a)
    if mode == "fp16":
        return a.astype(np.float16).astype(np.float32)
    bits = xp.ascontiguousarray(a).view(np.uint32)
    finite = (bits & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    if mode == "tf32":
        rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    else:
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) \
            & np.uint32(0xFFFF0000)
    return xp.where(finite, rounded, bits).view(np.float32)


@contextlib.contextmanager
def _tensor_core_gemms(xp):
    """CuPy's float32 GEMMs in TF32 inside the block (a private CuPy setting, restored after;
    without it, as in the CPU emulation, the GEMMs run in fp32 on the same rounded operands)."""
    linalg = getattr(getattr(xp, "_core", None), "_routines_linalg", None)
    if linalg is None:
        yield
        return
    old = linalg.get_compute_type(np.float32)
    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)
    try:
        yield
    finally:
        linalg.set_compute_type(np.float32, old)


def gemm(a, b, mode: str):
    """a @ b in precision ``mode`` (fp32 and fp64: as they are; tf32, bf16, fp16: operands
    rounded to that type, products on tensor cores, sums in fp32)."""
    if mode in ("fp32", "fp64"):
        return a @ b
    xp = backend.array_module(a)
    a, b = _round_to(a, mode), _round_to(b, mode)
    with _tensor_core_gemms(xp):
        return a @ b


def _stored_weights(w, mode: str):
    """W_hh (D, G*H, H) as the kernels read it: as it is, or bfloat16 / float16 bits."""
    if mode == "bf16":
        return (_round_to(w, "bf16").view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    if mode == "fp16":
        return w.astype(np.float16).view(np.uint16)
    return w


# --------------------------------------------------------------------------- plans

@dataclass(frozen=True)
class Plan:
    """A launch of the fused kernels: U hidden units per block, ``threads`` per block,
    ``blocks`` in all (D directions x ceil(H / U)), ``smem`` bytes of dynamic shared memory,
    ``chunk`` reduction elements staged at a time (FMA kernels), and the source file:
    ``FAMILY`` (products on the CUDA cores) or ``MMA_FAMILY`` (on tensor cores)."""

    units: int
    threads: int
    blocks: int
    smem: int
    chunk: int = K_CHUNK
    family: str = FAMILY

    def entry(self, kind: str, direction: str, mode: str) -> str:
        """The persistent entry point of this plan's kernels."""
        if self.family == MMA_FAMILY:
            return f"{kind}_{direction}_persistent_mma_{_MMA_SUFFIX[mode]}"
        return f"{kind}_{direction}_persistent_{_SUFFIX[mode]}"

    def sizes(self, T: int, B: int, H: int, D: int) -> tuple:
        """The persistent entry point's trailing int arguments."""
        chunk = (self.chunk,) if self.family == FAMILY else ()
        return tuple(np.int32(v) for v in (T, B, H, D, self.units, *chunk))


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def smem_bytes(kernel_kind: str, G: int, units: int, H: int, weight_bytes: int,
               item_bytes: int, chunk: int = K_CHUNK) -> int:
    """Dynamic shared memory of an FMA kernel (the carving at the top of rnn_persistent.cu):
    ``persistent`` (the whole slice), ``fwd_step`` and ``cell_fwd`` (a chunk of gate rows) or
    ``bwd_step`` (a chunk of columns), plus the staged input chunk (``chunk`` elements: the
    persistent kernels' argument; K_CHUNK in the others)."""
    weights = {"persistent": G * units * H, "fwd_step": K_CHUNK * G * units,
               "cell_fwd": K_CHUNK * G * units, "bwd_step": K_CHUNK * units}[kernel_kind]
    return _align16(weights * weight_bytes) + chunk * TILE_STRIDE * item_bytes


def _ntiles(columns: int) -> int:
    return math.ceil(columns / 8)


def mma_smem_bytes(direction: str, G: int, units: int, H: int, weight_bytes: int) -> int:
    """Dynamic shared memory of a tensor-core persistent kernel (the carving at the top of
    rnn_persistent_mma.cu): the slice, its columns (G*U forward, U backward) by its
    reduction (H forward, G*H backward) rounded up to k-steps of 16, then every warp's
    staging ring and partial sums."""
    K, columns = (H, G * units) if direction == "fwd" else (G * H, units)
    slice_bytes = math.ceil(K / MMA_KSTEP) * MMA_KSTEP * columns * weight_bytes
    return _align16(slice_bytes) + MMA_WARPS * MMA_WARP_BYTES


def _units(H: int, D: int, sms: int) -> int:
    per_direction = max(1, sms // D)
    if BLOCKS_PER_DIRECTION is not None:
        per_direction = min(per_direction, BLOCKS_PER_DIRECTION)
    return math.ceil(H / per_direction)


def _threads(units: int, B: int) -> int:
    """Enough threads for ROWS_PER_THREAD_TARGET rows of a batch tile each, a multiple of 32.

    Per reduction step a warp loads G weights and one input per row from shared memory for
    G FMAs per row: with one row per thread the loads (one instruction per SM per clock)
    bound the loop; two rows per thread on four warps balance loads and FMAs better (see
    bench/NOTES.md)."""
    groups = math.ceil(min(B, BATCH_TILE) / ROWS_PER_THREAD_TARGET)
    return min(MAX_THREADS, max(32, math.ceil(units * groups / 32) * 32))


def _with_smem(k, smem: int):
    if smem > DEFAULT_DYNAMIC_SMEM and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem
    return k


def _mma_plans(kind: str, B: int, H: int, D: int, mode: str, itemsize: int, sms: int,
               most: int, chunk_override: int | None) -> tuple[dict | None, str]:
    """The tensor-core kernels' plans per direction, or (None, why they do not fit)."""
    G = GATES[kind]
    units = _units(H, D, sms)
    if _ntiles(G * units) > MMA_MAX_NTILES:
        return None, (f"tensor cores: {units} units per block make {G * units} gate columns, "
                      f"more than {8 * MMA_MAX_NTILES}")
    plans = {}
    for direction in ("fwd", "bwd"):
        smem = mma_smem_bytes(direction, G, units, H, WEIGHT_BYTES[mode])
        if smem > most:
            return None, (f"tensor cores: the {direction} slice of W_hh and the warps' staging "
                          f"take {smem} bytes of shared memory, the device allows {most}")
        plans[direction] = Plan(units, MMA_THREADS, D * math.ceil(H / units), smem,
                                family=MMA_FAMILY)
    return plans, ""


def _fma_plans(kind: str, B: int, H: int, D: int, mode: str, itemsize: int, sms: int,
               most: int, chunk_override: int | None) -> tuple[dict | None, str]:
    """The FMA kernels' plan (the same for both directions), or (None, why it does not fit)."""
    G = GATES[kind]
    units = _units(H, D, sms)
    if units > MAX_THREADS:
        return None, f"{units} hidden units per block, more than {MAX_THREADS} threads"
    smem = smem_bytes("persistent", G, units, H, WEIGHT_BYTES[mode], itemsize)
    if smem > most:
        return None, (f"each block's slice of W_hh and its staged input take {smem} bytes of "
                      f"shared memory, the device allows {most} per block")
    # Stage as much of the reduction at once as the rest of the shared memory holds: each
    # chunk costs one wait for L2 per tile and step.
    room = most - _align16(G * units * H * WEIGHT_BYTES[mode])
    chunk = chunk_override or max(K_CHUNK, min(G * H, room // (TILE_STRIDE * itemsize)))
    smem = smem_bytes("persistent", G, units, H, WEIGHT_BYTES[mode], itemsize, chunk)
    plan = Plan(units, _threads(units, B), D * math.ceil(H / units), smem, chunk)
    return {"fwd": plan, "bwd": plan}, ""


def _not_resident(kind: str, mode: str, plans: dict, sms: int) -> str:
    """Why the occupancy API says a grid of ``plans`` would not be resident, or ""."""
    cp = backend.cupy_or_none()
    for direction, plan in plans.items():
        k = _with_smem(kernel(plan.family, plan.entry(kind, direction, mode), cooperative=True),
                       plan.smem)
        per_sm = cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            k.kernel.ptr, plan.threads, plan.smem)
        if per_sm * sms < plan.blocks:
            return (f"the {direction} grid of {plan.blocks} blocks ({plan.threads} threads, "
                    f"{plan.smem} bytes of shared memory) is not resident: {per_sm} per SM x "
                    f"{sms}")
    return ""


@functools.lru_cache(maxsize=256)
def _persistent_plan(kind: str, steps: int, B: int, H: int, D: int, mode: str, itemsize: int,
                     device_id: int, blocks_override: int | None, chunk_override: int | None,
                     kernels: str | None) -> tuple[dict | None, str]:
    """({"fwd": Plan, "bwd": Plan}, "") when both persistent kernels of this shape can run on
    chip, else (None, why not): the tensor-core kernels where they fit (float32 arrays,
    sm_80 or later), else the FMA kernels (module docstring)."""
    props = device_properties()
    if not props["cooperativeLaunch"]:
        return None, "the device cannot launch cooperative kernels"
    sms, most = props["multiProcessorCount"], props["sharedMemPerBlockOptin"]
    makers = []
    if kernels != "fma":
        if mode != "fp64" and props["major"] >= 8:
            makers.append(_mma_plans)
        elif kernels == "mma":
            return None, "tensor cores: they need float32 arrays and sm_80 or later"
    if kernels != "mma":
        makers.append(_fma_plans)
    reasons = []
    for make in makers:
        plans, why = make(kind, B, H, D, mode, itemsize, sms, most, chunk_override)
        if plans is not None:
            blocks = plans["fwd"].blocks
            if steps * blocks >= 2 ** 32:
                return None, f"{steps} steps x {blocks} blocks overflow the barrier counter"
            why = _not_resident(kind, mode, plans, sms)
            if not why:
                return plans, ""
        reasons.append(why)
    return None, "; ".join(reasons)


def persistent_plan(kind: str, steps: int, B: int, H: int, D: int, dtype) -> tuple:
    """({"fwd": Plan, "bwd": Plan} or None, why not) for the persistent kernels on the
    current device."""
    cp = backend.cupy_or_none()
    mode = precision_of(dtype)
    return _persistent_plan(kind, steps, B, H, D, mode, np.dtype(dtype).itemsize,
                            cp.cuda.Device().id, BLOCKS_PER_DIRECTION, PERSISTENT_CHUNK,
                            persistent_kernels())


def persistent_kernels() -> str | None:
    """The kind of persistent kernel forced ("fma", "mma") or None (the plan chooses):
    PERSISTENT_KERNELS, else the environment variable KERNELS_ENV (empty: unset)."""
    forced = PERSISTENT_KERNELS or os.environ.get(KERNELS_ENV) or None
    if forced is not None and forced not in KERNEL_KINDS:
        raise ValueError(f"{KERNELS_ENV} must be one of {', '.join(KERNEL_KINDS)} or empty, "
                         f"got {forced!r}")
    return forced


def step_plan(kernel_kind: str, G: int, B: int, H: int, D: int, weight_bytes: int,
              itemsize: int) -> Plan:
    """The plan of the streamed kernels (fwd_step, bwd_step, cell_fwd)."""
    units = min(_units(H, D, device_properties()["multiProcessorCount"]), MAX_THREADS)
    return Plan(units, _threads(units, B), D * math.ceil(H / units),
                smem_bytes(kernel_kind, G, units, H, weight_bytes, itemsize))


def max_persistent_hidden(kind: str, D: int, weight_bytes: int, itemsize: int, sms: int,
                          smem_per_block: int, kernels: str = "fma") -> int:
    """The largest hidden size whose persistent slices fit ``smem_per_block`` bytes on a GPU
    with ``sms`` SMs, for the ``kernels`` "fma" or "mma" (the docstring's table; occupancy
    aside)."""
    G = GATES[kind]

    def fits(H: int) -> bool:
        units = math.ceil(H / max(1, sms // D))
        if kernels == "fma":
            return smem_bytes("persistent", G, units, H, weight_bytes, itemsize) <= smem_per_block
        return (_ntiles(G * units) <= MMA_MAX_NTILES and
                all(mma_smem_bytes(d, G, units, H, weight_bytes) <= smem_per_block
                    for d in ("fwd", "bwd")))

    H = 1
    while fits(H + 1):
        H += 1
    return H


# --------------------------------------------------------------------------- launches

def _ptr(a):
    return NULL if a is None else a


def _run(name: str, plan: Plan, args: tuple, cooperative: bool = False) -> None:
    k = _with_smem(kernel(plan.family, name, cooperative=cooperative), plan.smem)
    if not cooperative:
        k((plan.blocks,), (plan.threads,), args, shared_mem=plan.smem)
        return
    # CuPy shrinks a cooperative grid that does not fit (with a warning); the plan was checked,
    # so a shrink here is a bug, never a smaller partition.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The grid size will be reduced")
        k((plan.blocks,), (plan.threads,), args, shared_mem=plan.smem)


def _launch(kind: str, direction: str, persistent: bool, arrays: tuple, shape: tuple,
            dtype) -> None:
    """The recurrence of one layer, ``direction`` "fwd" or "bwd": one cooperative launch of
    the persistent kernel, or the step kernel once per step (and once more at the end of
    backward). ``shape``: (T, B, H, D)."""
    T, B, H, D = shape
    mode = precision_of(dtype)
    xp = backend.array_module(arrays[1])
    if persistent:
        plan = _require_persistent(kind, T, B, H, D, dtype)[direction]
        _run(plan.entry(kind, direction, mode), plan,
             arrays + (xp.zeros(1, np.uint32),) + plan.sizes(T, B, H, D), cooperative=True)
        return
    plan = step_plan(f"{direction}_step", GATES[kind], B, H, D, WEIGHT_BYTES[mode],
                     np.dtype(dtype).itemsize)
    sizes = tuple(np.int32(v) for v in (T, B, H, D, plan.units))
    for s in range(T if direction == "fwd" else T + 1):
        _run(f"{kind}_{direction}_step_{_SUFFIX[mode]}", plan, arrays + sizes + (np.int32(s),))


@dataclass
class _Layer:
    """What one layer's forward keeps for its backward."""

    x: object          # the layer's input (T, B, I)
    hs: object         # (D, T+1, B, H)
    cs: object         # (D, T+1, B, H) or None (GRU)
    gates: object      # (D, T, B, G*H)
    extra: object      # (D, T, B, H)


def _layer_forward(kind: str, persistent: bool, x, weights: list, init: list, keep: bool):
    """One layer, both directions. ``init``: per direction, (h0,) or (h0, c0). Returns
    (out (T, B, D*H), _Layer)."""
    xp = backend.array_module(x)
    T, B, I = x.shape
    D, G, H = len(weights), GATES[kind], init[0][0].shape[1]
    mode = precision_of(x.dtype)
    gi = gemm(x.reshape(T * B, I), _stacked_w_ih(xp, weights).T, mode).reshape(T, B, D * G * H)
    w_hh = _stored_weights(xp.stack([w[1] for w in weights]), mode)
    b_ih, b_hh = ((None if weights[0][k] is None else xp.stack([w[k] for w in weights]))
                  for k in (2, 3))
    hs = backend.empty((D, T + 1, B, H), x.dtype, xp)
    cs = backend.empty((D, T + 1, B, H), x.dtype, xp) if kind == "lstm" else None
    for d in range(D):
        hs[d, 0 if d == 0 else T] = init[d][0]
        if cs is not None:
            cs[d, 0 if d == 0 else T] = init[d][1]
    gates = backend.empty((D, T, B, G * H), x.dtype, xp) if keep else None
    extra = backend.empty((D, T, B, H), x.dtype, xp) if keep else None
    out = backend.empty((T, B, D * H), x.dtype, xp)
    _launch(kind, "fwd", persistent, (gi, w_hh, _ptr(b_ih), _ptr(b_hh), hs, _ptr(cs),
                                      _ptr(gates), _ptr(extra), out), (T, B, H, D), x.dtype)
    return out, _Layer(x, hs, cs, gates, extra)


def _layer_backward(kind: str, persistent: bool, grad_out, layer: _Layer, weights: list,
                    grad_finals: list):
    """Returns (grad x, per direction the grads of its initial states, the 4 weight grads per
    direction)."""
    xp = backend.array_module(grad_out)
    x = layer.x
    T, B, I = x.shape
    D, G, H = len(weights), GATES[kind], layer.hs.shape[3]
    GH = G * H
    mode = precision_of(x.dtype)
    w_hh = _stored_weights(xp.stack([w[1] for w in weights]), mode)
    grad_gi = backend.empty((T, B, D * GH), x.dtype, xp)
    grad_gh = backend.empty((T, B, D * GH), x.dtype, xp) if kind == "gru" else None
    # In: the final states' gradients; out: the initial states'.
    grad_h0 = xp.ascontiguousarray(xp.stack([g[0] for g in grad_finals]))
    grad_c0 = (xp.ascontiguousarray(xp.stack([g[1] for g in grad_finals]))
               if kind == "lstm" else None)
    _launch(kind, "bwd", persistent, (w_hh, grad_out, layer.hs, _ptr(layer.cs), layer.gates,
                                      layer.extra, grad_gi, _ptr(grad_gh), grad_h0,
                                      _ptr(grad_c0)), (T, B, H, D), x.dtype)
    gi2 = grad_gi.reshape(T * B, D * GH)
    gh2 = gi2 if grad_gh is None else grad_gh.reshape(T * B, D * GH)
    grad_x = gemm(gi2, _stacked_w_ih(xp, weights), mode).reshape(T, B, I)
    grad_w_ih = gemm(gi2.T, x.reshape(T * B, I), mode)
    grad_weights = []
    for d, (_, _, b_ih, b_hh) in enumerate(weights):
        cols = slice(d * GH, (d + 1) * GH)
        h_before = layer.hs[d, :T] if d == 0 else layer.hs[d, 1:]
        grad_weights.append([grad_w_ih[cols], gemm(gh2[:, cols].T, h_before.reshape(T * B, H),
                                                   mode),
                             *_bias_grads(CELLS[kind], gi2[:, cols], gh2[:, cols], b_ih,
                                          b_hh)])
    grad_init = [[grad_h0[d]] + ([grad_c0[d]] if grad_c0 is not None else [])
                 for d in range(D)]
    return grad_x, grad_init, grad_weights


def _require_persistent(kind: str, T: int, B: int, H: int, D: int, dtype) -> dict:
    plans, why = persistent_plan(kind, T, B, H, D, dtype)
    if plans is None:
        raise ValueError(f"{kind}: impl 'cuda_persistent' cannot hold hidden size {H} "
                         f"({'bidirectional' if D == 2 else 'unidirectional'}, batch {B}, "
                         f"{precision_of(dtype)}) on chip: {why}; use impl 'cuda_fused'")
    return plans


# --------------------------------------------------------------------------- sequences

def _contiguous(xp, arrays) -> list:
    return [None if a is None else xp.ascontiguousarray(a) for a in arrays]


def _sequence_forward(kind: str, persistent: bool, x, init: tuple, params, num_layers: int,
                      bidirectional: bool, masks, saved):
    """Returns (out, the final states as ``init``); appends the per-layer tapes to ``saved``
    when that is a list."""
    xp = backend.array_module(x)
    D = 2 if bidirectional else 1
    params = _contiguous(xp, params)
    init = _contiguous(xp, init)
    T, B, _ = x.shape
    H = params[1].shape[1]
    if B == 0:
        return (backend.empty((T, 0, D * H), x.dtype, xp),
                [xp.zeros_like(s) for s in init], [])
    layer_in, tape, finals = xp.ascontiguousarray(x), [], [[] for _ in init]
    for layer in range(num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        ks = range(layer * D, (layer + 1) * D)
        out, kept = _layer_forward(kind, persistent, layer_in,
                                   _layer_weights(params, layer, D),
                                   [[s[k] for s in init] for k in ks], saved is not None)
        tape.append(kept)
        for d in range(D):
            end = T if d == 0 else 0
            finals[0].append(kept.hs[d, end])
            if kept.cs is not None:
                finals[1].append(kept.cs[d, end])
        layer_in = out
    return layer_in, [xp.stack(f) for f in finals], tape


def _sequence_backward(kind: str, persistent: bool, grad_out, grad_finals: tuple, x,
                       init: tuple, params, num_layers: int, bidirectional: bool, masks,
                       saved):
    xp = backend.array_module(x)
    if not saved:
        _, _, tape = _sequence_forward(kind, persistent, x, init, params, num_layers,
                                       bidirectional, masks, [])
    else:
        tape = saved[0]
    params = _contiguous(xp, params)
    if x.shape[1] == 0:
        return (xp.zeros_like(x), [xp.zeros_like(s) for s in init],
                [None if p is None else xp.zeros_like(p) for p in params])

    def layer_backward(layer, grad_out, weights, grad_finals):
        return _layer_backward(kind, persistent, grad_out, tape[layer], weights, grad_finals)

    return backward_through_layers(layer_backward, xp.ascontiguousarray(grad_out),
                                   _contiguous(xp, grad_finals), x, init, params, num_layers,
                                   bidirectional, masks)


def _sequence_impls(persistent: bool) -> dict:
    def lstm(x, h0, c0, params, num_layers, bidirectional, masks, saved):
        out, (h_n, c_n), tape = _sequence_forward("lstm", persistent, x, (h0, c0), params,
                                                  num_layers, bidirectional, masks, saved)
        if saved is not None:
            saved.append(tape)
        return out, h_n, c_n

    def lstm_backward(grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers,
                      bidirectional, masks, saved):
        gx, (gh0, gc0), gparams = _sequence_backward(
            "lstm", persistent, grad_out, (grad_h_n, grad_c_n), x, (h0, c0), params,
            num_layers, bidirectional, masks, saved)
        return gx, gh0, gc0, gparams

    def gru(x, h0, params, num_layers, bidirectional, masks, saved):
        out, (h_n,), tape = _sequence_forward("gru", persistent, x, (h0,), params, num_layers,
                                              bidirectional, masks, saved)
        if saved is not None:
            saved.append(tape)
        return out, h_n

    def gru_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
                     saved):
        gx, (gh0,), gparams = _sequence_backward("gru", persistent, grad_out, (grad_h_n,), x,
                                                 (h0,), params, num_layers, bidirectional,
                                                 masks, saved)
        return gx, gh0, gparams

    return {"lstm": lstm, "lstm_backward": lstm_backward, "gru": gru,
            "gru_backward": gru_backward}


# --------------------------------------------------------------------------- cells

def _cell(kind: str, x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    xp = backend.array_module(x)
    x, hx, cx, w_ih, w_hh, b_ih, b_hh = _contiguous(xp, (x, hx, cx, w_ih, w_hh, b_ih, b_hh))
    B, I = x.shape
    H = hx.shape[1]
    h = backend.empty((B, H), x.dtype, xp)
    c = backend.empty((B, H), x.dtype, xp) if kind == "lstm" else None
    if B > 0:
        plan = step_plan("cell_fwd", GATES[kind], B, H, 1, x.dtype.itemsize, x.dtype.itemsize)
        suffix = "f64" if x.dtype == np.float64 else "f32"
        _run(f"{kind}_cell_fwd_{suffix}", plan,
             (x, w_ih, w_hh, _ptr(b_ih), _ptr(b_hh), hx, _ptr(cx), h, _ptr(c), np.int32(B),
              np.int32(I), np.int32(H), np.int32(plan.units)))
    return h if c is None else (h, c)


def lstm_cell(x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return _cell("lstm", x, hx, cx, w_ih, w_hh, b_ih, b_hh)


def gru_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    return _cell("gru", x, hx, None, w_ih, w_hh, b_ih, b_hh)


# --------------------------------------------------------------------------- registration

def _sequence_shape(op: str, args: tuple) -> tuple:
    """(kind, T, B, H, D, dtype) of a sequence op's registry arguments."""
    kind = op.removesuffix("_backward")
    first = {"lstm": 3, "gru": 2}[kind] if op.endswith("_backward") else 0
    x = args[first]
    params = args[first + (3 if kind == "lstm" else 2)]
    bidirectional = args[first + (5 if kind == "lstm" else 4)]
    return kind, x.shape[0], x.shape[1], params[1].shape[1], 2 if bidirectional else 1, x.dtype


def _persistent_priority(op: str):
    def priority(*args, **kwargs) -> int:
        kind, T, B, H, D, dtype = _sequence_shape(op, args)
        return PERSISTENT_PRIORITY if persistent_plan(kind, T, B, H, D, dtype)[0] else NEVER
    return priority


for _persistent, _name in ((True, "cuda_persistent"), (False, "cuda_fused")):
    for _op, _fn in _sequence_impls(_persistent).items():
        _priority = _persistent_priority(_op) if _persistent else FUSED_PRIORITY
        register(_op, _name, device="cuda", dtypes=DTYPES, priority=_priority)(
            gpu_op(_op)(_fn))
for _op, _fn in (("lstm_cell", lstm_cell), ("gru_cell", gru_cell)):
    register(_op, "cuda_fused", device="cuda", dtypes=DTYPES, priority=FUSED_PRIORITY)(
        gpu_op(_op)(_fn))
