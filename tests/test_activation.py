"""Activations: every impl against the reference, gradients against finite differences,
the dropout mask rule and its statistics, stability, and argument validation."""
from __future__ import annotations

import numpy as np
import pytest
from support import (
    assert_close, check_against_reference, check_grads, impl_params, on_device_of, rng_for,
    with_impls,
)

import gpuconv.functional as F
from gpuconv import backend

DTYPES = ("float64", "float32")

# (op, extra positional arguments): the pointwise ops with their awkward arguments
# (slope 0, negative, above 1; alpha negative).
POINTWISE = [
    ("relu", ()), ("leaky_relu", (0.01,)), ("leaky_relu", (0.0,)), ("leaky_relu", (-0.3,)),
    ("leaky_relu", (1.7,)), ("elu", (1.0,)), ("elu", (-0.7,)), ("sigmoid", ()), ("tanh", ()),
]
POINTWISE_IDS = [f"{op}{args}" for op, args in POINTWISE]
SHAPES = [(), (7,), (1, 5), (3, 4, 5), (2, 3, 1, 5)]

# (op, shape, dim): 1-D to 4-D, the first, the last and a middle axis, a size-1 axis.
ALONG_DIM = [(op, shape, dim) for op in ("softmax", "log_softmax") for shape, dim in [
    ((7,), 0), ((7,), -1), ((1, 5), 1), ((3, 4, 5), 0), ((3, 4, 5), 1), ((4, 1, 3), 1),
    ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 2),
]]
ALONG_DIM_IDS = [f"{op}-{shape}-dim{dim}" for op, shape, dim in ALONG_DIM]

# (shape, p): dropout cases.
DROPOUT = [((), 0.5), ((7,), 0.5), ((1, 5), 0.0), ((3, 4, 5), 0.3), ((2, 3, 4, 5), 0.9), ((3, 4), 1.0)]


def normal(rng, shape, dtype, scale=3.0):
    """Forward tests use scale 3 to reach the tails. Backward tests use scale 1: where
    |tanh| or sigmoid is near 1 the float32 derivative (computed from the rounded result,
    as torch does) loses digits to cancellation, which a 1-element case cannot average out."""
    return (scale * rng.standard_normal(shape)).astype(dtype)


def away_from_zero(rng, shape):
    """float64 values with |x| >= 0.1, so finite differences never straddle a kink."""
    return np.sign(rng.standard_normal(shape)) * (0.1 + 2 * rng.random(shape))


def forward(op, x, args, impl):
    return getattr(F, op)(x, *args, impl=impl)


def backward(op, g, x, args, impl, **saved):
    return getattr(F, f"{op}_backward")(g, x, *args, impl=impl, **saved)


# --------------------------------------------------------------------------- vs reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case, impl", with_impls(POINTWISE, POINTWISE_IDS, lambda c: c[0]))
def test_pointwise_matches_reference(case, impl, shape, dtype):
    op, args = case
    x = normal(rng_for(op, shape), shape, dtype)
    out = forward(op, on_device_of(impl, op, x), args, impl)
    ref = forward(op, x.astype(np.float64), args, "reference")
    check_against_reference(out, ref, dtype, op)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case, impl",
                         with_impls(POINTWISE, POINTWISE_IDS, lambda c: f"{c[0]}_backward"))
def test_pointwise_backward_matches_reference(case, impl, shape, dtype):
    op, args = case
    rng = rng_for(op, shape, "backward")
    x, g = normal(rng, shape, dtype, 1.0), normal(rng, shape, dtype, 1.0)
    out = backward(op, *on_device_of(impl, f"{op}_backward", g, x), args, impl)
    ref = backward(op, g.astype(np.float64), x.astype(np.float64), args, "reference")
    check_against_reference(out, ref, dtype, f"{op}_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(ALONG_DIM, ALONG_DIM_IDS, lambda c: c[0]))
def test_along_dim_matches_reference(case, impl, dtype):
    op, shape, dim = case
    x = normal(rng_for(op, shape, dim), shape, dtype)
    out = forward(op, on_device_of(impl, op, x), (dim,), impl)
    ref = forward(op, x.astype(np.float64), (dim,), "reference")
    check_against_reference(out, ref, dtype, op)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl",
                         with_impls(ALONG_DIM, ALONG_DIM_IDS, lambda c: f"{c[0]}_backward"))
