"""Pooling on the CPU: the ``numpy`` impl beside PyTorch's CPU kernels, same thread count.

Run: ``.venv/bin/python -m pytest bench/bench_pool.py --benchmark-enable``. Cases are grouped
by op and shape, so each table row pair compares gpuconv with torch; the torch rows skip where
torch is not installed. Backward passes get the saved max-pool indices on both sides.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from gpuconv.functional import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

# label, input shape, kernel, stride, padding
CASES = [
    ("lenet_2x2_s2", (256, 6, 28, 28), 2, 2, 0),
    ("cifar_2x2_s2", (8, 64, 32, 32), 2, 2, 0),
    ("cifar_3x3_s2_p1", (8, 64, 32, 32), 3, 2, 1),
]
OPS = ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")


def _gpuconv_call(op, x, g, idx, k, s, p):
    calls = {
        "max_pool2d": lambda: max_pool2d(x, k, s, p, impl="numpy"),
        "max_pool2d_backward": lambda: max_pool2d_backward(g, x, k, s, p, indices=idx,
                                                           impl="numpy"),
        "avg_pool2d": lambda: avg_pool2d(x, k, s, p, impl="numpy"),
        "avg_pool2d_backward": lambda: avg_pool2d_backward(g, x, k, s, p, impl="numpy"),
    }
    return calls[op]


def _torch_call(op, x, g, idx, k, s, p):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(numba.get_num_threads())
    xt, gt, it = (torch.from_numpy(a) for a in (x, g, idx))
    aten, F = torch.ops.aten, torch.nn.functional
    calls = {
        "max_pool2d": lambda: F.max_pool2d(xt, k, s, p),
        "max_pool2d_backward": lambda: aten.max_pool2d_with_indices_backward(
            gt, xt, [k, k], [s, s], [p, p], [1, 1], False, it),
        "avg_pool2d": lambda: F.avg_pool2d(xt, k, s, p),
        "avg_pool2d_backward": lambda: aten.avg_pool2d_backward(
            gt, xt, [k, k], [s, s], [p, p], False, True, None),
    }
    return calls[op]


@pytest.mark.parametrize("lib", ["gpuconv", "torch"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("label,shape,k,s,p", CASES, ids=[c[0] for c in CASES])
def test_pool(benchmark, label, shape, k, s, p, op, lib):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    out, idx = max_pool2d(x, k, s, p, return_indices=True)
    g = rng.standard_normal(out.shape, dtype=np.float32)
    call = (_gpuconv_call if lib == "gpuconv" else _torch_call)(op, x, g, idx, k, s, p)
    call()  # numba compiles on the first call; keep that out of the timing
    benchmark.group = f"{op} {label} {numba.get_num_threads()} threads"
    benchmark(call)
