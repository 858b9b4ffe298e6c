"""Losses: cross_entropy, nll_loss, mse_loss, l1_loss and their backward functions.

Every impl matches the reference (float64 and float32), the reference matches torch, every
backward matches central finite differences, and each bad argument has its own error.
"""
from typing import NamedTuple

import numpy as np
import pytest

import gpuconv.functional as F
from gpuconv import backend
from support import (
    assert_close, check_against_reference, check_grads, impl_params, on_device_of, rel_err,
    rng_for, rounded, with_impls,
)

DTYPES = ("float64", "float32")
CLASS_OPS = ("cross_entropy", "nll_loss")
POINTWISE_OPS = ("mse_loss", "l1_loss")


def op_impl_params(ops, **kwargs):
    """(op, impl) params over every registered impl of each op."""
    return with_impls(ops, ops, str, **kwargs)


# --------------------------------------------------------------------------- class-index losses

class ClassCase(NamedTuple):
    shape: tuple                  # input (N, C, *d)
    ignore_index: int | None      # None: the default -100 and no ignored target
    weighted: bool
    label_smoothing: float        # cross_entropy only
    reduction: str


CLASS_CASES = {
    "2d-mean": ClassCase((5, 7), None, False, 0.0, "mean"),
    "batch1-weighted-sum": ClassCase((1, 3), None, True, 0.0, "sum"),
    "seq-ignored-smoothed-none": ClassCase((3, 4, 5), -100, False, 0.1, "none"),
    "image-ignored-weighted-smoothed-mean": ClassCase((2, 3, 3, 2), -100, True, 0.25, "mean"),
    "real-class-ignored-weighted-sum": ClassCase((6, 4), 2, True, 0.3, "sum"),
    "one-class-smoothed-mean": ClassCase((4, 1), None, False, 0.5, "mean"),
    "volume-weighted-none": ClassCase((2, 3, 1, 2, 3), None, True, 0.0, "none"),
    "full-smoothing-ignored-weighted-mean": ClassCase((6, 5), -100, True, 1.0, "mean"),
}


class ClassProblem(NamedTuple):
    x: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    grad_output: np.ndarray
    scalars: dict                 # ignore_index, reduction (and label_smoothing)


def class_problem(op: str, name: str) -> ClassProblem:
    case = CLASS_CASES[name]
    rng = rng_for(op, name)
    n_classes = case.shape[1]
    x = 2 * rng.standard_normal(case.shape)
    target = rng.integers(0, n_classes, (case.shape[0],) + case.shape[2:])
    scalars = {"ignore_index": -100, "reduction": case.reduction}
    if case.ignore_index is not None:
        target.reshape(-1)[::3] = case.ignore_index
        scalars["ignore_index"] = case.ignore_index
    if op == "cross_entropy":
        scalars["label_smoothing"] = case.label_smoothing
    weight = rng.uniform(0.5, 2.0, n_classes) if case.weighted else None
    loss_shape = target.shape if case.reduction == "none" else ()
    return ClassProblem(x, target, weight, rng.standard_normal(loss_shape), scalars)


def class_forward(op, p: ClassProblem, impl, x=None, target=None):
    x = p.x if x is None else x
    target = p.target if target is None else target
    return getattr(F, op)(x, target, p.weight, **p.scalars, impl=impl)


def class_backward(op, p: ClassProblem, impl, x=None, target=None):
    x = p.x if x is None else x
    target = p.target if target is None else target
    return getattr(F, op + "_backward")(p.grad_output, x, target, p.weight, **p.scalars, impl=impl)


def class_in_dtype(p: ClassProblem, dtype):
    """The problem in ``dtype`` and its float64 twin with the same (rounded) values."""
    (x, x64), (w, w64), (g, g64) = (rounded(a, dtype) for a in (p.x, p.weight, p.grad_output))
    return (p._replace(x=x, weight=w, grad_output=g),
            p._replace(x=x64, weight=w64, grad_output=g64))


def class_on_device(p: ClassProblem, impl, op) -> ClassProblem:
    g, x, target, weight = on_device_of(impl, op, p.grad_output, p.x, p.target, p.weight)
    return p._replace(grad_output=g, x=x, target=target, weight=weight)