def test_along_dim_backward_matches_reference(case, impl, dtype):
    op, shape, dim = case
    rng = rng_for(op, shape, dim, "backward")
    x, g = normal(rng, shape, dtype, 1.0), normal(rng, shape, dtype, 1.0)
    out = backward(op, *on_device_of(impl, f"{op}_backward", g, x), (dim,), impl)
    ref = backward(op, g.astype(np.float64), x.astype(np.float64), (dim,), "reference")
    check_against_reference(out, ref, dtype, f"{op}_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(DROPOUT, [str(c) for c in DROPOUT],
                                                  lambda c: "dropout"))
def test_dropout_matches_reference(case, impl, dtype):
    shape, p = case
    x = normal(rng_for("dropout", shape), shape, dtype)
    out = F.dropout(on_device_of(impl, "dropout", x), p, True, 11, impl=impl)
    ref = F.dropout(x.astype(np.float64), p, True, 11, impl="reference")
    check_against_reference(out, ref, dtype, "dropout")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(DROPOUT, [str(c) for c in DROPOUT],
                                                  lambda c: "dropout_backward"))
def test_dropout_backward_matches_reference(case, impl, dtype):
    shape, p = case
    rng = rng_for("dropout_backward", shape)
    x, g = normal(rng, shape, dtype), normal(rng, shape, dtype)
    out = F.dropout_backward(*on_device_of(impl, "dropout_backward", g, x), p, True, 11,
                             impl=impl)
    ref = F.dropout_backward(g.astype(np.float64), x.astype(np.float64), p, True, 11,
                             impl="reference")
    check_against_reference(out, ref, dtype, "dropout_backward")


# --------------------------------------------------------------------------- gradients

def assert_grad_matches_finite_differences(op, args, impl, x, **forward_kwargs):
    """The impl's backward against central differences of the reference forward."""
    g = rng_for(op, args, "grad_output").standard_normal(x.shape)

    def loss():
        return float(np.sum(getattr(F, op)(x, *args, impl="reference", **forward_kwargs) * g))

    analytic = getattr(F, f"{op}_backward")(*on_device_of(impl, f"{op}_backward", g, x), *args,
                                            impl=impl, **forward_kwargs)
    check_grads(loss, {"input": backend.to_numpy(analytic)}, {"input": x})


@pytest.mark.parametrize("case, impl", with_impls(POINTWISE, POINTWISE_IDS,
                                                  lambda c: f"{c[0]}_backward",
                                                  include_reference=True))
def test_pointwise_backward_matches_finite_differences(case, impl):
    op, args = case
    x = away_from_zero(rng_for(op, args, "fd"), (3, 4))
    assert_grad_matches_finite_differences(op, args, impl, x)


@pytest.mark.parametrize("case, impl", with_impls(ALONG_DIM[::3], ALONG_DIM_IDS[::3],
                                                  lambda c: f"{c[0]}_backward",
                                                  include_reference=True))
def test_along_dim_backward_matches_finite_differences(case, impl):
    op, shape, dim = case
    x = rng_for(op, shape, dim, "fd").standard_normal(shape)
    assert_grad_matches_finite_differences(op, (dim,), impl, x)


@pytest.mark.parametrize("impl", impl_params("dropout_backward", include_reference=True))
def test_dropout_backward_matches_finite_differences(impl):
    x = rng_for("dropout", "fd").standard_normal((4, 5))
    assert_grad_matches_finite_differences("dropout", (0.4, True, 3), impl, x)


# The ops whose backward also accepts the saved forward result as output=.
SAVED = [("sigmoid", ()), ("tanh", ()), ("softmax", (1,)), ("log_softmax", (1,))]


@pytest.mark.parametrize("case, impl", with_impls(SAVED, [c[0] for c in SAVED],
                                                  lambda c: f"{c[0]}_backward",
                                                  include_reference=True))
