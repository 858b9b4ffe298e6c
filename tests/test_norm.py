"""Normalisation: batch_norm, local_response_norm and their backward functions.

Every impl matches the reference (float64 and float32), the reference matches torch
(running-stat updates included), every backward matches central finite differences, and
each bad argument has its own error.
"""
from typing import NamedTuple

import numpy as np
import pytest

import gpuconv.functional as F
from gpuconv import backend
from support import (
    assert_close, check_against_reference, check_grads, impl_params, on_device_of, rel_err,
    rng_for, rounded,
)

DTYPES = ("float64", "float32")
MOMENTUM = 0.3


# --------------------------------------------------------------------------- batch norm

class BNCase(NamedTuple):
    shape: tuple
    training: bool
    weight: bool
    bias: bool
    running: bool       # running stats given (always in eval)


BN_CASES = {
    "fc-train": BNCase((5, 3), True, True, True, True),
    "seq-train-plain": BNCase((2, 4, 7), True, False, False, True),
    "image-train-no-running-stats": BNCase((2, 3, 3, 5), True, True, False, False),
    "batch1-image-train": BNCase((1, 2, 3, 3), True, False, True, True),
    "batch2-seq-train": BNCase((2, 4, 3), True, True, True, True),
    "volume-train": BNCase((2, 3, 1, 2, 3), True, True, True, True),
    "image-eval": BNCase((3, 4, 2, 3), False, True, True, True),
    "batch1-fc-eval": BNCase((1, 5), False, False, False, True),
    "batch1-seq-eval-weight-only": BNCase((1, 3, 4), False, True, False, True),
    "volume-eval": BNCase((2, 2, 2, 3, 2), False, False, True, True),
}
TRAINING_CASES = [n for n, c in BN_CASES.items() if c.training and c.running]


class BNProblem(NamedTuple):
    x: np.ndarray
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    weight: np.ndarray | None
    bias: np.ndarray | None
    grad_output: np.ndarray
    training: bool

    def arrays(self):
        return self.x, self.running_mean, self.running_var, self.weight, self.bias

    def with_arrays(self, x, running_mean, running_var, weight, bias):
        return self._replace(x=x, running_mean=running_mean, running_var=running_var,
                             weight=weight, bias=bias)


def bn_problem(name: str) -> BNProblem:
    case = BN_CASES[name]
    rng = rng_for("batch_norm", name)
    channels = case.shape[1]
    # An offset and a spread per channel, so that normalising changes something.
    per_channel = (1, channels) + (1,) * (len(case.shape) - 2)
    x = (rng.normal(0, 2, per_channel) + rng.uniform(0.5, 3, per_channel)
         * rng.standard_normal(case.shape))
    running = case.running or not case.training
    return BNProblem(
        x,
        rng.standard_normal(channels) if running else None,
        rng.uniform(0.5, 2.0, channels) if running else None,
        rng.uniform(0.5, 2.0, channels) if case.weight else None,
        rng.standard_normal(channels) if case.bias else None,
        rng.standard_normal(case.shape),
        case.training)


def bn_in_dtype(p: BNProblem, dtype):
    """The problem in ``dtype`` and its float64 twin with the same (rounded) values."""
    pairs = [rounded(a, dtype) for a in p.arrays() + (p.grad_output,)]
    low, high = zip(*pairs)
    return (p.with_arrays(*low[:5])._replace(grad_output=low[5]),
            p.with_arrays(*high[:5])._replace(grad_output=high[5]))


def bn_forward(p: BNProblem, impl, momentum=MOMENTUM):
    """batch_norm of ``p``; updates p.running_mean / p.running_var in place in training."""
    return F.batch_norm(*p.arrays(), training=p.training, momentum=momentum, impl=impl)


def bn_backward(p: BNProblem, impl):
    return F.batch_norm_backward(p.grad_output, *p.arrays(), training=p.training, impl=impl)


def running_stats(p: BNProblem) -> list:
    """Copies of p's running mean and variance on the CPU."""
    return [backend.to_numpy(a).copy() for a in (p.running_mean, p.running_var)]


