"""linear and embedding: every impl against the reference, gradients against finite
differences, scatter-add semantics, strided inputs, torch, and argument validation."""
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

# (input shape, out_features, with bias): 1-D to 4-D inputs, batch 1, odd sizes, a single
# feature, an empty batch and zero input features (the output is then the bias).
LINEAR = [((5,), 3, True), ((1, 4), 2, True), ((3, 7), 5, False), ((2, 3, 6), 4, True),
          ((2, 1, 3, 5), 3, False), ((4, 1), 1, True), ((0, 3), 2, True), ((3, 0), 2, True)]
LINEAR_IDS = [f"{shape}-out{o}-{'bias' if b else 'nobias'}" for shape, o, b in LINEAR]

# (indices shape, num_embeddings, embedding_dim, padding_idx, index dtype): repeated
# indices (more positions than rows), a single row, a 0-d index, negative padding_idx.
EMBEDDING = [((5,), 7, 3, None, "int64"), ((2, 3), 4, 5, 0, "int64"),
             ((1, 1), 1, 2, None, "int32"), ((2, 3, 4), 10, 1, -1, "uint8"),
             ((), 5, 4, None, "int64"), ((3, 4), 6, 3, 2, "int16")]
EMBEDDING_IDS = [f"{shape}-{n}x{d}-pad{pad}-{dt}" for shape, n, d, pad, dt in EMBEDDING]


def linear_arrays(case, dtype, *key):
    """(grad_output, input, weight, bias) in ``dtype`` for a LINEAR case."""
    shape, out_features, with_bias = case
    rng = rng_for(shape, out_features, *key)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out_features, shape[-1])).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype) if with_bias else None
    g = rng.standard_normal(shape[:-1] + (out_features,)).astype(dtype)
    return g, x, w, b


def embedding_arrays(case, dtype, *key):
    """(grad_output, indices, weight) for an EMBEDDING case; indices hit every row."""
    shape, n, dim, _, index_dtype = case
    rng = rng_for(shape, n, dim, *key)
    indices = rng.integers(0, n, shape).astype(index_dtype)
    weight = rng.standard_normal((n, dim)).astype(dtype)
    g = rng.standard_normal(tuple(shape) + (dim,)).astype(dtype)
    return g, indices, weight


def as64(*arrays):
    return tuple(None if a is None else a.astype(np.float64) for a in arrays)


# --------------------------------------------------------------------------- vs reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(LINEAR, LINEAR_IDS, "linear"))
def test_linear_matches_reference(case, impl, dtype):
    _, x, w, b = linear_arrays(case, dtype)
    out = F.linear(*on_device_of(impl, "linear", x, w, b), impl=impl)
    ref = F.linear(*as64(x, w, b), impl="reference")
    check_against_reference(out, ref, dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(LINEAR, LINEAR_IDS, "linear_backward"))
def test_linear_backward_matches_reference(case, impl, dtype):
    arrays = linear_arrays(case, dtype, "backward")
    outs = F.linear_backward(*on_device_of(impl, "linear_backward", *arrays), impl=impl)
    refs = F.linear_backward(*as64(*arrays), impl="reference")
    for name, out, ref in zip(("grad_input", "grad_weight", "grad_bias"), outs, refs):
        check_against_reference(out, ref, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", with_impls(EMBEDDING, EMBEDDING_IDS, "embedding"))
def test_embedding_matches_reference(case, impl, dtype):
    _, indices, weight = embedding_arrays(case, dtype)
    out = F.embedding(*on_device_of(impl, "embedding", indices, weight), case[3], impl=impl)
    ref = F.embedding(indices, weight.astype(np.float64), case[3], impl="reference")
    check_against_reference(out, ref, dtype, "embedding")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl",
                         with_impls(EMBEDDING, EMBEDDING_IDS, "embedding_backward"))
def test_embedding_backward_matches_reference(case, impl, dtype):
    g, indices, weight = embedding_arrays(case, dtype, "backward")
    out = F.embedding_backward(*on_device_of(impl, "embedding_backward", g, indices, weight),
                               case[3], impl=impl)
    ref = F.embedding_backward(g.astype(np.float64), indices, weight.astype(np.float64),
                               case[3], impl="reference")
    check_against_reference(out, ref, dtype, "embedding_backward")


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("case, impl",
                         with_impls(LINEAR[:6], LINEAR_IDS[:6], "linear_backward",
                                    include_reference=True))