def test_backward_from_saved_output_equals_recomputed(case, impl):
    op, args = case
    rng = rng_for(op, "saved")
    x, g = on_device_of(impl, f"{op}_backward", rng.standard_normal((3, 6)),
                        rng.standard_normal((3, 6)))
    saved = forward(op, x, args, None)
    assert_close(backward(op, g, x, args, impl, output=saved),
                 backward(op, g, x, args, impl), "float64")


# --------------------------------------------------------------------------- numerics

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("sigmoid", include_reference=True))
def test_sigmoid_is_finite_and_exact_in_the_tails(impl, dtype):
    x = np.array([-1e4, -60.0, -20.0, 0.0, 20.0, 60.0, 1e4], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = backend.to_numpy(F.sigmoid(on_device_of(impl, "sigmoid", x), impl=impl))
    exact = np.array([0.0, np.exp(-60.0), np.exp(-20.0) / (1 + np.exp(-20.0)), 0.5,
                      1 / (1 + np.exp(-20.0)), 1.0, 1.0])
    np.testing.assert_allclose(y, exact, rtol=4 * np.finfo(dtype).eps, atol=0)


SOFTMAXES = ["softmax", "log_softmax"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, impl", with_impls(SOFTMAXES, SOFTMAXES, str,
                                                include_reference=True))
def test_along_dim_is_stable_for_large_inputs(op, impl, dtype):
    x = (1e4 * rng_for(op, "large").standard_normal((4, 9))).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = backend.to_numpy(forward(op, on_device_of(impl, op, x), (1,), impl))
    assert np.all(np.isfinite(y))
    probs = y if op == "softmax" else np.exp(y)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=10 * np.finfo(dtype).eps)


@pytest.mark.parametrize("op, impl", with_impls(SOFTMAXES, SOFTMAXES, str,
                                                include_reference=True))
def test_along_dim_handles_an_empty_batch(op, impl):
    x = on_device_of(impl, op, np.empty((0, 4)))
    assert forward(op, x, (1,), impl).shape == (0, 4)


STRIDED = POINTWISE[:2] + [("elu", (0.5,)), ("sigmoid", ()), ("softmax", (0,)),
                           ("log_softmax", (2,)), ("dropout", (0.5,))]


# NumPy views: strides are a property of CPU memory here.
@pytest.mark.parametrize("case, impl", with_impls(STRIDED, [c[0] for c in STRIDED],
                                                  lambda c: c[0], include_reference=True,
                                                  devices=("cpu",)))
def test_negative_strided_input_gives_the_same_result(case, impl):
    op, args = case
    view = rng_for(op, "strided").standard_normal((5, 8, 6))[::-1, ::2, ::-1].transpose(2, 0, 1)
    g = rng_for(op, "strided-g").standard_normal((4, 5, 12))[:, ::-1, ::-2].transpose(2, 1, 0)
    dense_view, dense_g = np.ascontiguousarray(view), np.ascontiguousarray(g)
    np.testing.assert_array_equal(forward(op, view, args, impl),
                                  forward(op, dense_view, args, impl))
    np.testing.assert_array_equal(backward(op, g, view, args, impl),
                                  backward(op, dense_g, dense_view, args, impl))


# --------------------------------------------------------------------------- dropout

def dropped(x, p, seed, impl):
    """dropout in training mode, brought back to the CPU."""
    return backend.to_numpy(F.dropout(x, p, True, seed, impl=impl))


# Pure-Python Philox4x64-10 (Salmon et al. 2011, Random123), written from the spec to pin
# down the mask rule that dropout documents and that the GPU impls must reproduce.
_M64 = 2 ** 64 - 1


def philox4x64(counter, key):
    c, k = list(counter), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B97F4A7C15) & _M64, (k[1] + 0xBB67AE8584CAA73B) & _M64]
        p0, p1 = 0xD2E7470EE14C6C93 * c[0], 0xCA5A826395121157 * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k[0], p1 & _M64, (p0 >> 64) ^ c[3] ^ k[1], p0 & _M64]
    return c


