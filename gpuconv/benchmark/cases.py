"""Benchmark cases: for each suite entry, the passes to time (forward, backward), their FLOP
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
    name: str                    # "forward" or "backward"
    flops: int
    elements: int                # elements read and written at the dtype's size
    extra_bytes: int             # bytes beyond those (e.g. int64 indices)
    make: Callable[[np.random.Generator], tuple]          # float64 NumPy inputs
    call: Callable[[tuple, str], Any]                     # gpuconv: (inputs, impl) -> outputs
    torch_call: Callable[[Any, tuple], Callable] | None   # (torch, inputs) -> a timed closure

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
    from .. import functional as F

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

    def torch_fwd(torch, inputs):
        x, w, b = inputs
        return lambda: torch.nn.functional.conv2d(x, w, b, *args)

    def torch_bwd(torch, inputs):
        gy, x, w, b = inputs
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        y = torch.nn.functional.conv2d(*leaves, *args)
        return lambda: torch.autograd.grad(y, leaves, gy, retain_graph=True)

    return [
        Pass("conv2d", "forward", 2 * geo["macs"], geo["x"] + geo["w"] + geo["b"] + geo["y"], 0,
             make_fwd, lambda a, impl: F.conv2d(*a, *args, impl=impl), torch_fwd),
        Pass("conv2d_backward", "backward", 4 * geo["macs"],
             geo["y"] + 2 * (geo["x"] + geo["w"]) + geo["b"], 0,
             make_bwd, lambda a, impl: F.conv2d_backward(*a, *args, impl=impl), torch_bwd),
    ]


SUITE_PASSES: dict[str, Callable[[dict], list]] = {"conv": conv_passes}