@pytest.mark.parametrize("name", CLASS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, impl", op_impl_params(CLASS_OPS))
def test_class_loss_matches_reference(op, impl, dtype, name):
    low, p64 = class_in_dtype(class_problem(op, name), dtype)
    out = class_forward(op, class_on_device(low, impl, op), impl)
    check_against_reference(out, class_forward(op, p64, "reference"), dtype)


@pytest.mark.parametrize("name", CLASS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, impl", op_impl_params(CLASS_OPS))
def test_class_loss_backward_matches_reference(op, impl, dtype, name):
    low, p64 = class_in_dtype(class_problem(op, name), dtype)
    grad = class_backward(op, class_on_device(low, impl, op + "_backward"), impl)
    check_against_reference(grad, class_backward(op, p64, "reference"), dtype)


# Finite differences mutate the NumPy input in place: CPU impls only (GPU impls match the
# reference backward above).
@pytest.mark.parametrize("name", CLASS_CASES)
@pytest.mark.parametrize("op, impl", op_impl_params(CLASS_OPS, include_reference=True,
                                                    devices=("cpu",)))
def test_class_loss_backward_matches_finite_differences(op, impl, name):
    p = class_problem(op, name)
    x = p.x.copy()

    def loss():
        return float(np.sum(class_forward(op, p, impl, x=x) * p.grad_output))

    check_grads(loss, {"input": class_backward(op, p, impl)}, {"input": x})


# NumPy views: strides are a property of CPU memory here.
@pytest.mark.parametrize("op, impl", op_impl_params(CLASS_OPS, devices=("cpu",)))
def test_class_loss_accepts_negatively_strided_inputs(op, impl):
    p = class_problem(op, "image-ignored-weighted-smoothed-mean")
    x = p.x.transpose(0, 1, 3, 2)[::-1, ::-1]
    target = p.target.transpose(0, 2, 1)[::-1]
    expected = class_forward(op, p, "reference", x=np.ascontiguousarray(x),
                             target=np.ascontiguousarray(target))
    assert_close(class_forward(op, p, impl, x=x, target=target), expected, "float64")


@pytest.mark.parametrize("op, impl", op_impl_params(CLASS_OPS, devices=("cpu",)))
def test_class_loss_backward_accepts_negatively_strided_inputs(op, impl):
    p = class_problem(op, "seq-ignored-smoothed-none")
    x = p.x[:, ::-1, ::-2]
    target = p.target[:, ::-2]
    p = p._replace(grad_output=p.grad_output[::-1, ::-2])
    expected = class_backward(op, p, "reference", x=np.ascontiguousarray(x),
                              target=np.ascontiguousarray(target))
    assert_close(class_backward(op, p, impl, x=x, target=target), expected, "float64")


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("op, impl", op_impl_params(CLASS_OPS, include_reference=True))
def test_all_ignored_targets_give_zero_loss_without_mean(op, impl, reduction):
    x, target = on_device_of(impl, op, np.ones((3, 4)), np.full(3, -100))
    out = getattr(F, op)(x, target, reduction=reduction, impl=impl)
    assert np.array_equal(backend.to_numpy(out), np.zeros(3 if reduction == "none" else ()))


@pytest.mark.parametrize("op, impl", op_impl_params(["cross_entropy"]))
def test_cross_entropy_is_stable_for_huge_logits(op, impl):
    x, target = on_device_of(impl, op, np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], np.float32),
                             np.array([1, 2]))
    out = F.cross_entropy(x, target, reduction="none", impl=impl)
    assert np.allclose(backend.to_numpy(out), [1e4, np.log(2)], rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- class losses vs torch

def torch_class_loss(torch, op, p: ClassProblem):
    """torch's loss of ``p`` and the gradient of sum(loss * grad_output) w.r.t. the input."""
    x = torch.tensor(p.x, requires_grad=True)
    weight = None if p.weight is None else torch.tensor(p.weight)
    out = getattr(torch.nn.functional, op)(x, torch.tensor(p.target), weight, **p.scalars)
    out.backward(torch.tensor(p.grad_output))
    return out.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("name", CLASS_CASES)
@pytest.mark.parametrize("op", CLASS_OPS)
def test_reference_class_loss_matches_torch(op, name):
    torch = pytest.importorskip("torch")
    p = class_problem(op, name)
    assert_close(class_forward(op, p, "reference"), torch_class_loss(torch, op, p)[0], "float64")


@pytest.mark.parametrize("name", CLASS_CASES)
@pytest.mark.parametrize("op", CLASS_OPS)
def test_reference_class_loss_backward_matches_torch(op, name):
    torch = pytest.importorskip("torch")
    p = class_problem(op, name)
    assert_close(class_backward(op, p, "reference"), torch_class_loss(torch, op, p)[1], "float64")


# --------------------------------------------------------------------------- pointwise losses

POINTWISE_CASES = {
    "vector-mean": ((7,), "mean"),
    "batch1-sum": ((1, 3, 5), "sum"),
    "image-none": ((2, 3, 4, 5), "none"),
    "scalar-none": ((), "none"),
    "scalar-mean": ((), "mean"),
    "odd-volume-sum": ((3, 1, 2, 3, 1), "sum"),
}


def pointwise_problem(op: str, name: str):
    """(input, target, grad_output, reduction), tie-free so l1's sign is defined."""
    shape, reduction = POINTWISE_CASES[name]
    rng = rng_for(op, name)
    x = rng.standard_normal(shape)
    target = x + rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)
    return x, target, rng.standard_normal(shape if reduction == "none" else ()), reduction