@pytest.mark.parametrize("seed", [0, 12345, 2 ** 64 - 1])
@pytest.mark.parametrize("impl", impl_params("dropout", include_reference=True))
def test_dropout_mask_follows_the_documented_philox_rule(impl, seed):
    n, p = 11, 0.5
    words = [w for block in range(n // 4 + 1) for w in philox4x64((block + 1, 0, 0, 0), (seed, 0))]
    expected = np.array([(w >> 11) * 2.0 ** -53 >= p for w in words[:n]])
    kept = dropped(on_device_of(impl, "dropout", np.ones(n)), p, seed, impl) != 0
    np.testing.assert_array_equal(kept, expected)


@pytest.mark.parametrize("offset, delta", [(1, None), (2 ** 64 - 1, None), (5, 2 ** 64 - 3)],
                         ids=["offset", "largest-offset", "offset+delta-wraps"])
@pytest.mark.parametrize("impl", impl_params("dropout", include_reference=True))
def test_dropout_offset_is_the_second_word_of_the_philox_key(impl, offset, delta):
    n, p, seed = 11, 0.5, 7
    key1 = (offset + (delta or 0)) % 2 ** 64
    words = [w for block in range(n // 4 + 1) for w in philox4x64((block + 1, 0, 0, 0),
                                                                    (seed, key1))]
    expected = np.array([(w >> 11) * 2.0 ** -53 >= p for w in words[:n]])
    x = on_device_of(impl, "dropout", np.ones(n))
    offset_delta = None if delta is None else on_device_of(impl, "dropout",
                                                           np.array([delta], np.uint64))
    kept = backend.to_numpy(F.dropout(x, p, True, seed, offset=offset,
                                      offset_delta=offset_delta, impl=impl)) != 0
    np.testing.assert_array_equal(kept, expected)
    grad = backend.to_numpy(F.dropout_backward(x, x, p, True, seed, offset=offset,
                                               offset_delta=offset_delta, impl=impl)) != 0
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("impl", impl_params("dropout", include_reference=True))
def test_dropout_same_seed_gives_the_same_mask(impl):
    x = on_device_of(impl, "dropout", rng_for("dropout", "replay").standard_normal((6, 7)))
    np.testing.assert_array_equal(dropped(x, 0.5, 42, impl), dropped(x, 0.5, 42, impl))


@pytest.mark.parametrize("impl", impl_params("dropout", include_reference=True))
def test_dropout_different_seeds_give_different_masks(impl):
    x = on_device_of(impl, "dropout", np.ones(1000))
    assert np.any(dropped(x, 0.5, 1, impl) != dropped(x, 0.5, 2, impl))


@pytest.mark.parametrize("impl", impl_params("dropout"))
def test_dropout_mask_depends_only_on_seed_and_shape(impl):
    x = on_device_of(impl, "dropout", rng_for("dropout", "layout").standard_normal((6, 8)))
    kept64 = dropped(x, 0.5, 9, impl) != 0
    kept32 = dropped(x.astype(np.float32), 0.5, 9, impl) != 0
    reversed_view = backend.array_module(x).ascontiguousarray(x[::-1])[::-1]
    kept_view = dropped(reversed_view, 0.5, 9, impl) != 0
    np.testing.assert_array_equal(kept64, kept32)
    np.testing.assert_array_equal(kept64, kept_view)


# A kept count is Binomial(n, 1 - p); six standard deviations (a chance below 2e-9 of a
# false failure) bounds the statistical tests below.
N_STAT, P_STAT, SIGMAS = 1_000_000, 0.3, 6.0


@pytest.mark.parametrize("impl", impl_params("dropout"))
def test_dropout_keeps_a_fraction_close_to_one_minus_p(impl):
    kept = np.count_nonzero(dropped(on_device_of(impl, "dropout", np.ones(N_STAT, np.float32)),
                                    P_STAT, 5, impl))
    bound = SIGMAS * np.sqrt(P_STAT * (1 - P_STAT) / N_STAT)
    assert abs(kept / N_STAT - (1 - P_STAT)) <= bound


@pytest.mark.parametrize("impl", impl_params("dropout"))
def test_dropout_preserves_the_expected_value(impl):
    x = rng_for("dropout", "mean").uniform(0.5, 1.5, N_STAT)
    y = dropped(on_device_of(impl, "dropout", x), P_STAT, 6, impl)
    # Var(sum y) = sum x^2 * p / (1 - p) for inverted dropout.
    bound = SIGMAS * np.sqrt(np.sum(x * x) * P_STAT / (1 - P_STAT))
    assert abs(np.sum(y) - np.sum(x)) <= bound


@pytest.mark.parametrize("impl", impl_params("dropout"))
def test_dropout_scales_kept_elements_by_one_over_one_minus_p(impl):
    x = rng_for("dropout", "scale").standard_normal(500)
    y = dropped(on_device_of(impl, "dropout", x), 0.2, 8, impl)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.8, rtol=1e-15)


@pytest.mark.parametrize("impl", impl_params("dropout", include_reference=True))
def test_dropout_p0_is_the_identity(impl):
    x = rng_for("dropout", "p0").standard_normal((3, 5))
    np.testing.assert_array_equal(dropped(on_device_of(impl, "dropout", x), 0.0, 1, impl), x)


@pytest.mark.parametrize("impl", impl_params("dropout", include_reference=True))
def test_dropout_p1_multiplies_by_a_zero_mask_as_torch(impl):
    # torch computes x * mask: finite inputs give 0, a dropped inf gives NaN.
    x = on_device_of(impl, "dropout", np.array([1.0, -2.0, np.inf, 1e300]))
    with np.errstate(invalid="ignore"):
        y = dropped(x, 1.0, 1, impl)
    np.testing.assert_array_equal(y, np.array([0.0, 0.0, np.nan, 0.0]))


def test_dropout_eval_mode_returns_its_input():
    x, g = np.ones((2, 3)), np.full((2, 3), 2.0)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout_backward(g, x, 0.5, training=False) is g


# --------------------------------------------------------------------------- torch

def torch_grad(fn, x, g):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt)
    yt.backward(torch.tensor(g))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("op, dim", [("softmax", 1), ("softmax", 0), ("log_softmax", -1),
                                     ("log_softmax", 1)])