def bn_on_device(p: BNProblem, impl, op):
    """``p`` with its arrays (grad_output included) on the device of ``impl``."""
    *arrays, grad_output = on_device_of(impl, op, *p.arrays(), p.grad_output)
    return p.with_arrays(*arrays)._replace(grad_output=grad_output)


@pytest.mark.parametrize("name", BN_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("batch_norm"))
def test_batch_norm_matches_reference(impl, dtype, name):
    low, p64 = bn_in_dtype(bn_problem(name), dtype)
    out = bn_forward(bn_on_device(low, impl, "batch_norm"), impl)
    check_against_reference(out, bn_forward(p64, "reference"), dtype)


@pytest.mark.parametrize("name", TRAINING_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("batch_norm"))
def test_batch_norm_training_updates_running_stats_like_reference(impl, dtype, name):
    low, p64 = bn_in_dtype(bn_problem(name), dtype)
    low = bn_on_device(low, impl, "batch_norm")
    bn_forward(low, impl)
    bn_forward(p64, "reference")
    assert_close(low.running_mean, p64.running_mean, dtype, "running_mean")
    assert_close(low.running_var, p64.running_var, dtype, "running_var")


@pytest.mark.parametrize("impl", impl_params("batch_norm", include_reference=True))
def test_batch_norm_eval_leaves_running_stats_alone(impl):
    p = bn_on_device(bn_problem("image-eval"), impl, "batch_norm")
    before = running_stats(p)
    bn_forward(p, impl)
    assert all(map(np.array_equal, running_stats(p), before))


@pytest.mark.parametrize("name", BN_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("batch_norm_backward"))
def test_batch_norm_backward_matches_reference(impl, dtype, name):
    low, p64 = bn_in_dtype(bn_problem(name), dtype)
    grads = bn_backward(bn_on_device(low, impl, "batch_norm_backward"), impl)
    for what, grad, ref in zip(("grad_input", "grad_weight", "grad_bias"), grads,
                               bn_backward(p64, "reference")):
        check_against_reference(grad, ref, dtype, what)


# Finite differences mutate the NumPy inputs in place: CPU impls only (GPU impls match the
# reference backward above).
@pytest.mark.parametrize("name", BN_CASES)
@pytest.mark.parametrize("impl", impl_params("batch_norm_backward", include_reference=True,
                                             devices=("cpu",)))
def test_batch_norm_backward_matches_finite_differences(impl, name):
    p = bn_problem(name)

    def loss():
        # Fresh running stats each time: the forward's update must not leak between calls.
        fresh = p._replace(running_mean=None if p.running_mean is None else p.running_mean.copy(),
                           running_var=None if p.running_var is None else p.running_var.copy())
        return float(np.sum(bn_forward(fresh, impl) * p.grad_output))

    grads = dict(zip(("x", "weight", "bias"), bn_backward(p, impl)))
    inputs = {k: getattr(p, k) for k in grads if getattr(p, k) is not None}
    check_grads(loss, grads, inputs)


@pytest.mark.parametrize("impl", impl_params("batch_norm_backward", include_reference=True))
def test_batch_norm_backward_leaves_running_stats_alone(impl):
    p = bn_on_device(bn_problem("fc-train"), impl, "batch_norm_backward")
    before = running_stats(p)
    bn_backward(p, impl)
    assert all(map(np.array_equal, running_stats(p), before))


# batch_norm_relu (the end of a ResNet block) and batch_norm_fold (evaluation's affine map):
# the oracle is the reference batch_norm, with the sum and clamp in NumPy.