def test_linear_backward_matches_finite_differences(case, impl):
    g, x, w, b = linear_arrays(case, "float64", "fd")
    inputs = {"input": x, "weight": w} | ({} if b is None else {"bias": b})

    def loss():
        return float(np.sum(F.linear(x, w, b, impl="reference") * g))

    grads = F.linear_backward(*on_device_of(impl, "linear_backward", g, x, w, b), impl=impl)
    analytic = {name: backend.to_numpy(grad) for name, grad in zip(inputs, grads)}
    check_grads(loss, analytic, inputs)


@pytest.mark.parametrize("case, impl",
                         with_impls(EMBEDDING, EMBEDDING_IDS, "embedding_backward",
                                    include_reference=True))
def test_embedding_backward_matches_finite_differences(case, impl):
    # Without padding_idx: its zero row is a definition, not calculus (tested below).
    g, indices, weight = embedding_arrays(case, "float64", "fd")

    def loss():
        return float(np.sum(F.embedding(indices, weight, impl="reference") * g))

    analytic = F.embedding_backward(*on_device_of(impl, "embedding_backward", g, indices, weight),
                                    impl=impl)
    check_grads(loss, {"weight": backend.to_numpy(analytic)}, {"weight": weight})


@pytest.mark.parametrize("impl", impl_params("embedding_backward", include_reference=True))
def test_embedding_backward_sums_repeated_indices(impl):
    indices = np.array([[2, 0, 2], [2, 3, 0]])
    g = np.arange(1.0, 13.0).reshape(2, 3, 2)
    arrays = on_device_of(impl, "embedding_backward", g, indices, np.zeros((5, 2)))
    grad = backend.to_numpy(F.embedding_backward(*arrays, impl=impl))
    expected = np.array([[3 + 11, 4 + 12], [0, 0], [1 + 5 + 7, 2 + 6 + 8], [9, 10], [0, 0]])
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("padding_idx, row", [(3, 3), (-2, 3)])
@pytest.mark.parametrize("impl", impl_params("embedding_backward", include_reference=True))
def test_embedding_padding_row_gets_zero_gradient_but_is_looked_up(impl, padding_idx, row):
    indices = np.array([3, 1, 3])
    weight = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(F.embedding(indices, weight, padding_idx)[0], weight[row])
    arrays = on_device_of(impl, "embedding_backward", np.ones((3, 2)), indices, weight)
    grad = backend.to_numpy(F.embedding_backward(*arrays, padding_idx, impl=impl))
    np.testing.assert_array_equal(grad[row], 0)
    np.testing.assert_array_equal(grad[1], 1)


# --------------------------------------------------------------------------- strided
# NumPy views: strides are a property of CPU memory here.

@pytest.mark.parametrize("impl", impl_params("linear_backward", include_reference=True,
                                             devices=("cpu",)))
def test_linear_on_negative_strided_arrays_matches_contiguous(impl):
    rng = rng_for("linear", "strided")
    x = rng.standard_normal((6, 4, 10))[::-2, :, ::-2]          # (3, 4, 5)
    w = rng.standard_normal((5, 6))[::-1, 1:].T[::-1]           # (5, 5)
    b = rng.standard_normal(10)[::-2]
    g = rng.standard_normal((5, 4, 3)).transpose(2, 1, 0)      # (3, 4, 5)
    dense = [np.ascontiguousarray(a) for a in (g, x, w, b)]
    np.testing.assert_allclose(F.linear(x, w, b, impl=impl), F.linear(*dense[1:], impl=impl),
                               rtol=1e-13)
    for out, ref in zip(F.linear_backward(g, x, w, b, impl=impl),
                        F.linear_backward(*dense, impl=impl)):
        np.testing.assert_allclose(out, ref, rtol=1e-13)


@pytest.mark.parametrize("impl", impl_params("embedding_backward", include_reference=True,
                                             devices=("cpu",)))
def test_embedding_on_negative_strided_arrays_matches_contiguous(impl):
    rng = rng_for("embedding", "strided")
    indices = rng.integers(0, 6, (4, 10))[::-1, ::-3]
    weight = rng.standard_normal((6, 8))[:, ::-2]
    g = rng.standard_normal((4, 4, 8))[:, ::-1, 1::2]
    dense = [np.ascontiguousarray(a) for a in (g, indices, weight)]
    np.testing.assert_array_equal(F.embedding(indices, weight), F.embedding(*dense[1:]))
    np.testing.assert_array_equal(F.embedding_backward(g, indices, weight, impl=impl),
                                  F.embedding_backward(*dense, impl=impl))


# --------------------------------------------------------------------------- torch

