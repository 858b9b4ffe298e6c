"""Launchers for ``kernels/conv_igemm.cu``: convolution as implicit GEMM on tensor cores,
channels-last, registered as impl ``cuda_igemm`` of ``conv2d``, ``conv2d_backward``,
``conv_transpose2d``, ``conv_transpose2d_backward`` and ``conv2d_bias_act``.

Arrays. The kernels work in NHWC (weights in KRSC). An array that is channels-last in
memory (``x.transpose(0, 2, 3, 1)`` is C-contiguous, as PyTorch's ``channels_last`` and
:func:`gpuconv.backend.channels_last` make) is used as it is; an NCHW-contiguous one pays one
transpose copy. Outputs follow the input: channels-last views for channels-last inputs,
NCHW-contiguous arrays (one transpose) otherwise.

Precision. float32 arrays: 3xTF32 (``"fp32"``, the default) or one tf32 pass (``"tf32"``,
also under ``"bf16"`` and ``"fp16"``, which these kernels have for 16-bit arrays only) per
:mod:`gpuconv.precision`; bfloat16 and float16 arrays (bfloat16 as ``ml_dtypes``' dtype,
which CuPy supports where ``ml_dtypes`` is installed): their own mma, fp32 accumulation.

Configurations. A kernel variant is (precision, tile, copy widths), all compile-time
(``-D``): :data:`TILES` are the candidate tiles; :func:`choose` picks one per call from the
tuning table that ``gpuconv tune`` writes (:data:`TABLE`, keyed by GPU name and problem) or,
for problems not in it, from :func:`heuristic`.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ... import backend, precision
from .. import register
from . import DEFINE_VARIANTS, NULL, device_properties, gpu_op, kernel

FAMILY = "conv_igemm"
# The activations of the fused epilogue, in the kernel's ACT_* order.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu")
# Precision mode -> (GPUCONV_IGEMM_PREC, entry-point suffix).
MODES = {"fp32": (0, "f32"), "tf32": (1, "tf32"), "bf16": (2, "bf16"), "fp16": (3, "f16")}
# The modes of the float32 kernels.
FLOAT32_MODES = ("fp32", "tf32")
# Bias-gradient rows summed per partial (first stage of its two-stage reduction).
BIAS_ROWS_PER_CHUNK = 256
# Threads and block cap of the elementwise reduction kernels (grid-stride).
REDUCE_THREADS = 256
MAX_REDUCE_BLOCKS = 4096
# Split-K of wgrad: each split takes at least this many k-tiles of the N*P*Q reduction, and
# the splits stop once the grid has this many blocks per SM (waves enough to fill the GPU).
MIN_TILES_PER_SPLIT = 8
BLOCKS_PER_SM_TARGET = 2
MAX_SPLITS = 64
# Where the table of tuned configurations lives (committed with the package); the
# environment variable points gpuconv at another one.
TABLE = Path(os.environ.get("GPUCONV_TUNING_TABLE",
                            Path(__file__).with_name("conv_igemm_tuning.json")))


def _bfloat16():
    """ml_dtypes' bfloat16 dtype, or None where ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


DTYPES = ("float32", "float16") + (("bfloat16",) if _bfloat16() is not None else ())


# --------------------------------------------------------------------------- configurations