def _per_channel(a, ndim: int):
    return a.reshape((1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("name", BN_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("batch_norm_relu"))
def test_batch_norm_relu_is_relu_of_batch_norm_plus_residual(impl, dtype, name, residual):
    low, p64 = bn_in_dtype(bn_problem(name), dtype)
    low = bn_on_device(low, impl, "batch_norm_relu")
    out = F.batch_norm_relu(*low.arrays(), training=low.training, momentum=MOMENTUM,
                            residual=low.grad_output if residual else None, impl=impl)
    ref = bn_forward(p64, "reference") + (p64.grad_output if residual else 0)
    check_against_reference(out, np.maximum(ref, 0), dtype)
    if p64.running_mean is not None:  # updated in training, untouched in evaluation
        assert_close(low.running_mean, p64.running_mean, dtype, "running_mean")
        assert_close(low.running_var, p64.running_var, dtype, "running_var")


def test_batch_norm_relu_residual_of_another_shape_is_value_error():
    p = bn_problem("image-eval")
    with pytest.raises(ValueError, match=r"batch_norm_relu: residual must have shape "
                                          r"\(3, 4, 2, 3\), got \(3, 4, 2, 2\)"):
        F.batch_norm_relu(*p.arrays(), residual=p.grad_output[..., :2])


def test_batch_norm_relu_residual_of_another_dtype_is_type_error():
    p = bn_problem("image-eval")
    with pytest.raises(TypeError, match="batch_norm_relu: residual has dtype float32 but "
                                        "input has dtype float64"):
        F.batch_norm_relu(*p.arrays(), residual=p.grad_output.astype(np.float32))


@pytest.mark.parametrize("name", ["image-eval", "volume-train"])
@pytest.mark.parametrize("impl", impl_params("batch_norm_relu"))
def test_batch_norm_relu_of_an_empty_batch_is_empty_and_keeps_the_running_stats(impl, name):
    p = bn_problem(name)
    empty = np.zeros((0,) + p.x.shape[1:])
    x, *stats, residual = on_device_of(impl, "batch_norm_relu", empty, *p.arrays()[1:], empty)
    before = [backend.to_numpy(a).copy() for a in stats[:2]]
    out = F.batch_norm_relu(x, *stats, training=p.training, residual=residual, impl=impl)
    assert out.shape == empty.shape and out.dtype == empty.dtype
    assert backend.device_of(out) == backend.device_of(x)
    assert all(np.array_equal(backend.to_numpy(a), b) for a, b in zip(stats[:2], before))


EVAL_CASES = [n for n, c in BN_CASES.items() if not c.training]


@pytest.mark.parametrize("name", EVAL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("batch_norm_fold", include_reference=True))
def test_batch_norm_fold_is_the_affine_map_of_evaluation(impl, dtype, name):
    low, p64 = bn_in_dtype(bn_problem(name), dtype)
    stats = on_device_of(impl, "batch_norm_fold", *low.arrays()[1:])
    scale, shift = F.batch_norm_fold(*stats, eps=1e-5, impl=impl)
    assert scale.dtype == shift.dtype == np.dtype(dtype)
    x = p64.x
    got = x * _per_channel(backend.to_numpy(scale), x.ndim) + \
        _per_channel(backend.to_numpy(shift), x.ndim)
    assert_close(got, bn_forward(p64, "reference"), dtype)


def test_batch_norm_fold_without_running_var_is_value_error():
    with pytest.raises(ValueError, match="batch_norm_fold: running_var is required"):
        F.batch_norm_fold(np.zeros(3), None)


def test_batch_norm_fold_weight_of_another_length_is_value_error():
    with pytest.raises(ValueError, match=r"batch_norm_fold: weight must have shape \(3,\), "
                                         r"got \(4,\)"):
        F.batch_norm_fold(np.zeros(3), np.ones(3), np.ones(4))


def test_batch_norm_fold_eps_of_zero_is_value_error():
    with pytest.raises(ValueError, match="batch_norm_fold: eps must be > 0"):
        F.batch_norm_fold(np.zeros(3), np.ones(3), eps=0.0)


def negatively_strided(a):
    """A view with the values of ``a`` whose last axis steps backwards over gaps."""
    return None if a is None else np.repeat(a[..., ::-1], 2, axis=-1)[..., ::-2]


def strided_bn_twins():
    """A problem whose every array is a negatively strided view, and a contiguous twin."""
    p = bn_problem("volume-train")
    strided = p.with_arrays(*map(negatively_strided, p.arrays()))
    return strided._replace(grad_output=negatively_strided(p.grad_output)), p


# NumPy views: strides (and in-place updates through them) are properties of CPU memory here.
@pytest.mark.parametrize("impl", impl_params("batch_norm", devices=("cpu",)))
def test_batch_norm_accepts_negatively_strided_inputs(impl):
    strided, contiguous = strided_bn_twins()
    assert_close(bn_forward(strided, impl), bn_forward(contiguous, "reference"), "float64")


@pytest.mark.parametrize("impl", impl_params("batch_norm", devices=("cpu",)))
def test_batch_norm_updates_strided_running_stats_in_place(impl):
    strided, contiguous = strided_bn_twins()
    bn_forward(strided, impl)
    bn_forward(contiguous, "reference")
    assert_close(strided.running_mean, contiguous.running_mean, "float64", "running_mean")
    assert_close(strided.running_var, contiguous.running_var, "float64", "running_var")


@pytest.mark.parametrize("impl", impl_params("batch_norm_backward", devices=("cpu",)))
def test_batch_norm_backward_accepts_negatively_strided_inputs(impl):
    strided, contiguous = strided_bn_twins()
    for grad, ref in zip(bn_backward(strided, impl), bn_backward(contiguous, "reference")):
        assert_close(grad, ref, "float64")


def torch_batch_norm(torch, p: BNProblem, momentum):
    """torch's output, updated running stats and gradients for ``p`` (p is not modified)."""
    def t(a, grad=False):
        return None if a is None else torch.tensor(a, requires_grad=grad)

    x, w, b = t(p.x, True), t(p.weight, True), t(p.bias, True)
    rm, rv = t(p.running_mean), t(p.running_var)
    out = torch.nn.functional.batch_norm(x, rm, rv, w, b, training=p.training, momentum=momentum)
    out.backward(torch.tensor(p.grad_output))
    stats = tuple(None if a is None else a.numpy() for a in (rm, rv))
    grads = tuple(None if a is None else a.grad.numpy() for a in (x, w, b))
    return out.detach().numpy(), stats, grads


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
@pytest.mark.parametrize("name", ["fc-train", "batch1-image-train", "volume-train", "image-eval",
                                  "image-train-no-running-stats"])
def test_reference_batch_norm_matches_torch(name, momentum):
    torch = pytest.importorskip("torch")
    p = bn_problem(name)
    expected, _, _ = torch_batch_norm(torch, p, momentum)
    assert rel_err(bn_forward(p, "reference", momentum), expected) <= 1e-12


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
@pytest.mark.parametrize("name", ["fc-train", "batch1-image-train", "volume-train",
                                  "batch2-seq-train"])
def test_reference_batch_norm_updates_running_stats_like_torch(name, momentum):
    torch = pytest.importorskip("torch")
    p = bn_problem(name)
    _, (mean, var), _ = torch_batch_norm(torch, p, momentum)
    bn_forward(p, "reference", momentum)
    assert rel_err(p.running_mean, mean) <= 1e-12 and rel_err(p.running_var, var) <= 1e-12


@pytest.mark.parametrize("name", ["fc-train", "seq-train-plain", "volume-train", "image-eval",
                                  "batch1-seq-eval-weight-only"])
def test_reference_batch_norm_backward_matches_torch(name):
    torch = pytest.importorskip("torch")
    p = bn_problem(name)
    _, _, expected = torch_batch_norm(torch, p, MOMENTUM)
    for grad, ref in zip(bn_backward(p, "reference"), expected):
        assert (grad is None) == (ref is None)
        if ref is not None:
            assert rel_err(grad, ref) <= 1e-10


def test_batch_norm_updates_torch_running_stats_in_place():
    torch = pytest.importorskip("torch")
    p = bn_problem("fc-train")
    mean, var = torch.tensor(p.running_mean), torch.tensor(p.running_var)
    out = F.batch_norm(torch.tensor(p.x), mean, var, torch.tensor(p.weight), torch.tensor(p.bias),
                       training=True, momentum=MOMENTUM)
    bn_forward(p, "reference")
    assert isinstance(out, torch.Tensor)
    assert rel_err(mean.numpy(), p.running_mean) <= 1e-12
    assert rel_err(var.numpy(), p.running_var) <= 1e-12


# --------------------------------------------------------------------------- local response norm

class LRNCase(NamedTuple):
    shape: tuple
    size: int
    alpha: float
    beta: float
    k: float


LRN_CASES = {
    "seq-size3": LRNCase((2, 5, 4), 3, 0.5, 0.75, 1.0),
    "batch1-image-even-size": LRNCase((1, 6, 3, 2), 4, 1.0, 0.5, 2.0),
    "size1": LRNCase((2, 3, 2, 2), 1, 0.3, 0.75, 1.0),
    "size-above-channels": LRNCase((2, 3, 5), 7, 2.0, 1.5, 0.5),
    "volume-torch-defaults": LRNCase((1, 4, 2, 2, 3), 5, 1e-4, 0.75, 1.0),
    "one-channel-negative-beta": LRNCase((3, 1, 4), 2, 0.7, -0.5, 1.0),
}


def lrn_problem(name: str):
    """(x, grad_output, (size, alpha, beta, k))."""
    case = LRN_CASES[name]
    rng = rng_for("local_response_norm", name)
    x = 1.5 * rng.standard_normal(case.shape)
    return x, rng.standard_normal(case.shape), case[1:]


@pytest.mark.parametrize("name", LRN_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("local_response_norm"))
def test_local_response_norm_matches_reference(impl, dtype, name):
    x, _, args = lrn_problem(name)
    x, x64 = rounded(x, dtype)
    out = F.local_response_norm(on_device_of(impl, "local_response_norm", x), *args, impl=impl)
    check_against_reference(out, F.local_response_norm(x64, *args, impl="reference"), dtype)


@pytest.mark.parametrize("name", LRN_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("local_response_norm_backward"))
def test_local_response_norm_backward_matches_reference(impl, dtype, name):
    x, g, args = lrn_problem(name)
    (x, x64), (g, g64) = rounded(x, dtype), rounded(g, dtype)
    grad = F.local_response_norm_backward(
        *on_device_of(impl, "local_response_norm_backward", g, x), *args, impl=impl)
    check_against_reference(
        grad, F.local_response_norm_backward(g64, x64, *args, impl="reference"), dtype)


# Finite differences mutate the NumPy input in place: CPU impls only (GPU impls match the
# reference backward above).
@pytest.mark.parametrize("name", LRN_CASES)
@pytest.mark.parametrize("impl", impl_params("local_response_norm_backward",
                                             include_reference=True, devices=("cpu",)))
def test_local_response_norm_backward_matches_finite_differences(impl, name):
    x, g, args = lrn_problem(name)

    def loss():
        return float(np.sum(F.local_response_norm(x, *args, impl=impl) * g))

    grad = F.local_response_norm_backward(g, x, *args, impl=impl)
    check_grads(loss, {"input": grad}, {"input": x})


# NumPy views: strides are a property of CPU memory here.
@pytest.mark.parametrize("impl", impl_params("local_response_norm", devices=("cpu",)))
def test_local_response_norm_accepts_negatively_strided_inputs(impl):
    x, _, args = lrn_problem("batch1-image-even-size")
    x = x.transpose(0, 1, 3, 2)[:, ::-1, ::-1]
    expected = F.local_response_norm(np.ascontiguousarray(x), *args, impl="reference")
    assert_close(F.local_response_norm(x, *args, impl=impl), expected, "float64")


@pytest.mark.parametrize("impl", impl_params("local_response_norm_backward", devices=("cpu",)))
def test_local_response_norm_backward_accepts_negatively_strided_inputs(impl):
    x, g, args = lrn_problem("seq-size3")
    x, g = x[::-1, ::-1, ::2], g[:, ::-1, 1::2]
    expected = F.local_response_norm_backward(np.ascontiguousarray(g), np.ascontiguousarray(x),
                                              *args, impl="reference")
    assert_close(F.local_response_norm_backward(g, x, *args, impl=impl), expected, "float64")


@pytest.mark.parametrize("name", LRN_CASES)
def test_reference_local_response_norm_and_gradient_match_torch(name):
    torch = pytest.importorskip("torch")
    x, g, args = lrn_problem(name)
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.local_response_norm(xt, *args)
    out.backward(torch.tensor(g))
    assert rel_err(F.local_response_norm(x, *args, impl="reference"),
                   out.detach().numpy()) <= 1e-12
    assert rel_err(F.local_response_norm_backward(g, x, *args, impl="reference"),
                   xt.grad.numpy()) <= 1e-12


# --------------------------------------------------------------------------- validation

X = np.zeros((4, 3, 2))
STATS = dict(running_mean=np.zeros(3), running_var=np.ones(3))


@pytest.mark.parametrize("shape", [(3,), (2, 3, 1, 1, 1, 1)])
def test_batch_norm_input_of_bad_rank_is_value_error(shape):
    with pytest.raises(ValueError, match="input must have 2 or 3 or 4 or 5 dimensions"):
        F.batch_norm(np.zeros(shape), **STATS)


@pytest.mark.parametrize("name", ["running_mean", "running_var", "weight", "bias"])
def test_batch_norm_per_channel_array_of_wrong_length_is_value_error(name):
    kwargs = dict(STATS, **{name: np.ones(4)})
    with pytest.raises(ValueError, match=rf"{name} must have shape \(3,\).*got \(4,\)"):
        F.batch_norm(X, **kwargs)


def test_batch_norm_per_channel_array_of_other_dtype_is_type_error():
    with pytest.raises(TypeError, match="running_var has dtype float32"):
        F.batch_norm(X, np.zeros(3), np.ones(3, np.float32))


def test_batch_norm_integer_input_is_type_error():
    with pytest.raises(TypeError, match="input must have a floating-point dtype"):
        F.batch_norm(X.astype(np.int32), **STATS)


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("inf")])
def test_batch_norm_non_positive_eps_is_value_error(eps):
    with pytest.raises(ValueError, match="eps must be"):
        F.batch_norm(X, **STATS, eps=eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_batch_norm_momentum_outside_unit_interval_is_value_error(momentum):
    with pytest.raises(ValueError, match="momentum must be"):
        F.batch_norm(X, **STATS, training=True, momentum=momentum)


def test_batch_norm_cumulative_average_momentum_none_is_value_error():
    with pytest.raises(ValueError, match="momentum=None .* not supported"):
        F.batch_norm(X, **STATS, training=True, momentum=None)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_batch_norm_training_with_one_value_per_channel_is_value_error(shape):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.zeros(shape), **STATS, training=True)


