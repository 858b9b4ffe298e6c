"""Benchmark cases: for each suite entry, the passes to time (forward and backward; a
convolution's backward as grad_input and grad_weight, each alone), their FLOP
and minimum-byte counts, how gpuconv runs them (the public op with ``impl=`` forced, so the
harness measures exactly what the package runs) and how PyTorch runs them.

Counts: a multiply-add is 2 FLOPs; the minimum bytes are every input read once and every
output written once, at the dtype's size (max-pool indices at 8 bytes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Pass:
    """One timed computation of one case."""

    op: str                      # the registry op whose impls are timed
    name: str                    # "forward", "backward", "grad_input" or "grad_weight"
    flops: int
    elements: int                # elements read and written at the dtype's size
    extra_bytes: int             # bytes beyond those (e.g. int64 indices)
    make: Callable[[np.random.Generator], tuple]          # float64 NumPy inputs
    call: Callable[[tuple, str], Any]                     # gpuconv: (inputs, impl) -> outputs
    torch_call: Callable[[Any, tuple], Callable] | None   # (torch, inputs) -> a timed closure
    # The same computation in plain array-library calls (CuPy on a GPU, NumPy on the CPU).
    array_call: Callable[[tuple], Any] | None = None
    # Untimed work before the timed calls of one impl: (inputs, impl) -> the inputs it takes.
    prepare: Callable[[tuple, str], tuple] | None = None
    # The dtype this pass is timed in, whatever the run's (None: the run's).
    dtype: str | None = None
    # The FLOPs are a GEMM's (multiply-adds that tensor cores can run): the row gets its
    # fraction of the tensor-core GEMM ceiling.
    gemm: bool = False
    # gpuconv takes float32 arrays in every run dtype, computed in the precision setting of
    # the dtype (gpuconv.precision; the harness sets it for every pass).
    float32_arrays: bool = False

    def bytes(self, itemsize: int) -> int:
        return self.elements * itemsize + self.extra_bytes


def _out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ------------------------------------------------------------------------------ convolution

def conv_geometry(c: dict) -> dict:
    g = c.get("groups", 1)
    d = c.get("dilation", 1)
    oh = _out(c["H"], c["R"], c["stride"], c["pad"], d)
    ow = _out(c["W"], c["S"], c["stride"], c["pad"], d)
    macs = c["N"] * c["K"] * oh * ow * (c["C"] // g) * c["R"] * c["S"]
    return {"groups": g, "dilation": d, "OH": oh, "OW": ow, "macs": macs,
            "x": c["N"] * c["C"] * c["H"] * c["W"], "w": c["K"] * (c["C"] // g) * c["R"] * c["S"],
            "y": c["N"] * c["K"] * oh * ow, "b": c["K"]}


def conv_passes(c: dict) -> list[Pass]:
    from .. import backend, functional as F
    from . import im2col_gemm

    geo = conv_geometry(c)
    args = (c["stride"], c["pad"], geo["dilation"], geo["groups"])
    x_shape = (c["N"], c["C"], c["H"], c["W"])
    w_shape = (c["K"], c["C"] // geo["groups"], c["R"], c["S"])
    y_shape = (c["N"], c["K"], geo["OH"], geo["OW"])

    def make_fwd(rng):
        return (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
                rng.standard_normal(c["K"]))

    def make_bwd(rng):
        return (rng.standard_normal(y_shape),) + make_fwd(rng)

    def nhwc_16bit(torch, tensors):
        """16-bit tensors channels-last (cuDNN's tensor-core layout, as cuda_igemm's)."""
        return [t.contiguous(memory_format=torch.channels_last)
                if t.dim() == 4 and t.dtype in (torch.bfloat16, torch.float16) else t
                for t in tensors]

    def torch_fwd(torch, inputs):
        x, w, b = nhwc_16bit(torch, inputs)
        return lambda: torch.nn.functional.conv2d(x, w, b, *args)

    def torch_grad(wrt: slice):
        def closure(torch, inputs):
            gy, x, w, b = nhwc_16bit(torch, inputs)
            leaves = [t.detach().requires_grad_() for t in (x, w, b)]
            y = torch.nn.functional.conv2d(*leaves, *args)
            return lambda: torch.autograd.grad(y, leaves[wrt], gy, retain_graph=True)
        return closure

    def grad(mask):
        return lambda a, impl: F.conv2d_backward(*a, *args, output_mask=mask, impl=impl)

    def channels_last(a, impl):
        """The implicit GEMM's operands channels-last (untimed), as a channels-last caller
        passes them: its NCHW transposes are then not in the figure."""
        return tuple(backend.channels_last(t) if impl == "cuda_igemm" and t.ndim == 4 else t
                     for t in a)

    pairs = (*((v, v) for v in args[:3]), args[3])  # im2col_gemm takes (h, w) pairs
    return [
        Pass("conv2d", "forward", 2 * geo["macs"], geo["x"] + geo["w"] + geo["b"] + geo["y"], 0,
             make_fwd, lambda a, impl: F.conv2d(*a, *args, impl=impl), torch_fwd,
             lambda a: im2col_gemm.conv2d(*a, *pairs), channels_last, gemm=True),
        Pass("conv2d_backward", "grad_input", 2 * geo["macs"], geo["y"] + geo["w"] + geo["x"], 0,
             make_bwd, grad((True, False, False)), torch_grad(slice(0, 1)),
             lambda a: im2col_gemm.conv2d_grad_input(*a[:3], *pairs), channels_last,
             gemm=True),
        Pass("conv2d_backward", "grad_weight", 2 * geo["macs"],
             geo["y"] + geo["x"] + geo["w"] + geo["b"], 0,
             make_bwd, grad((False, True, True)), torch_grad(slice(1, 3)),
             lambda a: im2col_gemm.conv2d_grad_weight(*a[:3], *pairs), channels_last,
             gemm=True),
    ]


# ---------------------------------------------------------------------------------- pooling

def pool_passes(c: dict) -> list[Pass]:
    from .. import functional as F

    k, s, p = c["kernel"], c["stride"], c["pad"]
    oh, ow = _out(c["H"], k, s, p), _out(c["W"], k, s, p)
    x_shape = (c["N"], c["C"], c["H"], c["W"])
    y_shape = (c["N"], c["C"], oh, ow)
    x_n, y_n = int(np.prod(x_shape)), int(np.prod(y_shape))
    taps = y_n * k * k
    is_max = c["kind"] == "max"
    index_bytes = 8 * y_n if is_max else 0

    def make_x(rng):
        # distinct values: no ties, so every impl picks the same maximum
        return rng.permutation(x_n).reshape(x_shape) / x_n

    def make_fwd(rng):
        return (make_x(rng),)

    def make_bwd(rng):
        x = make_x(rng)
        gy = rng.standard_normal(y_shape)
        if not is_max:
            return gy, x
        _, idx = F.max_pool2d(x, k, s, p, return_indices=True, impl="reference")
        return gy, x, idx

    def forward(a, impl):
        pool = F.max_pool2d if is_max else F.avg_pool2d
        return pool(a[0], k, s, p, impl=impl)

    def backward(a, impl):
        if is_max:
            gy, x, idx = a
            return F.max_pool2d_backward(gy, x, k, s, p, indices=idx, impl=impl)
        return F.avg_pool2d_backward(*a, k, s, p, impl=impl)

    def torch_pool(torch):
        return torch.nn.functional.max_pool2d if is_max else torch.nn.functional.avg_pool2d

    def torch_fwd(torch, inputs):
        return lambda: torch_pool(torch)(inputs[0], k, s, p)

    def torch_bwd(torch, inputs):
        gy, x = inputs[:2]
        leaf = x.detach().requires_grad_()
        y = torch_pool(torch)(leaf, k, s, p)
        return lambda: torch.autograd.grad(y, leaf, gy, retain_graph=True)

    return [Pass("max_pool2d" if is_max else "avg_pool2d", "forward", taps, x_n + y_n,
                 index_bytes, make_fwd, forward, torch_fwd),
            Pass("max_pool2d_backward" if is_max else "avg_pool2d_backward", "backward", taps,
                 y_n + x_n, index_bytes, make_bwd, backward,
                 torch_bwd)]


# ------------------------------------------------------------------------------ LSTM, GRU

def lstm_passes(c: dict) -> list[Pass]:
    """The passes of one case of the lstm suite: an LSTM layer, or a GRU one where the case
    says ``"kind": "gru"``; a case's ``"dtype"`` overrides the run's (gpuconv then runs on
    float32 arrays in that precision, PyTorch in that dtype)."""
    from .. import functional as F

    kind = c.get("kind", "lstm")
    G = {"lstm": 4, "gru": 3}[kind]
    T, B, I, H = c["T"], c["B"], c["input"], c["hidden"]
    shapes = [(G * H, I), (G * H, H), (G * H,), (G * H,)]
    step_macs = B * G * H * (I + H)
    params_n = sum(int(np.prod(s)) for s in shapes)
    x_n, y_n = T * B * I, T * B * H
    fwd_op, bwd_op = (F.lstm, F.lstm_backward) if kind == "lstm" else (F.gru, F.gru_backward)
    no_final_grads = (None, None) if kind == "lstm" else (None,)

    def make_fwd(rng):
        bound = 1 / np.sqrt(H)
        return (rng.standard_normal((T, B, I)),
                *(rng.uniform(-bound, bound, s) for s in shapes))

    def make_bwd(rng):
        return (rng.standard_normal((T, B, H)),) + make_fwd(rng)

    def forward(a, impl):
        return fwd_op(a[0], None, list(a[1:]), impl=impl)

    def with_reserve(a, impl):
        # As torch's autograd keeps the forward's activations, the backward starts from the
        # impl's own forward (its reserve), outside the timing.
        reserve = F.Reserve()
        fwd_op(a[1], None, list(a[2:]), reserve=reserve, impl=impl)
        return a + (reserve,)

    def backward(a, impl):
        reserve = a[6] if len(a) > 6 else None
        return bwd_op(a[0], *no_final_grads, a[1], None, list(a[2:6]), reserve=reserve,
                      impl=impl)

    def torch_module(torch, params):
        m = getattr(torch.nn, kind.upper())(I, H).to(params[0].device, params[0].dtype)
        with torch.no_grad():
            for p, value in zip(m.parameters(), params):
                p.copy_(value)
        return m

    def torch_fwd(torch, inputs):
        m = torch_module(torch, inputs[1:])
        return lambda: m(inputs[0])

    def torch_bwd(torch, inputs):
        gy, x = inputs[:2]
        m = torch_module(torch, inputs[2:])
        leaf = x.detach().requires_grad_()
        y, _ = m(leaf)
        return lambda: torch.autograd.grad(y, [leaf, *m.parameters()], gy, retain_graph=True)

    extra = dict(dtype=c.get("dtype"), float32_arrays=True, gemm=True)
    return [Pass(kind, "forward", 2 * T * step_macs, x_n + params_n + y_n + 2 * B * H, 0,
                 make_fwd, forward, torch_fwd, **extra),
            Pass(f"{kind}_backward", "backward", 4 * T * step_macs,
                 y_n + x_n + params_n + x_n + params_n, 0, make_bwd, backward, torch_bwd,
                 prepare=with_reserve, **extra)]


SUITE_PASSES: dict[str, Callable[[dict], list]] = {"conv": conv_passes, "pool": pool_passes,
                                                   "lstm": lstm_passes}