@dataclass(frozen=True)
class Tile:
    """A block tile bm x bn of warp tiles wm x wn, ``stages`` k-tiles in flight, designed for
    ``min_blocks`` resident blocks per SM (the kernel's __launch_bounds__). The k-tile holds
    64 bytes of each row: 16 fp32 or 32 16-bit elements."""

    name: str
    bm: int
    bn: int
    wm: int
    wn: int
    stages: int
    min_blocks: int

    @property
    def threads(self) -> int:
        return (self.bm // self.wm) * (self.bn // self.wn) * 32

    def bk(self, itemsize: int) -> int:
        return 64 // itemsize


TILES = {t.name: t for t in (
    Tile("128x128", 128, 128, 64, 32, 3, 1),
    Tile("128x64", 128, 64, 64, 32, 4, 2),
    Tile("64x64", 64, 64, 32, 32, 4, 2),
    Tile("64x32", 64, 32, 32, 16, 4, 3),
)}
PASSES = ("fprop", "dgrad", "wgrad")
# Which operand tiles are K-major (the reduction contiguous) per pass: (A, B).
_K_MAJOR = {"fprop": (True, True), "dgrad": (True, False), "wgrad": (False, False)}


def smem_bytes(tile: Tile, pass_: str, itemsize: int) -> int:
    """Dynamic shared memory of one block: the kernel's Smem<LA, LB>::BYTES."""
    bk = tile.bk(itemsize)

    def elems(k_major: bool, mn: int) -> int:
        pad = 4 if k_major and itemsize == 4 else 8
        return mn * (bk + pad) if k_major else bk * (mn + pad)

    a_major, b_major = _K_MAJOR[pass_]
    return tile.stages * (elems(a_major, tile.bm) + elems(b_major, tile.bn)) * itemsize


def itemsize_of(mode: str) -> int:
    """Bytes per element of the arrays (and operands) a precision mode computes on."""
    return 4 if mode in FLOAT32_MODES else 2


class Problem(NamedTuple):
    """One convolution pass in the kernels' terms: its per-group GEMM is M x N x K."""

    pass_: str
    mode: str
    geo: "Geometry"

    @property
    def gemm(self) -> tuple[int, int, int]:
        g = self.geo
        cg, kg = g.C // g.groups, g.K // g.groups
        if self.pass_ == "fprop":
            return g.N * g.P * g.Q, kg, g.R * g.S * cg
        if self.pass_ == "dgrad":
            return g.N * g.H * g.W, cg, g.R * g.S * kg
        return kg, g.R * g.S * cg, g.N * g.P * g.Q

    @property
    def itemsize(self) -> int:
        return itemsize_of(self.mode)

    def key(self) -> str:
        """The tuning table's key: pass, mode and every size."""
        g = self.geo
        return (f"{self.pass_}/{self.mode}/n{g.N}c{g.C}h{g.H}w{g.W}k{g.K}r{g.R}s{g.S}"
                f"/st{g.stride[0]}x{g.stride[1]}p{g.padding[0]}x{g.padding[1]}"
                f"d{g.dilation[0]}x{g.dilation[1]}g{g.groups}")


class Choice(NamedTuple):
    tile: Tile
    splits: int
    source: str  # "table" or "heuristic"


def _tiles_of(tile: Tile, M: int, N: int) -> int:
    return math.ceil(M / tile.bm) * math.ceil(N / tile.bn)


def heuristic(problem: Problem, sm_count: int) -> Choice:
    """A configuration from the problem's shape alone, for problems the table lacks.

    The tile: the largest whose grid still gives every SM two blocks (so a small problem
    is not left to a few SMs), among tiles no wider than the GEMM's N needs (LeNet's 6 or
    16 output channels waste most of a 64-wide tile). wgrad's M (output channels) and N
    (R*S*C) are small and its reduction (N*P*Q) long: split-K until the grid fills the GPU,
    keeping at least MIN_TILES_PER_SPLIT k-tiles per split.
    """
    M, N, K = problem.gemm
    width = 32 if N <= 32 else 64 if N <= 64 else 128
    fitting = [t for t in TILES.values() if t.bn <= width] or list(TILES.values())
    by_size = sorted(fitting, key=lambda t: t.bm * t.bn, reverse=True)
    tile = next((t for t in by_size
                 if _tiles_of(t, M, N) * problem.geo.groups >= BLOCKS_PER_SM_TARGET * sm_count),
                by_size[-1])
    splits = 1
    if problem.pass_ == "wgrad":
        k_tiles = math.ceil(K / tile.bk(problem.itemsize))
        blocks = _tiles_of(tile, M, N) * problem.geo.groups
        want = math.ceil(BLOCKS_PER_SM_TARGET * sm_count / max(1, blocks))
        splits = max(1, min(want, k_tiles // MIN_TILES_PER_SPLIT, MAX_SPLITS))
    return Choice(tile, splits, "heuristic")


@functools.lru_cache(maxsize=None)
def load_table(path: str) -> dict:
    """The tuning table at ``path``: ``{gpu name: {problem key: {"tile", "splits", ...}}}``;
    empty when the file does not exist."""
    p = Path(path)
    if not p.exists():
        return {}
    data = json.loads(p.read_text())
    return data.get("devices", {})


def table_entries(device_name: str) -> dict:
    """The table's entries for one GPU (empty when it has none)."""
    return load_table(str(TABLE)).get(device_name, {})


def _device() -> tuple[str, int]:
    props = device_properties()
    return props["name"].decode(), int(props["multiProcessorCount"])


def choose(problem: Problem) -> Choice:
    """The tuned configuration for ``problem`` on this GPU, else the heuristic's."""
    name, sm_count = _device()
    entry = table_entries(name).get(problem.key())
    if entry is not None and entry.get("tile") in TILES:
        return Choice(TILES[entry["tile"]], int(entry.get("splits", 1)), "table")
    return heuristic(problem, sm_count)


def precision_defines(mode: str) -> tuple[str, ...]:
    """The ``-D`` options of the variant that serves the elementwise kernels of a mode (the
    split-K reduction and the bias gradient)."""
    return (f"GPUCONV_IGEMM_PREC={MODES[mode][0]}",)


def defines(mode: str, tile: Tile, vec_c: int, vec_k: int, itemsize: int) -> tuple[str, ...]:
    """The ``-D`` options of one kernel variant."""
    return (f"GPUCONV_IGEMM_PREC={MODES[mode][0]}", f"GPUCONV_IGEMM_BM={tile.bm}",
            f"GPUCONV_IGEMM_BN={tile.bn}", f"GPUCONV_IGEMM_BK={tile.bk(itemsize)}",
            f"GPUCONV_IGEMM_WM={tile.wm}", f"GPUCONV_IGEMM_WN={tile.wn}",
            f"GPUCONV_IGEMM_STAGES={tile.stages}", f"GPUCONV_IGEMM_MIN_BLOCKS={tile.min_blocks}",
            f"GPUCONV_IGEMM_VEC_C={vec_c}", f"GPUCONV_IGEMM_VEC_K={vec_k}")


def _declared_variants() -> tuple[tuple[str, ...], ...]:
    """Every ``-D`` variant the launchers below compile: per precision mode, each tile with
    16-byte or one-element copies along C and along K (fprop uses VEC_K 1; dgrad and wgrad
    any pair), and the mode's elementwise variant."""
    variants = []
    for mode in MODES:
        itemsize = itemsize_of(mode)
        widths = (16 // itemsize, 1)
        variants.append(precision_defines(mode))
        variants += [defines(mode, tile, vec_c, vec_k, itemsize)
                     for tile in TILES.values() for vec_c in widths for vec_k in widths]
    return tuple(variants)


DEFINE_VARIANTS[FAMILY] = _declared_variants()


# --------------------------------------------------------------------------- arrays

def mode_of(dtype) -> str:
    """The precision mode for arrays of ``dtype`` under the float32 precision setting."""
    return precision.mode_of(dtype, FLOAT32_MODES)


def _address(a) -> int:
    """The device address of ``a``'s first element (CuPy's ``data.ptr``; the CPU emulator's
    arrays are NumPy arrays, whose address is ``ctypes.data``)."""
    if backend.array_module(a).__version__.endswith("emulated"):
        return a.ctypes.data
    return a.data.ptr


def _vec(itemsize: int, channels: tuple, arrays: tuple) -> int:
    """16 bytes of elements per copy when every channel count is a multiple of that and every
    array 16-byte aligned; else one element."""
    wide = 16 // itemsize
    ok = all(c % wide == 0 for c in channels) and all(
        a is None or _address(a) % 16 == 0 for a in arrays)
    return wide if ok else 1


def _nhwc(a):
    """A (N, C, H, W)-shaped array as an NHWC C-contiguous array: a view when ``a`` is
    channels-last in memory, else one transpose copy."""
    cp = backend.cupy_or_none()
    return None if a is None else cp.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _is_channels_last(a) -> bool:
    """NHWC in memory and not NCHW-contiguous too (C = 1 or H = W = 1 is both: NCHW wins)."""
    return a.transpose(0, 2, 3, 1).flags.c_contiguous and not a.flags.c_contiguous


def _nchw(a, channels_last: bool):
    """An NHWC array back as (N, C, H, W): a channels-last view, or NCHW-contiguous."""
    cp = backend.cupy_or_none()
    v = a.transpose(0, 3, 1, 2)
    return v if channels_last else cp.ascontiguousarray(v)


def _i32(*values) -> tuple:
    return tuple(np.int32(v) for v in values)


def _ptr(a):
    """An optional array argument: NULL, or the array made contiguous (the kernel reads a
    per-channel scale or bias at stride 1; a strided view would be read wrong)."""
    return NULL if a is None else backend.cupy_or_none().ascontiguousarray(a)


def _launch(name: str, problem: Problem, choice: Choice, vec_c: int, vec_k: int,
            itemsize: int, grid: int, args: tuple) -> None:
    tile = choice.tile
    smem = smem_bytes(tile, problem.pass_, itemsize)
    fn = _function(f"{name}_{MODES[problem.mode][1]}",
                   defines(problem.mode, tile, vec_c, vec_k, itemsize), smem,
                   backend.cupy_or_none().cuda.Device().id)
    fn((grid,), (tile.threads,), args, shared_mem=smem)


@functools.lru_cache(maxsize=None)
def _function(entry: str, variant: tuple, smem: int, device_id: int):
    """The kernel of one variant on one device, opted in to ``smem`` bytes of dynamic shared
    memory (above 48 KiB a kernel must ask first), once: the attribute stays on the
    function, and reading it back is a driver call per launch."""
    fn = kernel(FAMILY, entry, variant)
    if fn.max_dynamic_shared_size_bytes < smem:
        fn.max_dynamic_shared_size_bytes = smem
    return fn


def _elementwise_blocks(count: int) -> int:
    return min(MAX_REDUCE_BLOCKS, max(1, math.ceil(count / REDUCE_THREADS)))


def _reduce(partial, out, splits: int, mode: str) -> None:
    """out (flat) = sum of partial's ``splits`` slices, in order, in out's dtype."""
    count = out.size
    fn = kernel(FAMILY, f"conv2d_wgrad_reduce_{MODES[mode][1]}", precision_defines(mode))
    fn((_elementwise_blocks(count),), (REDUCE_THREADS,), (partial, out, np.int64(count),
                                                          np.int32(splits)))


class Geometry(NamedTuple):
    """One convolution's sizes (input N, C, H, W; weight K, R, S; output P, Q)."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int

    def problem(self, pass_: str, mode: str) -> Problem:
        return Problem(pass_, mode, self)

    def args(self) -> tuple:
        return _i32(self.N, self.H, self.W, self.C, self.K, self.R, self.S, self.P, self.Q,
                    *self.stride, *self.padding, *self.dilation, self.groups)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _geometry(x_shape, w_shape, stride, padding, dilation, groups, out_hw=None) -> Geometry:
    N, C, H, W = x_shape
    K, _, R, S = w_shape
    P, Q = out_hw or (_out_size(H, R, stride[0], padding[0], dilation[0]),
                      _out_size(W, S, stride[1], padding[1], dilation[1]))
    return Geometry(N, C, H, W, K, R, S, P, Q, tuple(stride), tuple(padding), tuple(dilation),
                 groups)


def _check_sizes(g: Geometry) -> None:
    for pass_ in PASSES:
        if max(g.problem(pass_, "fp32").gemm) >= 2 ** 31 or g.N * g.P * g.Q >= 2 ** 31:
            raise ValueError(f"cuda_igemm: a GEMM dimension of this convolution (input "
                             f"{(g.N, g.C, g.H, g.W)}, weight {(g.K, g.C // g.groups, g.R, g.S)})"
                             " reaches 2^31; use impl='cuda_im2col'")


# --------------------------------------------------------------------------- the three passes

def _implicit_gemm(entry: str, pass_: str, a, b, out_shape: tuple, geo: Geometry, mode: str,
                   choice: Choice | None, vec_c: int, vec_k: int, epilogue: tuple):
    """out (NHWC, a's dtype) = the ``pass_`` GEMM of operands a and b by kernel ``entry``,
    its epilogue arguments (scale, bias, residual, activation, param) after the geometry."""
    out = backend.empty(out_shape, a.dtype, backend.cupy_or_none())
    if out.size == 0:
        return out
    problem = geo.problem(pass_, mode)
    choice = choice or choose(problem)
    M, Ng, _ = problem.gemm
    grid = _tiles_of(choice.tile, M, Ng) * geo.groups
    _launch(entry, problem, choice, vec_c, vec_k, a.dtype.itemsize, grid,
            (a, b, out, *geo.args(), *epilogue))
    return out


def fprop(x_nhwc, w_krsc, geo: Geometry, mode: str, *, scale=None, bias=None, residual=None,
          activation: str = "identity", param: float = 0.0, choice: Choice | None = None):
    """y (N, P, Q, K) NHWC = act(scale * conv(x, w) + bias + residual)."""
    vec_c = _vec(x_nhwc.dtype.itemsize, (geo.C, geo.C // geo.groups), (x_nhwc, w_krsc))
    return _implicit_gemm("conv2d_fwd_igemm", "fprop", x_nhwc, w_krsc,
                          (geo.N, geo.P, geo.Q, geo.K), geo, mode, choice, vec_c, 1,
                          (_ptr(scale), _ptr(bias), _ptr(residual),
                           np.int32(ACTIVATIONS.index(activation)), np.float32(param)))


def dgrad(dy_nhwc, w_krsc, geo: Geometry, mode: str, *, bias=None, choice: Choice | None = None):
    """dx (N, H, W, C) NHWC = the gradient of conv(x, w) for grad dy, plus bias."""
    itemsize = dy_nhwc.dtype.itemsize
    vec_c = _vec(itemsize, (geo.C // geo.groups,), (w_krsc,))
    vec_k = _vec(itemsize, (geo.K, geo.K // geo.groups), (dy_nhwc,))
    return _implicit_gemm("conv2d_dgrad_igemm", "dgrad", dy_nhwc, w_krsc,
                          (geo.N, geo.H, geo.W, geo.C), geo, mode, choice, vec_c, vec_k,
                          (NULL, _ptr(bias), NULL, np.int32(0), np.float32(0.0)))


def wgrad(dy_nhwc, x_nhwc, geo: Geometry, mode: str, choice: Choice | None = None):
    """dw (K, R, S, C/groups) KRSC = the gradient of conv(x, w) for grad dy: split-K partial
    sums in fp32, then their deterministic reduction."""
    cp = backend.cupy_or_none()
    dw = backend.empty((geo.K, geo.R, geo.S, geo.C // geo.groups), x_nhwc.dtype, cp)
    if geo.N * geo.P * geo.Q == 0:
        dw[...] = 0
        return dw
    problem = geo.problem("wgrad", mode)
    choice = choice or choose(problem)
    M, Ng, K = problem.gemm
    itemsize = x_nhwc.dtype.itemsize
    k_tiles = math.ceil(K / choice.tile.bk(itemsize))
    per_split = math.ceil(k_tiles / max(1, choice.splits))
    splits = math.ceil(k_tiles / per_split)
    direct = splits == 1 and dw.dtype == np.float32
    partial = dw if direct else cp.empty((splits,) + dw.shape, np.float32)
    vec_c = _vec(itemsize, (geo.C, geo.C // geo.groups), (x_nhwc,))
    vec_k = _vec(itemsize, (geo.K, geo.K // geo.groups), (dy_nhwc,))
    grid = _tiles_of(choice.tile, M, Ng) * geo.groups * splits
    _launch("conv2d_wgrad_igemm", problem, choice, vec_c, vec_k, itemsize, grid,
            (dy_nhwc, x_nhwc, partial, *geo.args(), np.int32(per_split)))
    if not direct:
        _reduce(partial, dw, splits, mode)
    return dw


def bias_grad(dy_nhwc, mode: str):
    """(K,) = the sum of dy (N, P, Q, K) over N, P and Q, in fp32 and in a fixed order."""
    cp = backend.cupy_or_none()
    K = dy_nhwc.shape[-1]
    M = dy_nhwc.size // K
    gb = backend.empty((K,), dy_nhwc.dtype, cp)
    if M == 0:
        gb[...] = 0
        return gb
    chunks = math.ceil(M / BIAS_ROWS_PER_CHUNK)
    partial = cp.empty((chunks, K), np.float32)
    fn = kernel(FAMILY, f"conv2d_bias_grad_partial_{MODES[mode][1]}", precision_defines(mode))
    fn((_elementwise_blocks(chunks * K),), (REDUCE_THREADS,),
       (dy_nhwc, partial, np.int64(M), np.int32(K), np.int32(BIAS_ROWS_PER_CHUNK),
        np.int32(chunks)))
    _reduce(partial, gb, chunks, mode)
    return gb


# --------------------------------------------------------------------------- registered impls

# Priority among the GPU conv impls, without measurements yet (to be replaced by `gpuconv
# tune` data): cuda_direct scores 20 for depthwise and tiny reductions and 5 otherwise,
# cuda_im2col 10. The implicit GEMM does the im2col GEMM's work on tensor cores without
# writing the R*S-times-larger column matrix, so it should beat im2col wherever the GEMM has
# enough rows and columns to fill 16 x 8 mma tiles: above it (15) in general. Where a group
# has a single input or output channel (depthwise, C/groups * R * S tiny) the mma tiles
# are mostly zeros and the direct kernel's 20 keeps it; those score 1 here.
DEPTHWISE_REDUCTION = 16


def _priority(x, weight, bias, stride, padding, dilation, groups) -> int:
    if x.dtype != np.float32:
        return 30  # the only GPU conv impl for bfloat16/float16
    K, cg, R, S = weight.shape
    if cg * R * S < DEPTHWISE_REDUCTION or K // groups == 1:
        return 1
    return 15


def _tensor_core_gpu() -> bool:
    """mma.sync with tf32/bf16 and cp.async need compute capability 8.0 (Ampere) or newer."""
    if not backend.gpu_available():
        return False
    return device_properties()["major"] >= 8


def _krsc(w):
    """A (K, C/g, R, S) weight as KRSC, C-contiguous (a view when it is channels-last)."""
    return _nhwc(w)


def _w_from_krsc(dw, like):
    return _nchw(dw, _is_channels_last(like))


@register("conv2d", "cuda_igemm", device="cuda", dtypes=DTYPES,
          available=_tensor_core_gpu, priority=_priority)
@gpu_op("conv2d")
def conv2d_igemm(x, weight, bias, stride, padding, dilation, groups):
    geo = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    _check_sizes(geo)
    y = fprop(_nhwc(x), _krsc(weight), geo, mode_of(x.dtype), bias=bias)
    return _nchw(y, _is_channels_last(x))


@register("conv2d_bias_act", "cuda_igemm", device="cuda", dtypes=DTYPES,
          available=_tensor_core_gpu, priority=20)
@gpu_op("conv2d_bias_act")
def conv2d_bias_act_igemm(x, weight, bias, stride, padding, dilation, groups, activation,
                          param, residual, scale):
    geo = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    _check_sizes(geo)
    y = fprop(_nhwc(x), _krsc(weight), geo, mode_of(x.dtype), scale=scale, bias=bias,
              residual=_nhwc(residual), activation=activation, param=param)
    return _nchw(y, _is_channels_last(x))


@register("conv2d_backward", "cuda_igemm", device="cuda", dtypes=DTYPES,
          available=_tensor_core_gpu,
          priority=lambda gy, x, w, mask, *a: _priority(x, w, None, *a))
@gpu_op("conv2d_backward")
def conv2d_backward_igemm(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    geo = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    _check_sizes(geo)
    mode = mode_of(x.dtype)
    gy = _nhwc(grad_out)
    gx = gw = gb = None
    if need_x:
        gx = _nchw(dgrad(gy, _krsc(weight), geo, mode), _is_channels_last(x))
    if need_w:
        gw = _w_from_krsc(wgrad(gy, _nhwc(x), geo, mode), weight)
    if need_b:
        gb = bias_grad(gy, mode)
    return gx, gw, gb


def _transpose_geometry(x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    """conv_transpose2d(x, w) is the dgrad of a conv2d whose output grad is x (N, Cin, H, W)
    and whose weight is w (Cin, Cout/g, R, S) read as (K=Cin, C/g=Cout/g, R, S)."""
    N, cin, H, W = x_shape
    _, cout_g, R, S = w_shape
    out_hw = tuple((size - 1) * s - 2 * p + d * (k - 1) + o + 1 for size, s, p, d, k, o in
                   zip((H, W), stride, padding, dilation, (R, S), output_padding))
    return Geometry(N, cout_g * groups, *out_hw, cin, R, S, H, W, tuple(stride), tuple(padding),
                 tuple(dilation), groups)


@register("conv_transpose2d", "cuda_igemm", device="cuda", dtypes=DTYPES,
          available=_tensor_core_gpu, priority=10)
@gpu_op("conv_transpose2d")
def conv_transpose2d_igemm(x, weight, bias, stride, padding, output_padding, dilation, groups):
    geo = _transpose_geometry(x.shape, weight.shape, stride, padding, output_padding, dilation,
                              groups)
    _check_sizes(geo)
    y = dgrad(_nhwc(x), _krsc(weight), geo, mode_of(x.dtype), bias=bias)
    return _nchw(y, _is_channels_last(x))


@register("conv_transpose2d_backward", "cuda_igemm", device="cuda", dtypes=DTYPES,
          available=_tensor_core_gpu, priority=10)
@gpu_op("conv_transpose2d_backward")
def conv_transpose2d_backward_igemm(grad_out, x, weight, has_bias, stride, padding,
                                    output_padding, dilation, groups):
    geo = _transpose_geometry(x.shape, weight.shape, stride, padding, output_padding, dilation,
                              groups)
    _check_sizes(geo)
    mode = mode_of(x.dtype)
    gy = _nhwc(grad_out)
    gx = _nchw(fprop(gy, _krsc(weight), geo, mode), _is_channels_last(x))
    gw = _w_from_krsc(wgrad(_nhwc(x), gy, geo, mode), weight)
    return gx, gw, bias_grad(gy, mode) if has_bias else None


