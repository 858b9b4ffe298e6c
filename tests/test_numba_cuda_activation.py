"""The numba_cuda activation kernels under the CUDA simulator (CI has no GPU): each impl's
function is called directly on NumPy arrays and compared with the reference impl in float64;
the dropout mask must equal the CPU rule bit for bit.

The simulator runs every CUDA thread as a Python thread, so shapes are tiny. On a GPU
machine these impls are tested on CuPy arrays by tests/test_activation.py instead."""
import numpy as np
import pytest

from gpuconv import kernels
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import assert_close, rng_for

pytestmark = pytest.mark.skipif(
    not simulator_enabled(),
    reason="runs under NUMBA_ENABLE_CUDASIM=1 (set by conftest without a GPU)")

DTYPES = ("float64", "float32")
NAME = "numba_cuda"
POINTWISE = ("relu", "sigmoid", "tanh")
SAVES_OUTPUT = ("sigmoid", "tanh")
SHAPES = [(), (7,), (2, 3, 5)]
# (shape, dim): the first, a middle and the last axis, a size-1 axis.
ALONG_DIM = [((6,), 0), ((3, 4, 5), 0), ((3, 4, 5), 1), ((2, 1, 3), 1), ((3, 4, 5), 2)]


def _impl(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


def _inputs(dtype, shape, *key):
    """(x, g) in ``dtype`` and their float64 originals."""
    rng = rng_for(*key, shape)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    return x.astype(dtype), g.astype(dtype), x, g


def _check(out, ref, dtype, what):
    assert out.dtype == np.dtype(dtype), f"{what}: dtype {out.dtype}, expected {dtype}"
    assert_close(out, ref, dtype, what)


# --------------------------------------------------------------------------- pointwise

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", POINTWISE)
def test_pointwise_matches_reference(op, shape, dtype):
    x, _, x64, _ = _inputs(dtype, shape, op)
    _check(_impl(op, NAME)(3 * x), _impl(op, "reference")(3 * x64), dtype, op)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", POINTWISE)
def test_pointwise_backward_matches_reference(op, shape, dtype):
    x, g, x64, g64 = _inputs(dtype, shape, op, "backward")
    saved = (None,) if op in SAVES_OUTPUT else ()
    out = _impl(f"{op}_backward", NAME)(g, x, *saved)
    _check(out, _impl(f"{op}_backward", "reference")(g64, x64, *saved), dtype, f"{op}_backward")


@pytest.mark.parametrize("op", SAVES_OUTPUT)
def test_pointwise_backward_from_saved_output_equals_recomputed(op):
    x, g, _, _ = _inputs("float64", (3, 4), op, "saved")
    backward = _impl(f"{op}_backward", NAME)
    np.testing.assert_array_equal(backward(g, x, _impl(op, NAME)(x)), backward(g, x, None))


# --------------------------------------------------------------------------- along a dim

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", ALONG_DIM, ids=str)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_along_dim_matches_reference(op, shape, dim, dtype):
    x, _, x64, _ = _inputs(dtype, shape, op, dim)
    _check(_impl(op, NAME)(3 * x, dim), _impl(op, "reference")(3 * x64, dim), dtype, op)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", ALONG_DIM, ids=str)
@pytest.mark.parametrize("op", ["softmax_backward", "log_softmax_backward"])
def test_along_dim_backward_matches_reference(op, shape, dim, dtype):
    x, g, x64, g64 = _inputs(dtype, shape, op, dim)
    _check(_impl(op, NAME)(g, x, dim, None), _impl(op, "reference")(g64, x64, dim, None),
           dtype, op)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_along_dim_backward_from_saved_output_equals_recomputed(op):
    x, g, _, _ = _inputs("float64", (3, 4), op, "saved")
    backward = _impl(f"{op}_backward", NAME)
    np.testing.assert_array_equal(backward(g, x, 1, _impl(op, NAME)(x, 1)),
                                  backward(g, x, 1, None))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_along_dim_is_stable_for_large_inputs(op):
    x = 1e4 * rng_for(op, "large").standard_normal((3, 5))
    y = _impl(op, NAME)(x, 1)
    assert np.all(np.isfinite(y))
    _check(y, _impl(op, "reference")(x, 1), "float64", op)


# --------------------------------------------------------------------------- dropout

# Sizes around multiples of the 4 words of a Philox block.
DROPOUT_SIZES = [1, 3, 4, 5, 11, 33]
SEEDS = [0, 7, 12345, 2 ** 64 - 1]


@pytest.mark.parametrize("offset", [0, 3, 2 ** 64 - 1])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", DROPOUT_SIZES)
def test_dropout_mask_equals_the_cpu_rule_bit_for_bit(size, seed, p, offset):
    kept = _impl("dropout", NAME)(np.ones(size), p, seed, offset, None) != 0
    key = seed + 2 ** 64 * offset
    expected = np.random.Generator(np.random.Philox(key=key)).random(size) >= p
    np.testing.assert_array_equal(kept, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, p", [((2, 3, 5), 0.3), ((7,), 0.5), ((), 0.5)], ids=str)
def test_dropout_equals_the_numpy_impl(shape, p, dtype):
    x, g, _, _ = _inputs(dtype, shape, "dropout")
    for op, a in (("dropout", x), ("dropout_backward", g)):
        np.testing.assert_array_equal(_impl(op, NAME)(a, p, 21, 2, None),
                                      _impl(op, "numpy")(a, p, 21, 2, None))


def test_dropout_p1_multiplies_by_a_zero_mask_as_torch():
    with np.errstate(invalid="ignore"):
        out = _impl("dropout", NAME)(np.array([np.inf, 1e300]), 1.0, 3, 0, None)
    np.testing.assert_array_equal(out, np.array([np.nan, 0.0]))


def test_mul_hi_lo_gives_the_128_bit_product():
    from gpuconv.kernels.numba_cuda._activation_kernels import _mul_hi_lo

    top = 2 ** 64 - 1
    values = [0, 1, 2 ** 32 - 1, 2 ** 32, 0xD2E7470EE14C6C93, top]
    for a in values:
        for b in values:
            hi, lo = _mul_hi_lo(np.uint64(a), np.uint64(b))
            assert (int(hi), int(lo)) == divmod(a * b, 2 ** 64), (a, b)


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("op, args", [("sigmoid", ()), ("log_softmax", (1,)),
                                      ("dropout", (0.5, 4, 1, None))], ids=str)
def test_negative_strided_input_gives_the_same_result(op, args):
    view = rng_for(op, "strided").standard_normal((4, 6))[::-1, ::-2]
    np.testing.assert_array_equal(_impl(op, NAME)(view, *args),
                                  _impl(op, NAME)(np.ascontiguousarray(view), *args))