def test_linear_matches_torch():
    torch = pytest.importorskip("torch")
    g, x, w, b = linear_arrays(((2, 3, 6), 4, True), "float64", "torch")
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.tensor(g))
    assert_close(F.linear(x, w, b), yt.detach().numpy(), "float64")
    for out, t in zip(F.linear_backward(g, x, w, b), (xt, wt, bt)):
        assert_close(out, t.grad.numpy(), "float64")


@pytest.mark.parametrize("padding_idx", [None, 1, -1])
def test_embedding_matches_torch(padding_idx):
    torch = pytest.importorskip("torch")
    g, indices, weight = embedding_arrays(((3, 5), 4, 3, None, "int64"), "float64", "torch")
    wt = torch.tensor(weight, requires_grad=True)
    yt = torch.nn.functional.embedding(torch.tensor(indices), wt, padding_idx=padding_idx)
    yt.backward(torch.tensor(g))
    assert_close(F.embedding(indices, weight, padding_idx), yt.detach().numpy(), "float64")
    assert_close(F.embedding_backward(g, indices, weight, padding_idx), wt.grad.numpy(), "float64")


# --------------------------------------------------------------------------- validation

X, W, B = np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(4)


def test_linear_0d_input_is_a_value_error():
    with pytest.raises(ValueError, match=r"linear: input must have shape \(\*, in_features\)"):
        F.linear(np.float64(1.0)[()], W)


@pytest.mark.parametrize("weight", [np.zeros(3), np.zeros((1, 4, 3))], ids=["1d", "3d"])
def test_linear_weight_of_wrong_rank_is_a_value_error(weight):
    with pytest.raises(ValueError, match="linear: weight must have 2 dimensions, got shape"):
        F.linear(X, weight)


def test_linear_feature_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match=r"linear: input has 3 features .*\(2, 3\).* "
                                         r"weight of shape \(4, 5\) expects 5"):
        F.linear(X, np.zeros((4, 5)))


def test_linear_bias_shape_is_checked():
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(4,\) .* got \(3,\)"):
        F.linear(X, W, np.zeros(3))


def test_linear_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="linear: input must have a floating-point dtype"):
        F.linear(X.astype(np.int64), W)


def test_linear_dtype_mismatch_is_a_type_error():
    with pytest.raises(TypeError, match="linear: weight has dtype float32 but input has dtype "
                                        "float64"):
        F.linear(X, W.astype(np.float32))


def test_linear_backward_grad_output_shape_is_checked():
    with pytest.raises(ValueError, match=r"linear_backward: grad_output must have shape \(2, 4\)"):
        F.linear_backward(np.zeros((2, 3)), X, W, B)


def test_embedding_float_indices_are_a_type_error():
    with pytest.raises(TypeError, match="embedding: input must have an integer dtype, got float64"):
        F.embedding(np.array([0.0, 1.0]), W)


@pytest.mark.parametrize("indices, bad", [([0, 4], r"\[0, 4\]"), ([-1, 2], r"\[-1, 2\]")])
def test_embedding_out_of_range_index_names_the_range(indices, bad):
    with pytest.raises(ValueError, match=r"embedding: indices must lie in \[0, 4\) for weight "
                                         rf"of shape \(4, 3\), got values in {bad}"):
        F.embedding(np.array(indices), W)


def test_embedding_backward_checks_indices_too():
    with pytest.raises(ValueError, match=r"embedding_backward: indices must lie in \[0, 4\)"):
        F.embedding_backward(np.zeros((1, 3)), np.array([7]), W)


@pytest.mark.parametrize("padding_idx", [4, -5])
def test_embedding_padding_idx_out_of_range_is_a_value_error(padding_idx):
    with pytest.raises(ValueError, match=r"embedding: padding_idx must lie in \[-4, 4\)"):
        F.embedding(np.array([0]), W, padding_idx)


def test_embedding_padding_idx_must_be_an_int():
    with pytest.raises(TypeError, match="embedding: padding_idx must be an int or None"):
        F.embedding(np.array([0]), W, 1.0)


def test_embedding_weight_must_be_2d():
    with pytest.raises(ValueError, match="embedding: weight must have 2 dimensions"):
        F.embedding(np.array([0]), np.zeros(4))


def test_embedding_backward_grad_output_shape_is_checked():
    with pytest.raises(ValueError, match=r"embedding_backward: grad_output must have shape "
                                         r"\(2, 3\)"):
        F.embedding_backward(np.zeros((2, 4)), np.array([0, 1]), W)


def test_embedding_backward_grad_output_dtype_is_checked():
    with pytest.raises(TypeError, match="embedding_backward: grad_output has dtype float32"):
        F.embedding_backward(np.zeros((2, 3), np.float32), np.array([0, 1]), W)
