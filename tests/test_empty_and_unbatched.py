"""Batch shapes as PyTorch has them, in every impl: empty batches (N = 0) and unbatched inputs.

- Unbatched: an op PyTorch accepts without a batch axis (convolutions, pooling, recurrent
  cells and sequences, class-index losses) gives, in every impl, the result of the same
  call on a batch of one with that axis removed.
- Empty batch: every op PyTorch accepts with N = 0 runs in every impl; results that have
  the batch axis are empty, and the others are what a sum over nothing gives: zero
  gradients of the weights, a zero "sum" loss, a NaN "mean" loss (torch's 0 / 0). Batch
  norm leaves its running statistics as they were.
- The reference agrees with PyTorch on both (where torch is installed).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pytest
from support import assert_same_values, every_impl_params, rng_for, run_impl

import gpuconv.functional as F


class Case(NamedTuple):
    """``call(*arrays, impl=...)``. ``batch_axes``: for each array, the axis that holds the
    batch (None: the array has none); ``out_axes`` likewise for each result. ``empty``: what
    a result without a batch axis is for an empty batch (0 or NaN)."""

    id: str
    op: str
    arrays: tuple
    call: Callable
    batch_axes: tuple
    out_axes: tuple
    empty: float = 0.0


RNG = rng_for("batch-shapes")


def _r(*shape):
    return RNG.standard_normal(shape)


def _u(*shape):
    return RNG.uniform(-0.6, 0.6, shape)


def _int(high, *shape):
    return RNG.integers(0, high, shape)


def _conv_cases():
    x, w, b = _r(2, 4, 6, 5), _r(4, 2, 3, 3), _r(4)
    gy = _r(2, 4, 3, 3)
    x1, w1 = _r(2, 4, 7), _r(3, 4, 3)
    xt, wt = _r(2, 3, 4, 4), _r(3, 2, 3, 3)
    gyt = _r(2, 2, 12, 12)
    geo = dict(stride=2, padding=1, groups=2)
    wd = _r(8, 1, 3, 3)   # depthwise (one input channel per group), multiplier 2
    gyd = _r(2, 8, 3, 3)
    depthwise = dict(stride=2, padding=1, groups=4)
    return [
        Case("conv2d", "conv2d", (x, w, b), lambda x, w, b, impl: F.conv2d(
            x, w, b, **geo, impl=impl), (0, None, None), (0,)),
        Case("conv2d_backward", "conv2d_backward", (gy, x, w, b),
             lambda g, x, w, b, impl: F.conv2d_backward(g, x, w, b, **geo, impl=impl),
             (0, 0, None, None), (0, None, None)),
        Case("conv2d-depthwise", "conv2d", (x, wd), lambda x, w, impl: F.conv2d(
            x, w, **depthwise, impl=impl), (0, None), (0,)),
        Case("conv2d_backward-depthwise", "conv2d_backward", (gyd, x, wd),
             lambda g, x, w, impl: F.conv2d_backward(g, x, w, **depthwise, impl=impl),
             (0, 0, None), (0, None, None)),
        Case("conv1d", "conv1d", (x1, w1), lambda x, w, impl: F.conv1d(
            x, w, stride=2, padding="valid", impl=impl), (0, None), (0,)),
        Case("conv1d_backward", "conv1d_backward", (_r(2, 3, 3), x1, w1),
             lambda g, x, w, impl: F.conv1d_backward(g, x, w, stride=2, impl=impl),
             (0, 0, None), (0, None, None)),
        Case("conv_transpose2d", "conv_transpose2d", (xt, wt), lambda x, w, impl:
             F.conv_transpose2d(x, w, stride=2, output_padding=1, dilation=2, impl=impl),
             (0, None), (0,)),
        Case("conv_transpose2d_backward", "conv_transpose2d_backward", (gyt, xt, wt),
             lambda g, x, w, impl: F.conv_transpose2d_backward(
                 g, x, w, stride=2, output_padding=1, dilation=2, impl=impl),
             (0, 0, None), (0, None, None)),
    ]


def _pool_cases():
    x, x1 = _r(2, 3, 7, 6), _r(2, 3, 9)
    cases = []
    for name, args in (("max_pool2d", (3, 2, 1)), ("avg_pool2d", (3, 2, 1)),
                       ("adaptive_avg_pool2d", ((3, 2),)), ("max_pool1d", (2,)),
                       ("avg_pool1d", (3, 2)), ("adaptive_avg_pool1d", (4,))):
        xin = x1 if "1d" in name else x
        out_shape = getattr(F, name)(xin, *args).shape
        fwd, bwd = getattr(F, name), getattr(F, f"{name}_backward")
        cases.append(Case(name, name, (xin,), lambda x, impl, f=fwd, a=args: f(x, *a, impl=impl),
                          (0,), (0,)))
        cases.append(Case(f"{name}_backward", f"{name}_backward", (_r(*out_shape), xin),
                          lambda g, x, impl, f=bwd, a=args: f(g, x, *a, impl=impl), (0, 0), (0,)))
    return cases


def _rnn_cases():
    B, I, H = 2, 3, 4
    cases = []
    for name, gates in (("lstm_cell", 4), ("gru_cell", 3), ("rnn_tanh_cell", 1),
                        ("rnn_relu_cell", 1)):
        weights = (_u(gates * H, I), _u(gates * H, H), _u(gates * H), _u(gates * H))
        fwd, bwd = getattr(F, name), getattr(F, f"{name}_backward")
        if name == "lstm_cell":
            cases.append(Case(name, name, (_r(B, I), _r(B, H), _r(B, H), *weights),
                              lambda x, h, c, *w, impl: F.lstm_cell(x, (h, c), *w, impl=impl),
                              (0, 0, 0, None, None, None, None), (0, 0)))
            cases.append(Case(f"{name}_backward", f"{name}_backward",
                              (_r(B, H), _r(B, H), _r(B, I), _r(B, H), _r(B, H), *weights),
                              lambda gh, gc, x, h, c, *w, impl: _flat(F.lstm_cell_backward(
                                  gh, gc, x, (h, c), *w, impl=impl)),
                              (0, 0, 0, 0, 0, None, None, None, None),
                              (0, 0, 0, None, None, None, None)))
            continue
        cases.append(Case(name, name, (_r(B, I), _r(B, H), *weights),
                          lambda x, h, *w, impl, f=fwd: f(x, h, *w, impl=impl),
                          (0, 0, None, None, None, None), (0,)))
        cases.append(Case(f"{name}_backward", f"{name}_backward", (_r(B, H), _r(B, I), _r(B, H),
                                                                   *weights),
                          lambda g, x, h, *w, impl, f=bwd: f(g, x, h, *w, impl=impl),
                          (0, 0, 0, None, None, None, None), (0, 0, None, None, None, None)))
    T, L = 3, 2
    for name, gates in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        params = tuple(w for layer in range(L) for w in (
            _u(gates * H, I if layer == 0 else H), _u(gates * H, H), _u(gates * H),
            _u(gates * H)))
        states = (_r(L, B, H), _r(L, B, H)) if name == "lstm" else (_r(L, B, H),)
        n_states, n_params = len(states), len(params)
        fwd, bwd = getattr(F, name), getattr(F, f"{name}_backward")
        hx = (lambda s: tuple(s)) if name == "lstm" else (lambda s: s[0])
        cases.append(Case(name, name, (_r(T, B, I), *states, *params),
                          lambda x, *rest, impl, f=fwd, k=n_states, hx=hx: _flat(f(
                              x, hx(rest[:k]), list(rest[k:]), num_layers=L, impl=impl)),
                          (1,) * (1 + n_states) + (None,) * n_params, (1,) * (1 + n_states)))
        grads = (_r(T, B, H),) + tuple(_r(L, B, H) for _ in states)
        cases.append(Case(f"{name}_backward", f"{name}_backward",
                          (*grads, _r(T, B, I), *states, *params),
                          lambda *a, impl, f=bwd, k=n_states, hx=hx: _flat(f(
                              *a[:1 + k], a[1 + k], hx(a[2 + k:2 + 2 * k]), list(a[2 + 2 * k:]),
                              num_layers=L, impl=impl)),
                          (1,) * (2 + 2 * n_states) + (None,) * n_params,
                          (1,) * (1 + n_states) + (None,) * n_params))
    return cases


def _flat(out) -> tuple:
    """A result with its nested tuples and lists spread out in order."""
    if isinstance(out, (tuple, list)):
        return tuple(a for o in out for a in _flat(o))
    return (out,)


def _loss_cases():
    logits, target = _r(3, 5), _int(5, 3)
    cases = []
    for name in ("cross_entropy", "nll_loss"):
        fwd, bwd = getattr(F, name), getattr(F, f"{name}_backward")
        for reduction in ("none", "sum", "mean"):
            out_axis = 0 if reduction == "none" else None
            empty = np.nan if reduction == "mean" else 0.0
            g = _r(3) if reduction == "none" else np.array(0.7)
            cases.append(Case(f"{name}-{reduction}", name, (logits, target),
                              lambda x, t, impl, f=fwd, r=reduction: f(x, t, reduction=r,
                                                                       impl=impl),
                              (0, 0), (out_axis,), empty))
            cases.append(Case(f"{name}_backward-{reduction}", f"{name}_backward",
                              (g, logits, target),
                              lambda g, x, t, impl, f=bwd, r=reduction: f(g, x, t, reduction=r,
                                                                          impl=impl),
                              (out_axis, 0, 0), (0,)))
    return cases


def _empty_only_cases():
    """Ops with no unbatched form in PyTorch, or none distinct from their batched one."""
    x, g = _r(3, 4, 5), _r(3, 4, 5)
    cases = []
    for name in ("mse_loss", "l1_loss"):
        for reduction in ("none", "sum", "mean"):
            cases.append(Case(f"{name}-{reduction}", name, (x, g),
                              lambda a, b, impl, n=name, r=reduction: getattr(F, n)(
                                  a, b, r, impl=impl),
                              (0, 0), (0 if reduction == "none" else None,),
                              np.nan if reduction == "mean" else 0.0))
            cases.append(Case(f"{name}_backward-{reduction}", f"{name}_backward",
                              (_r(3, 4, 5) if reduction == "none" else np.array(0.3), x, g),
                              lambda go, a, b, impl, n=name, r=reduction: getattr(
                                  F, f"{n}_backward")(go, a, b, r, impl=impl),
                              (0 if reduction == "none" else None, 0, 0), (0, 0)))
    stats = (_r(4), RNG.uniform(0.5, 2, 4), _r(4), _r(4))
    for training in (False, True):
        cases.append(Case(f"batch_norm-training{training}", "batch_norm", (x, *stats),
                          lambda x, m, v, w, b, impl, t=training: F.batch_norm(
                              x, m.copy(), v.copy(), w, b, training=t, impl=impl),
                          (0, None, None, None, None), (0,)))
        cases.append(Case(f"batch_norm_backward-training{training}", "batch_norm_backward",
                          (g, x, *stats), lambda g, x, m, v, w, b, impl, t=training:
                          F.batch_norm_backward(g, x, m, v, w, b, training=t, impl=impl),
                          (0, 0, None, None, None, None), (0, None, None)))
    w = _r(6, 5)
    cases += [
        Case("local_response_norm", "local_response_norm", (x,),
             lambda x, impl: F.local_response_norm(x, 3, impl=impl), (0,), (0,)),
        Case("local_response_norm_backward", "local_response_norm_backward", (g, x),
             lambda g, x, impl: F.local_response_norm_backward(g, x, 3, impl=impl), (0, 0),
             (0,)),
        Case("linear", "linear", (x, w, _r(6)), lambda x, w, b, impl: F.linear(x, w, b,
                                                                                impl=impl),
             (0, None, None), (0,)),
        Case("linear_backward", "linear_backward", (_r(3, 4, 6), x, w, _r(6)),
             lambda g, x, w, b, impl: F.linear_backward(g, x, w, b, impl=impl),
             (0, 0, None, None), (0, None, None)),
        Case("embedding", "embedding", (_int(6, 3, 2), w),
             lambda i, w, impl: F.embedding(i, w, impl=impl), (0, None), (0,)),
        Case("embedding_backward", "embedding_backward", (_r(3, 2, 5), _int(6, 3, 2), w),
             lambda g, i, w, impl: F.embedding_backward(g, i, w, impl=impl), (0, 0, None),
             (None,)),
        Case("bias_act", "bias_act", (x, _r(4)), lambda x, b, impl: F.bias_act(
            x, b, "tanh", impl=impl), (0, None), (0,)),
        Case("bias_act_backward", "bias_act_backward", (g, x, _r(4)),
             lambda g, x, b, impl: F.bias_act_backward(g, x, b, "elu", 0.5, impl=impl),
             (0, 0, None), (0, None)),
        Case("dropout", "dropout", (x,), lambda x, impl: F.dropout(x, 0.3, seed=5, impl=impl),
             (0,), (0,)),
    ]
    for name in ("relu", "sigmoid", "softmax", "log_softmax"):
        args = (1,) if "softmax" in name else ()
        cases.append(Case(name, name, (x,), lambda x, impl, n=name, a=args: getattr(F, n)(
            x, *a, impl=impl), (0,), (0,)))
        cases.append(Case(f"{name}_backward", f"{name}_backward", (g, x),
                          lambda g, x, impl, n=name, a=args: getattr(F, f"{n}_backward")(
                              g, x, *a, impl=impl), (0, 0), (0,)))
    return cases


UNBATCHED = _conv_cases() + _pool_cases() + _rnn_cases() + _loss_cases()
EMPTY = UNBATCHED + _empty_only_cases()


def _with_impls(cases):
    return [pytest.param(case, *p.values, marks=p.marks, id=f"{case.id}-{p.id}")
            for case in cases for p in every_impl_params(case.op)]


def _as_tuple(out) -> tuple:
    return _flat(out) if isinstance(out, (tuple, list)) else (out,)


def _take(a, axis, index):
    return a if axis is None else np.take(a, index, axis=axis)


def _empty_batch(case: Case) -> tuple:
    return tuple(a if axis is None else np.take(a, [], axis=axis)
                 for a, axis in zip(case.arrays, case.batch_axes))


@pytest.mark.parametrize("case, impl", _with_impls(UNBATCHED))
def test_an_unbatched_input_gives_the_batch_of_one_result(case, impl):
    unbatched = tuple(_take(a, axis, 0) for a, axis in zip(case.arrays, case.batch_axes))
    one = tuple(a if axis is None else np.expand_dims(b, axis)
                for a, b, axis in zip(case.arrays, unbatched, case.batch_axes))
    got = _as_tuple(run_impl(impl, case.op, case.call, *unbatched))
    want = _as_tuple(case.call(*one, impl="reference"))
    assert len(got) == len(want) == len(case.out_axes)
    for k, (o, r, axis) in enumerate(zip(got, want, case.out_axes)):
        assert_same_values(o, None if r is None else _take(r, axis, 0), "float32",
                           f"{case.id}[{k}]")


@pytest.mark.parametrize("case, impl", _with_impls(EMPTY))
def test_an_empty_batch_gives_empty_results_and_zero_sums(case, impl):
    full = _as_tuple(case.call(*case.arrays, impl="reference"))
    got = _as_tuple(run_impl(impl, case.op, case.call, *_empty_batch(case)))
    assert len(got) == len(full) == len(case.out_axes)
    for k, (o, r, axis) in enumerate(zip(got, full, case.out_axes)):
        if r is None:
            assert o is None, f"{case.id}[{k}]"
        elif axis is not None:
            assert o.shape == np.take(r, [], axis=axis).shape, f"{case.id}[{k}]: {o.shape}"
        else:
            assert_same_values(o, np.full(np.shape(r), case.empty), "float64", f"{case.id}[{k}]")


@pytest.mark.parametrize("impl", every_impl_params("batch_norm"))
def test_an_empty_batch_leaves_the_running_statistics_unchanged(impl):
    mean, var = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.5, 3.0])
    got = run_impl(impl, "batch_norm", lambda x, m, v, impl: (
        F.batch_norm(x, m, v, training=True, momentum=0.3, impl=impl), m, v),
        np.zeros((0, 3, 4)), mean.copy(), var.copy())
    np.testing.assert_array_equal(got[1], mean)
    np.testing.assert_array_equal(got[2], var)


# --------------------------------------------------------------------------- against torch

def _cell(torch_cell, x, hx, *weights):
    """A torch cell op on an unbatched input as torch.nn.LSTMCell (GRUCell, RNNCell) calls it:
    on a batch of one, the batch axis then removed."""
    if x.dim() == 2:
        return torch_cell(x, hx, *weights)
    hx = tuple(h[None] for h in hx) if isinstance(hx, tuple) else hx[None]
    out = torch_cell(x[None], hx, *weights)
    return tuple(o[0] for o in out) if isinstance(out, tuple) else out[0]


def _torch_results(torch, case: Case, arrays: tuple) -> tuple | None:
    """PyTorch's results of ``case`` on ``arrays`` (None where torch has no such call)."""
    tf = torch.nn.functional
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    forward = {
        "conv2d": lambda: tf.conv2d(*t, stride=2, padding=1, groups=2),
        "conv1d": lambda: tf.conv1d(*t, stride=2),
        "conv_transpose2d": lambda: tf.conv_transpose2d(*t, stride=2, output_padding=1,
                                                        dilation=2),
        "max_pool2d": lambda: tf.max_pool2d(t[0], 3, 2, 1),
        "avg_pool2d": lambda: tf.avg_pool2d(t[0], 3, 2, 1),
        "adaptive_avg_pool2d": lambda: tf.adaptive_avg_pool2d(t[0], (3, 2)),
        "max_pool1d": lambda: tf.max_pool1d(t[0], 2),
        "avg_pool1d": lambda: tf.avg_pool1d(t[0], 3, 2),
        "adaptive_avg_pool1d": lambda: tf.adaptive_avg_pool1d(t[0], 4),
        "lstm_cell": lambda: _cell(torch.lstm_cell, t[0], (t[1], t[2]), *t[3:]),
        "gru_cell": lambda: _cell(torch.gru_cell, *t),
        "rnn_tanh_cell": lambda: _cell(torch.rnn_tanh_cell, *t),
        "rnn_relu_cell": lambda: _cell(torch.rnn_relu_cell, *t),
    }
    if case.id in forward:
        return _as_tuple(forward[case.id]())
    if case.id.startswith(("cross_entropy-", "nll_loss-")):
        name, reduction = case.id.split("-")
        return (getattr(tf, name)(t[0], t[1], reduction=reduction),)
    return None


@pytest.mark.parametrize("case", [c for c in UNBATCHED if not c.id.count("backward")],
                         ids=lambda c: c.id)
def test_the_reference_takes_unbatched_and_empty_inputs_as_torch_does(case):
    torch = pytest.importorskip("torch")
    unbatched = tuple(_take(a, axis, 0) for a, axis in zip(case.arrays, case.batch_axes))
    for arrays in (unbatched, _empty_batch(case)):
        want = _torch_results(torch, case, arrays)
        if want is None:
            pytest.skip("torch has no functional form of this op to compare with")
        got = _as_tuple(case.call(*arrays, impl="reference"))
        for k, (o, r) in enumerate(zip(got, want, strict=True)):
            assert_same_values(o, r.detach().numpy(), "float64", f"{case.id}[{k}]")
