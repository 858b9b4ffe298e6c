"""conv2d forward + backward on the CPU: the numpy impl against PyTorch's CPU convolution.

Run with timing: ``.venv/bin/python -m pytest bench/bench_conv.py --benchmark-enable``
(without ``--benchmark-enable`` each case runs once, as a smoke test). PyTorch runs with as
many threads as NumPy's BLAS gets by default (the CPUs this process may use); its cases
skip where torch is not installed.

OpenBLAS and PyTorch's OpenMP pool each keep idle threads spinning for a while after a call,
and both collapse when a core is taken by another process (a thread waiting at a barrier
loses its time slice). On a machine with few cores, run ``-k numpy`` and ``-k torch`` as
separate processes on an otherwise idle machine, and compare minima.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from gpuconv.functional import conv2d, conv2d_backward

# label: N, C, H, W, K, R, S, stride, padding, groups
SHAPES = {
    "lenet_c1": (256, 1, 28, 28, 6, 5, 5, 1, 2, 1),
    "lenet_c2": (256, 6, 14, 14, 16, 5, 5, 1, 0, 1),
    "3x3_64_32x32": (8, 64, 32, 32, 64, 3, 3, 1, 1, 1),
    "depthwise_3x3_64_32x32": (8, 64, 32, 32, 64, 3, 3, 1, 1, 64),
}


def _case(label):
    n, c, h, w, k, r, s, stride, padding, groups = SHAPES[label]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((k, c // groups, r, s), dtype=np.float32)
    bias = rng.standard_normal(k, dtype=np.float32)
    out_hw = [(size + 2 * padding - kk) // stride + 1 for size, kk in ((h, r), (w, s))]
    grad_out = rng.standard_normal((n, k, *out_hw), dtype=np.float32)
    return x, weight, bias, grad_out, dict(stride=stride, padding=padding, groups=groups)


@pytest.mark.parametrize("label", SHAPES)
def test_numpy_conv2d_forward_backward(benchmark, label):
    x, weight, bias, grad_out, args = _case(label)

    def step():
        conv2d(x, weight, bias, **args, impl="numpy")
        return conv2d_backward(grad_out, x, weight, bias, **args, impl="numpy")

    benchmark.group = label
    benchmark(step)


@pytest.fixture
def torch_matching_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count())
    yield torch
    torch.set_num_threads(before)


@pytest.mark.parametrize("label", SHAPES)
def test_torch_conv2d_forward_backward(benchmark, torch_matching_threads, label):
    torch = torch_matching_threads
    x, weight, bias, grad_out, args = (torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                                       for a in _case(label))
    stride, padding, groups = args["stride"], args["padding"], args["groups"]

    def step():
        torch.nn.functional.conv2d(x, weight, bias, stride, padding, 1, groups)
        return torch.ops.aten.convolution_backward(
            grad_out, x, weight, [weight.shape[0]], [stride] * 2, [padding] * 2, [1, 1], False,
            [0, 0], groups, [True, True, True])

    benchmark.group = label
    benchmark(step)
