"""float16 arrays on the CPU compute in float32 in the numpy impls: never the slow reference,
results in float16 within float16's tolerance of the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

from support import assert_close

from gpuconv import functional as F, kernels

HALF = np.float16


def _numpy_ops() -> list[str]:
    return [op for op in kernels.ops()
            if any(i.name == "numpy" for i in kernels.implementations(op))]


@pytest.mark.parametrize("op", _numpy_ops())
def test_float16_selects_the_numpy_impl_not_the_reference(op):
    impl = next(i for i in kernels.implementations(op) if i.name == "numpy")
    assert impl.supports(HALF), f"{op}: float16 would fall back to the reference"


def _half(*arrays):
    """float16 copies, and their exact values in float64 for the reference."""
    low = [a.astype(HALF) for a in arrays]
    return low, [a.astype(np.float64) for a in low]


def test_conv2d_and_its_backward_in_float16():
    rng = np.random.default_rng(0)
    (x, w, b, gy), ref = _half(rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)),
                               rng.standard_normal(4), rng.standard_normal((2, 4, 5, 4)))
    args = dict(stride=(2, 2), padding=1)
    y = F.conv2d(x, w, b, **args)
    assert y.dtype == HALF
    assert_close(y, F.conv2d(*ref[:3], **args, impl="reference"), "float16")
    for got, want in zip(F.conv2d_backward(gy, x, w, b, **args),
                         F.conv2d_backward(ref[3], *ref[:3], **args, impl="reference")):
        assert got.dtype == HALF
        assert_close(got, want, "float16")


def test_max_pool_linear_and_lstm_in_float16():
    rng = np.random.default_rng(1)
    (x,), (x64,) = _half(rng.standard_normal((2, 3, 8, 8)))
    assert_close(F.max_pool2d(x, 2), F.max_pool2d(x64, 2, impl="reference"), "float16")
    (a, w), (a64, w64) = _half(rng.standard_normal((5, 7)), rng.standard_normal((3, 7)))
    out = F.linear(a, w)
    assert out.dtype == HALF
    assert_close(out, F.linear(a64, w64, impl="reference"), "float16")
    seq, seq64 = _half(rng.standard_normal((4, 2, 3)),
                       *(rng.standard_normal(s) / 3 for s in [(20, 3), (20, 5), (20,), (20,)]))
    got, _ = F.lstm(seq[0], None, seq[1:])
    want, _ = F.lstm(seq64[0], None, seq64[1:], impl="reference")
    assert got.dtype == HALF
    assert_close(got, want, "float16")


def test_batch_norm_updates_float16_running_stats_in_place():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 5)).astype(HALF)
    mean, var = np.zeros(3, HALF), np.ones(3, HALF)
    mean64, var64 = np.zeros(3), np.ones(3)
    F.batch_norm(x, mean, var, training=True, momentum=0.5)
    F.batch_norm(x.astype(np.float64), mean64, var64, training=True, momentum=0.5,
                 impl="reference")
    assert mean.dtype == HALF and not np.all(mean == 0)
    assert_close(mean, mean64, "float16")
    assert_close(var, var64, "float16")