def test_along_dim_matches_torch(op, dim):
    torch = pytest.importorskip("torch")
    rng = rng_for(op, dim, "torch")
    x, g = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    y_ref, gx_ref = torch_grad(lambda t: getattr(torch.nn.functional, op)(t, dim=dim), x, g)
    assert_close(forward(op, x, (dim,), None), y_ref, "float64")
    assert_close(backward(op, g, x, (dim,), None), gx_ref, "float64")


@pytest.mark.parametrize("alpha", [1.0, 0.5, -0.7])
def test_elu_matches_torch(alpha):
    torch = pytest.importorskip("torch")
    rng = rng_for("elu", alpha, "torch")
    x, g = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    y_ref, gx_ref = torch_grad(lambda t: torch.nn.functional.elu(t, alpha=alpha), x, g)
    assert_close(F.elu(x, alpha), y_ref, "float64")
    assert_close(F.elu_backward(g, x, alpha), gx_ref, "float64")


# --------------------------------------------------------------------------- validation

X = np.zeros((2, 3))


def test_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="relu: input must have a floating-point dtype"):
        F.relu(np.zeros((2, 3), dtype=np.int32))


def test_a_float8_input_is_a_type_error():
    """ml_dtypes' float8 dtypes have NumPy's floating kind letter, but no op computes in
    them: the check says so rather than letting a kernel fail inside."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(TypeError, match="relu: input must have a floating-point dtype"):
        F.relu(np.zeros((2, 3), dtype=ml_dtypes.float8_e5m2))


def test_list_input_is_a_type_error():
    with pytest.raises(TypeError, match="tanh: input must be an array"):
        F.tanh([1.0, 2.0])


def test_grad_output_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match=r"sigmoid_backward: grad_output must have shape \(2, 3\)"):
        F.sigmoid_backward(np.zeros((3, 2)), X)


def test_grad_output_dtype_mismatch_is_a_type_error():
    with pytest.raises(TypeError, match="relu_backward: grad_output has dtype float32"):
        F.relu_backward(X.astype(np.float32), X)


def test_saved_output_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match=r"tanh_backward: output must have shape \(2, 3\)"):
        F.tanh_backward(X, X, output=np.zeros(6))


@pytest.mark.parametrize("op", ["softmax", "log_softmax_backward"])
def test_dim_out_of_range_is_a_value_error(op):
    args = (X,) if op == "softmax" else (X, X)
    with pytest.raises(ValueError, match=rf"{op}: dim 2 is out of range .* \(2, 3\)"):
        getattr(F, op)(*args, 2)
    with pytest.raises(ValueError, match=rf"{op}: dim -3 is out of range"):
        getattr(F, op)(*args, -3)


def test_softmax_over_an_empty_dim_is_empty_as_in_torch():
    assert F.softmax(np.empty((3, 0)), -1).shape == (3, 0)


def test_non_integer_dim_is_a_type_error():
    with pytest.raises(TypeError, match="softmax: dim must be an int"):
        F.softmax(X, 1.0)


def test_softmax_of_a_0d_input_is_a_value_error():
    with pytest.raises(ValueError, match="log_softmax: input must have at least 1 dimension"):
        F.log_softmax(np.float64(1.0)[()], 0)


@pytest.mark.parametrize("slope", [np.nan, np.inf])
def test_non_finite_negative_slope_is_a_value_error(slope):
    with pytest.raises(ValueError, match="leaky_relu: negative_slope must be finite"):
        F.leaky_relu(X, slope)


def test_non_finite_alpha_is_a_value_error():
    with pytest.raises(ValueError, match="elu_backward: alpha must be finite"):
        F.elu_backward(X, X, -np.inf)


@pytest.mark.parametrize("p, match", [(-0.1, "must be >= 0"), (1.5, "must be <= 1"),
                                      (np.nan, "must be finite")])
def test_dropout_p_outside_0_1_is_a_value_error(p, match):
    with pytest.raises(ValueError, match=f"dropout: p {match}"):
        F.dropout(X, p)


def test_dropout_training_must_be_a_bool():
    with pytest.raises(TypeError, match="dropout_backward: training must be a bool"):
        F.dropout_backward(X, X, 0.5, "yes")


@pytest.mark.parametrize("seed, error, match", [
    (-1, ValueError, r"seed must be in \[0, 2\*\*64\)"), (2 ** 64, ValueError, "seed must be in"),
    (1.5, TypeError, "seed must be an int"), (True, TypeError, "seed must be an int")])
def test_dropout_seed_outside_uint64_is_rejected(seed, error, match):
    with pytest.raises(error, match=f"dropout: {match}"):
        F.dropout(X, 0.5, True, seed)


def test_dropout_offset_delta_must_be_one_uint64_on_the_input_device():
    with pytest.raises(TypeError, match=r"offset_delta must be a uint64 array of shape \(1,\)"):
        F.dropout(X, 0.5, True, 1, offset_delta=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"dropout: offset must be in \[0, 2\*\*64\)"):
        F.dropout(X, 0.5, True, 1, offset=-1)


# --------------------------------------------------------------------------- bias_act

# (activation, param, input shape): each activation once, over a conv's (N, C, H, W), a
# linear layer's (N, F), a 1-d conv's (N, C, L), odd sizes and batch 1.
BIAS_ACT = [("identity", 0.0, (2, 3, 4, 5)), ("relu", 0.0, (4, 7)), ("leaky_relu", 0.2, (1, 3, 5)),
            ("elu", 0.7, (2, 5, 3, 3)), ("sigmoid", 0.0, (3, 6)), ("tanh", 0.0, (1, 4, 2, 3))]
BIAS_ACT_IDS = [f"{a}-{'x'.join(map(str, s))}" for a, _, s in BIAS_ACT]


def bias_act_inputs(case, dtype="float64"):
    """(x, bias, grad_output) with |x + bias| >= 0.1, so that no case sits on a kink."""
    activation, param, shape = case
    rng = rng_for("bias_act", case)
    bias = rng.standard_normal(shape[1])
    x = away_from_zero(rng, shape) - bias.reshape((1, -1) + (1,) * (len(shape) - 2))
    g = rng.standard_normal(shape)
    return x.astype(dtype), bias.astype(dtype), g.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(BIAS_ACT, BIAS_ACT_IDS, "bias_act"))
def test_bias_act_matches_reference(case, impl, dtype):
    activation, param, _ = case
    x, b, _ = bias_act_inputs(case, dtype)
    out = F.bias_act(*on_device_of(impl, "bias_act", x, b), activation, param, impl=impl)
    ref = F.bias_act(x.astype(np.float64), b.astype(np.float64), activation, param,
                     impl="reference")
    check_against_reference(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(BIAS_ACT, BIAS_ACT_IDS, "bias_act_backward"))
def test_bias_act_backward_matches_reference(case, impl, dtype):
    activation, param, _ = case
    x, b, g = bias_act_inputs(case, dtype)
    grads = F.bias_act_backward(*on_device_of(impl, "bias_act_backward", g, x, b), activation,
                                param, impl=impl)
    refs = F.bias_act_backward(*(a.astype(np.float64) for a in (g, x, b)), activation, param,
                               impl="reference")
    for name, got, want in zip(("grad_input", "grad_bias"), grads, refs):
        check_against_reference(got, want, dtype, name)


@pytest.mark.parametrize("case, impl", with_impls(BIAS_ACT, BIAS_ACT_IDS, "bias_act_backward",
                                                  include_reference=True))
def test_bias_act_backward_matches_finite_differences(case, impl):
    activation, param, _ = case
    x, b, g = bias_act_inputs(case)

    def loss():
        return float(np.sum(F.bias_act(x, b, activation, param, impl="reference") * g))

    grad_x, grad_b = F.bias_act_backward(*on_device_of(impl, "bias_act_backward", g, x, b),
                                         activation, param, impl=impl)
    check_grads(loss, {"input": backend.to_numpy(grad_x), "bias": backend.to_numpy(grad_b)},
                {"input": x, "bias": b})


@pytest.mark.parametrize("case, impl", with_impls(BIAS_ACT[-2:], BIAS_ACT_IDS[-2:],
                                                  "bias_act_backward", include_reference=True))
def test_bias_act_backward_from_saved_output_equals_recomputed(case, impl):
    activation, param, _ = case
    x, b, g = on_device_of(impl, "bias_act_backward", *bias_act_inputs(case))
    y = F.bias_act(x, b, activation, param)
    saved = F.bias_act_backward(g, x, b, activation, param, output=y, impl=impl)
    recomputed = F.bias_act_backward(g, x, b, activation, param, impl=impl)
    for got, want in zip(saved, recomputed):
        assert_close(got, want, "float64")


@pytest.mark.parametrize("call, message", [
    (lambda x, b: F.bias_act(x, b[:2]), r"bias must have shape \(C,\) .* bias \(2,\) and input \(2, 3, 4\)"),
    (lambda x, b: F.bias_act(x[0, 0], b), r"bias must have shape \(C,\) .* input \(4,\)"),
    (lambda x, b: F.bias_act(x, b, "gelu"), "activation must be one of identity, relu"),
    (lambda x, b: F.bias_act(x, b, "elu", float("nan")), "param"),
    (lambda x, b: F.bias_act_backward(x[:1], x, b), r"grad_output must have shape \(2, 3, 4\)"),
], ids=["bias-length", "input-1d", "unknown-activation", "nan-param", "grad-output-shape"])
def test_bias_act_rejects_bad_arguments(call, message):
    x, b = np.zeros((2, 3, 4)), np.zeros(3)
    with pytest.raises(ValueError, match=message):
        call(x, b)


def test_bias_act_rejects_a_bias_of_another_dtype():
    with pytest.raises(TypeError, match="bias_act: bias has dtype float32"):
        F.bias_act(np.zeros((2, 3)), np.zeros(3, np.float32))