def test_batch_norm_backward_training_with_one_value_per_channel_is_value_error():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm_backward(np.zeros((1, 3)), np.zeros((1, 3)), None, None, training=True)


def test_batch_norm_eval_without_running_stats_is_value_error():
    with pytest.raises(ValueError, match="required when training=False"):
        F.batch_norm(X, None, None)


def test_batch_norm_one_running_stat_without_the_other_is_value_error():
    with pytest.raises(ValueError, match="must be given together"):
        F.batch_norm(X, np.zeros(3), None, training=True)


def test_batch_norm_read_only_running_stats_in_training_is_value_error():
    mean = np.zeros(3)
    mean.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean is read-only"):
        F.batch_norm(X, mean, np.ones(3), training=True)


def test_batch_norm_backward_grad_output_of_wrong_shape_is_value_error():
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 3, 2\)"):
        F.batch_norm_backward(np.zeros((4, 3)), X, **STATS)


@pytest.mark.parametrize("size", [0, -1])
def test_local_response_norm_size_below_one_is_value_error(size):
    with pytest.raises(ValueError, match="size must be a positive int"):
        F.local_response_norm(X, size)


@pytest.mark.parametrize("shape", [(4, 3), (3,)])
def test_local_response_norm_input_without_spatial_axis_is_value_error(shape):
    with pytest.raises(ValueError, match="input must have 3 or more dimensions"):
        F.local_response_norm(np.zeros(shape), 2)


def test_local_response_norm_integer_input_is_type_error():
    with pytest.raises(TypeError, match="input must have a floating-point dtype"):
        F.local_response_norm(X.astype(np.int64), 2)


def test_local_response_norm_negative_alpha_is_value_error():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        F.local_response_norm(X, 2, alpha=-1e-4)


@pytest.mark.parametrize("k", [0.0, -1.0])
def test_local_response_norm_non_positive_k_is_value_error(k):
    with pytest.raises(ValueError, match="k must be > 0"):
        F.local_response_norm(X, 2, k=k)


def test_local_response_norm_non_finite_beta_is_value_error():
    with pytest.raises(ValueError, match="beta must be finite"):
        F.local_response_norm(X, 2, beta=float("nan"))


def test_local_response_norm_backward_grad_output_of_wrong_shape_is_value_error():
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 3, 2\)"):
        F.local_response_norm_backward(np.zeros((4, 3, 1)), X, 2)