@pytest.mark.parametrize("name", POINTWISE_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, impl", op_impl_params(POINTWISE_OPS))
def test_pointwise_loss_matches_reference(op, impl, dtype, name):
    x, target, _, reduction = pointwise_problem(op, name)
    (x, x64), (t, t64) = rounded(x, dtype), rounded(target, dtype)
    out = getattr(F, op)(*on_device_of(impl, op, x, t), reduction, impl=impl)
    assert out.dtype == np.dtype(dtype) and out.shape == (x.shape if reduction == "none" else ())
    assert_close(out, getattr(F, op)(x64, t64, reduction, impl="reference"), dtype)


@pytest.mark.parametrize("name", POINTWISE_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, impl", op_impl_params(POINTWISE_OPS))
def test_pointwise_loss_backward_matches_reference(op, impl, dtype, name):
    x, target, g, reduction = pointwise_problem(op, name)
    (x, x64), (t, t64), (g, g64) = (rounded(a, dtype) for a in (x, target, g))
    backward = getattr(F, op + "_backward")
    grads = backward(*on_device_of(impl, op + "_backward", g, x, t), reduction, impl=impl)
    expected = backward(g64, x64, t64, reduction, impl="reference")
    for what, grad, ref in zip(("grad_input", "grad_target"), grads, expected):
        check_against_reference(grad, ref, dtype, what)


# Finite differences mutate the NumPy input in place: CPU impls only (GPU impls match the
# reference backward above).
@pytest.mark.parametrize("name", POINTWISE_CASES)
@pytest.mark.parametrize("op, impl", op_impl_params(POINTWISE_OPS, include_reference=True,
                                                    devices=("cpu",)))
def test_pointwise_loss_backward_matches_finite_differences(op, impl, name):
    x, target, g, reduction = pointwise_problem(op, name)
    x, target = np.array(x), np.array(target)   # writable even when 0-d

    def loss():
        return float(np.sum(getattr(F, op)(x, target, reduction, impl=impl) * g))

    grad_x, grad_t = getattr(F, op + "_backward")(g, x, target, reduction, impl=impl)
    check_grads(loss, {"input": grad_x, "target": grad_t}, {"input": x, "target": target})


# NumPy views: strides are a property of CPU memory here.
@pytest.mark.parametrize("op, impl", op_impl_params(POINTWISE_OPS, devices=("cpu",)))
def test_pointwise_loss_accepts_negatively_strided_inputs(op, impl):
    x, target, _, _ = pointwise_problem(op, "image-none")
    x = x.transpose(0, 1, 3, 2)[::-1, :, ::2]
    target = target.transpose(0, 1, 3, 2)[::-1, ::-1, ::2]
    expected = getattr(F, op)(np.ascontiguousarray(x), np.ascontiguousarray(target), "none",
                              impl="reference")
    assert_close(getattr(F, op)(x, target, "none", impl=impl), expected, "float64")


@pytest.mark.parametrize("op, impl", op_impl_params(POINTWISE_OPS, devices=("cpu",)))
def test_pointwise_loss_backward_accepts_negatively_strided_inputs(op, impl):
    x, target, g, _ = pointwise_problem(op, "image-none")
    x, target, g = x[:, ::-1, ::2], target[:, ::-1, ::2], g[::-1, :, 1::2]
    backward = getattr(F, op + "_backward")
    expected = backward(*map(np.ascontiguousarray, (g, x, target)), "none", impl="reference")
    for grad, ref in zip(backward(g, x, target, "none", impl=impl), expected):
        assert_close(grad, ref, "float64")


@pytest.mark.parametrize("impl", impl_params("l1_loss_backward", include_reference=True))
def test_l1_loss_gradient_is_zero_where_input_equals_target(impl):
    arrays = on_device_of(impl, "l1_loss_backward", np.array(1.0), np.array([1.0, 2.0, 3.0]),
                          np.array([1.0, 0.0, 3.0]))
    grad_x, grad_t = map(backend.to_numpy, F.l1_loss_backward(*arrays, "sum", impl=impl))
    assert np.array_equal(grad_x, [0.0, 1.0, 0.0]) and np.array_equal(grad_t, [0.0, -1.0, 0.0])


@pytest.mark.parametrize("name", POINTWISE_CASES)
@pytest.mark.parametrize("op", POINTWISE_OPS)
def test_reference_pointwise_loss_and_gradients_match_torch(op, name):
    torch = pytest.importorskip("torch")
    x, target, g, reduction = pointwise_problem(op, name)
    xt, tt = torch.tensor(x, requires_grad=True), torch.tensor(target, requires_grad=True)
    out = getattr(torch.nn.functional, op)(xt, tt, reduction=reduction)
    out.backward(torch.tensor(g))
    grad_x, grad_t = getattr(F, op + "_backward")(g, x, target, reduction, impl="reference")
    assert rel_err(getattr(F, op)(x, target, reduction, impl="reference"),
                   out.detach().numpy()) <= 1e-12
    assert rel_err(grad_x, xt.grad.numpy()) <= 1e-12
    assert rel_err(grad_t, tt.grad.numpy()) <= 1e-12


# --------------------------------------------------------------------------- validation

X = np.zeros((4, 5))
T = np.array([0, 1, 4, 2])


@pytest.mark.parametrize("bad", [5, -1])
@pytest.mark.parametrize("op", CLASS_OPS)
def test_target_out_of_range_is_value_error_naming_the_range(op, bad):
    with pytest.raises(ValueError, match=rf"target values must lie in \[0, 5\).*found {bad}"):
        getattr(F, op)(X, np.array([0, bad, 1, 2]))


@pytest.mark.parametrize("op", CLASS_OPS)
def test_float_target_is_type_error_saying_probabilities_are_unsupported(op):
    with pytest.raises(TypeError, match="class-probability .* not supported"):
        getattr(F, op)(X, np.full((4, 5), 0.2))


@pytest.mark.parametrize("target_shape", [(3,), (4, 1), ()])
@pytest.mark.parametrize("op", CLASS_OPS)
def test_target_shape_mismatch_is_value_error(op, target_shape):
    with pytest.raises(ValueError, match=r"target must have shape \(4,\) for input of shape"):
        getattr(F, op)(X, np.zeros(target_shape, np.int64))


@pytest.mark.parametrize("op", CLASS_OPS + POINTWISE_OPS)
def test_bad_reduction_is_value_error(op):
    target = T if op in CLASS_OPS else X
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        getattr(F, op)(X, target, reduction="avg")


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_label_smoothing_outside_unit_interval_is_value_error(value):
    with pytest.raises(ValueError, match="label_smoothing must"):
        F.cross_entropy(X, T, label_smoothing=value)


@pytest.mark.parametrize("op", CLASS_OPS)
def test_weight_of_wrong_shape_is_value_error(op):
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\).*got \(4,\)"):
        getattr(F, op)(X, T, np.ones(4))


@pytest.mark.parametrize("op", CLASS_OPS)
def test_weight_of_other_dtype_is_type_error(op):
    with pytest.raises(TypeError, match="weight has dtype float32"):
        getattr(F, op)(X, T, np.ones(5, np.float32))


@pytest.mark.parametrize("op", CLASS_OPS)
def test_mean_over_all_ignored_targets_is_value_error(op):
    with pytest.raises(ValueError, match="all targets are ignored"):
        getattr(F, op)(X, np.full(4, 3), ignore_index=3)


@pytest.mark.parametrize("op", CLASS_OPS)
def test_backward_of_mean_over_all_ignored_targets_is_value_error(op):
    with pytest.raises(ValueError, match="all targets are ignored"):
        getattr(F, op + "_backward")(np.array(1.0), X, np.full(4, -100))


@pytest.mark.parametrize("weight, ignore_index", [
    ([0.0, 0.0, 1.0, 1.0, 0.0], 2),       # class 2 ignored, the rest weigh nothing
    ([0.0, 0.0, 0.0, 1.0, 0.0], -100),    # nothing ignored, and every target weighs 0
])
@pytest.mark.parametrize("op", CLASS_OPS)
def test_mean_with_zero_total_weight_is_value_error(op, weight, ignore_index):
    with pytest.raises(ValueError, match="weights of the non-ignored targets sum to zero"):
        getattr(F, op)(X, np.array([0, 1, 4, 2]), np.array(weight), ignore_index=ignore_index)


@pytest.mark.parametrize("op", CLASS_OPS)
def test_ignored_targets_outside_the_classes_are_not_out_of_range(op):
    """A target equal to ignore_index is skipped wherever it lies; the rest are counted."""
    target = np.array([0, -100, 4, -100])
    got = getattr(F, op)(X + np.arange(5.0), target)
    want = getattr(F, op)(X[[0, 2]] + np.arange(5.0), target[[0, 2]])
    assert_close(np.asarray(got), np.asarray(want), np.float64, op)


@pytest.mark.parametrize("op", CLASS_OPS)
def test_input_without_class_axis_is_value_error(op):
    with pytest.raises(ValueError, match=r"input must have shape \(C,\), \(N, C\)"):
        getattr(F, op)(np.zeros(()), np.array(1))


@pytest.mark.parametrize("op", CLASS_OPS + POINTWISE_OPS)
def test_integer_input_is_type_error(op):
    with pytest.raises(TypeError, match="input must have a floating-point dtype"):
        getattr(F, op)(X.astype(np.int64), T if op in CLASS_OPS else X)


@pytest.mark.parametrize("op", CLASS_OPS)
def test_non_integer_ignore_index_is_type_error(op):
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        getattr(F, op)(X, T, ignore_index=1.0)


@pytest.mark.parametrize("reduction, shape", [("mean", (4,)), ("none", ()), ("none", (5,))])
@pytest.mark.parametrize("op", CLASS_OPS)
def test_class_loss_grad_output_of_wrong_shape_is_value_error(op, reduction, shape):
    with pytest.raises(ValueError, match="grad_output must have shape"):
        getattr(F, op + "_backward")(np.ones(shape), X, T, reduction=reduction)


@pytest.mark.parametrize("op", POINTWISE_OPS)
def test_pointwise_target_of_other_shape_is_value_error(op):
    with pytest.raises(ValueError, match=r"target must have the shape of input \(4, 5\)"):
        getattr(F, op)(X, np.zeros((1, 5)))


@pytest.mark.parametrize("op", POINTWISE_OPS)
def test_pointwise_target_of_other_dtype_is_type_error(op):
    with pytest.raises(TypeError, match="target has dtype float32"):
        getattr(F, op)(X, X.astype(np.float32))


@pytest.mark.parametrize("op", POINTWISE_OPS)
def test_pointwise_mean_of_empty_input_is_nan_as_in_torch(op):
    # The mean of no values; "sum" is 0 (tests/test_empty_and_unbatched.py).
    assert np.isnan(getattr(F, op)(np.zeros((0, 3)), np.zeros((0, 3))))


@pytest.mark.parametrize("op", POINTWISE_OPS)
def test_pointwise_grad_output_of_wrong_shape_is_value_error(op):
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 5\)"):
        getattr(F, op + "_backward")(np.ones(()), X, X, "none")


# --------------------------------------------------------------------------- training statistics

@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(37, 5), (3, 4, 2, 3)], ids=["rows", "spatial"])
def test_classification_stats_add_the_loss_and_numpys_argmax_count_in_place(shape, dtype):
    from gpuconv.kernels.cuda_c.loss import classification_stats

    rng = rng_for("classification_stats", shape, dtype)
    scores = rng.integers(-2, 3, shape).astype(dtype)  # many ties: the first maximum wins
    scores.reshape(shape[0], shape[1], -1)[1, 2, 0] = np.nan  # a NaN is the maximum
    target = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    target.reshape(shape[0], -1)[1, 0] = 2
    want_correct = int(np.sum(np.argmax(scores, axis=1) == target))
    stats = backend.to_device(np.array([1.5, 2.0]), "cuda")  # sums so far
    loss = backend.to_device(np.array(0.25, dtype), "cuda")
    classification_stats(stats, loss, backend.to_device(scores, "cuda"),
                         backend.to_device(target, "cuda"))
    np.testing.assert_array_equal(backend.to_numpy(stats),
                                  [1.5 + 0.25 * shape[0], 2.0 + want_correct])
