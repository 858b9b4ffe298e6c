"""gpuconv.jax: gpuconv's ops inside JAX programs, with jax.custom_vjp gradients.

``jax.grad`` of a loss through a gpuconv op matches ``jax.grad`` of the same loss written
with jax.numpy / jax.lax (the oracle), under ``jax.jit``; every op's VJP also passes
``jax.test_util.check_grads`` (finite differences in float64).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="gpuconv.jax needs JAX (pip install jax jaxlib)")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import gpuconv.functional as F  # noqa: E402
import gpuconv.jax as J  # noqa: E402
from support import TOL, rel_err  # noqa: E402


@pytest.fixture(autouse=True)
def _float64():
    """float64 for the comparisons and the finite differences."""
    with jax.enable_x64(True):
        yield


@dataclasses.dataclass
class Case:
    """``ours(*args)`` and ``theirs(*args)`` (jax.numpy) compute the same array; ``args(rng)``
    makes the float64 arguments the gradient is taken of."""

    id: str
    ours: Callable
    theirs: Callable
    args: Callable


def r(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape))


def _window(x, init, op, k, s, pad):
    return jax.lax.reduce_window(x, init, op, (1, 1) + k, (1, 1) + s,
                                 ((0, 0), (0, 0)) + tuple((p, p) for p in pad))


def _lstm_cell_ref(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = jnp.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _gru_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh):
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    (ir, iz, in_), (hr, hz, hn) = jnp.split(gi, 3, axis=1), jnp.split(gh, 3, axis=1)
    rr, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
    return (1 - z) * jnp.tanh(in_ + rr * hn) + z * h


def _lstm_ref(x, *p):
    h = c = jnp.zeros((x.shape[1], p[1].shape[1]))
    outs = []
    for t in range(x.shape[0]):
        h, c = _lstm_cell_ref(x[t], h, c, *p)
        outs.append(h)
    return jnp.stack(outs), h


def _cell_args(rng, gates, B=3, I=4, H=5, states=1):
    return (r(rng, B, I), *[r(rng, B, H) for _ in range(states)], r(rng, gates * H, I),
            r(rng, gates * H, H), r(rng, gates * H), r(rng, gates * H))


TARGET = jnp.array([0, 3, 4, 1])
CASES = [
    Case("conv2d", lambda x, w, b: J.conv2d(x, w, b, 2, 1, (1, 2), 2),
         lambda x, w, b: jax.lax.conv_general_dilated(
             x, w, (2, 2), ((1, 1), (1, 1)), rhs_dilation=(1, 2),
             feature_group_count=2) + b[:, None, None],
         lambda g: (r(g, 2, 4, 7, 6), r(g, 6, 2, 3, 2), r(g, 6))),
    Case("conv1d", lambda x, w: J.conv1d(x, w, None, 1, 2),
         lambda x, w: jax.lax.conv_general_dilated(x, w, (1,), ((2, 2),)),
         lambda g: (r(g, 2, 3, 9), r(g, 4, 3, 3))),
    Case("max_pool2d", lambda x: J.max_pool2d(x, 3, 2, 1),
         lambda x: _window(x, -jnp.inf, jax.lax.max, (3, 3), (2, 2), (1, 1)),
         lambda g: (r(g, 2, 3, 7, 7),)),
    Case("avg_pool2d", lambda x: J.avg_pool2d(x, 2),
         lambda x: _window(x, 0.0, jax.lax.add, (2, 2), (2, 2), (0, 0)) / 4,
         lambda g: (r(g, 2, 3, 6, 4),)),
    Case("adaptive_avg_pool2d-global", lambda x: J.adaptive_avg_pool2d(x, 1),
         lambda x: x.mean(axis=(2, 3), keepdims=True), lambda g: (r(g, 2, 3, 5, 4),)),
    Case("relu", J.relu, jax.nn.relu, lambda g: (r(g, 3, 4),)),
    Case("leaky_relu", lambda x: J.leaky_relu(x, 0.2), lambda x: jax.nn.leaky_relu(x, 0.2),
         lambda g: (r(g, 3, 4),)),
    Case("elu", lambda x: J.elu(x, 0.7), lambda x: jax.nn.elu(x, 0.7), lambda g: (r(g, 3, 4),)),
    Case("sigmoid", J.sigmoid, jax.nn.sigmoid, lambda g: (r(g, 3, 4),)),
    Case("tanh", J.tanh, jnp.tanh, lambda g: (r(g, 3, 4),)),
    Case("softmax", lambda x: J.softmax(x, 1), lambda x: jax.nn.softmax(x, axis=1),
         lambda g: (r(g, 3, 4, 2),)),
    Case("log_softmax", lambda x: J.log_softmax(x, -1), lambda x: jax.nn.log_softmax(x, -1),
         lambda g: (r(g, 3, 4),)),
    Case("bias_act", lambda x, b: J.bias_act(x, b, "sigmoid"),
         lambda x, b: jax.nn.sigmoid(x + b[:, None]), lambda g: (r(g, 2, 3, 4), r(g, 3))),
    Case("linear", J.linear, lambda x, w, b: x @ w.T + b,
         lambda g: (r(g, 2, 3, 4), r(g, 5, 4), r(g, 5))),
    Case("embedding", lambda w: J.embedding(TARGET, w), lambda w: w[TARGET],
         lambda g: (r(g, 5, 3),)),
    Case("cross_entropy", lambda x: J.cross_entropy(x, TARGET),
         lambda x: -jnp.mean(jax.nn.log_softmax(x)[jnp.arange(4), TARGET]),
         lambda g: (r(g, 4, 5),)),
    Case("nll_loss-sum", lambda x: J.nll_loss(x, TARGET, reduction="sum"),
         lambda x: -jnp.sum(x[jnp.arange(4), TARGET]), lambda g: (r(g, 4, 5),)),
    Case("mse_loss", J.mse_loss, lambda x, t: jnp.mean((x - t) ** 2),
         lambda g: (r(g, 3, 4), r(g, 3, 4))),
    Case("l1_loss", lambda x, t: J.l1_loss(x, t, "sum"), lambda x, t: jnp.abs(x - t).sum(),
         lambda g: (r(g, 3, 4), r(g, 3, 4))),
    Case("batch_norm-training", lambda x, w, b: J.batch_norm(x, None, None, w, b, True)[0],
         lambda x, w, b: ((x - x.mean((0, 2), keepdims=True))
                          / jnp.sqrt(x.var((0, 2), keepdims=True) + 1e-5)
                          * w[:, None] + b[:, None]),
         lambda g: (r(g, 4, 3, 5), r(g, 3), r(g, 3))),
    Case("gru_cell", J.gru_cell, _gru_cell_ref, lambda g: _cell_args(g, 3)),
    Case("lstm_cell", lambda x, h, c, *w: J.lstm_cell(x, (h, c), *w), _lstm_cell_ref,
         lambda g: _cell_args(g, 4, states=2)),
    Case("lstm", lambda x, *p: (lambda o: (o[0], o[1][0]))(J.lstm(x, None, list(p))),
         _lstm_ref, lambda g: (r(g, 5, 2, 3), r(g, 16, 3), r(g, 16, 4), r(g, 16), r(g, 16))),
]


def _loss(fn):
    """A scalar of every output, weighted so that each element's gradient differs."""
    def loss(*args):
        outs = jax.tree.leaves(fn(*args))
        return sum((o * jnp.cos(jnp.arange(o.size).reshape(o.shape))).sum() for o in outs)
    return loss


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_jit_grad_matches_the_jax_numpy_formulation(case):
    args = case.args(np.random.default_rng(0))
    argnums = tuple(range(len(args)))
    ours = jax.jit(jax.value_and_grad(_loss(case.ours), argnums))(*args)
    theirs = jax.value_and_grad(_loss(case.theirs), argnums)(*args)
    assert rel_err(np.asarray(ours[0]), np.asarray(theirs[0])) <= TOL["float64"]
    for i, (o, t) in enumerate(zip(ours[1], theirs[1])):
        err = rel_err(np.asarray(o), np.asarray(t))
        assert err <= TOL["float64"], f"gradient of argument {i}: relative error {err:.2e}"


CHECKED = {
    "conv_transpose2d": (lambda x, w, b: J.conv_transpose2d(x, w, b, 2, 1, 1, 2),
                         lambda g: (r(g, 2, 4, 3, 3), r(g, 4, 3, 3, 3), r(g, 6))),
    "max_pool1d": (lambda x: J.max_pool1d(x, 3, 2, 1, 2), lambda g: (r(g, 2, 3, 11),)),
    "avg_pool1d": (lambda x: J.avg_pool1d(x, 3, 2, 1, True, False), lambda g: (r(g, 2, 3, 9),)),
    "adaptive_avg_pool1d": (lambda x: J.adaptive_avg_pool1d(x, 4), lambda g: (r(g, 2, 3, 9),)),
    "local_response_norm": (lambda x: J.local_response_norm(x, 3, 0.1, 0.75, 2.0),
                            lambda g: (r(g, 2, 5, 3),)),
    "dropout": (lambda x: J.dropout(x, 0.3, seed=4), lambda g: (r(g, 4, 5),)),
    "rnn_tanh_cell": (J.rnn_tanh_cell, lambda g: _cell_args(g, 1)),
    "rnn_relu_cell": (J.rnn_relu_cell, lambda g: _cell_args(g, 1)),
    "gru": (lambda x, h, *p: J.gru(x, h, list(p), num_layers=2, batch_first=True),
            lambda g: (r(g, 2, 3, 4), r(g, 2, 2, 3), *[r(g, 9, 4), r(g, 9, 3), r(g, 9), r(g, 9),
                                                         r(g, 9, 3), r(g, 9, 3), r(g, 9), r(g, 9)])),
    "rnn": (lambda x, *p: J.rnn(x, None, list(p), bidirectional=True, nonlinearity="tanh"),
            lambda g: (r(g, 3, 2, 4), *[r(g, 3, 4), r(g, 3, 3)] * 2)),
    "batch_norm-eval": (lambda x, w: J.batch_norm(x, jnp.ones(3) * 0.1, jnp.ones(3) * 2.0, w,
                                                   None)[0],
                        lambda g: (r(g, 4, 3, 2), r(g, 3))),
}


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_vjp_passes_finite_difference_checks(name):
    fn, make = CHECKED[name]
    check_grads(jax.jit(fn), make(np.random.default_rng(1)), order=1, modes=["rev"],
                eps=1e-6, atol=1e-6, rtol=1e-6)


def test_every_op_with_a_backward_is_a_jax_function_and_tested():
    with_backward = {name for name in F.__all__ if f"{name}_backward" in F.__all__}
    assert with_backward == set(J.__all__)
    tested = {c.id.split("-")[0] for c in CASES} | {n.split("-")[0] for n in CHECKED}
    assert with_backward - tested == set()


def test_vmap_runs_the_op_per_batch_element():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 2, 4, 5)))
    out = jax.vmap(lambda t: J.max_pool2d(t, 2))(x)
    np.testing.assert_array_equal(np.asarray(out), F.max_pool2d(np.asarray(x), 2))


def test_batch_norm_returns_the_updated_running_statistics():
    x = np.random.default_rng(3).standard_normal((8, 3, 4))
    mean, var = np.zeros(3), np.ones(3)
    _, new_mean, new_var = J.batch_norm(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(var),
                                        training=True, momentum=0.5)
    F.batch_norm(x, mean, var, training=True, momentum=0.5)
    np.testing.assert_allclose(np.asarray(new_mean), mean, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(new_var), var, rtol=1e-12)


def test_a_bad_argument_fails_at_trace_time_with_gpuconvs_error():
    with pytest.raises(ValueError, match="conv2d: input has 3 channels"):
        jax.jit(J.conv2d)(jnp.zeros((1, 3, 5, 5)), jnp.zeros((2, 2, 3, 3)))


@pytest.mark.gpu
@pytest.mark.skipif(not any(d.platform == "gpu" for d in jax.devices()),
                    reason="JAX sees no GPU")
def test_on_gpu_arrays_the_op_runs_through_the_host_and_returns_to_the_gpu():
    x = jax.device_put(jnp.ones((2, 3, 4, 4)), jax.devices("gpu")[0])
    y = jax.jit(lambda t: J.max_pool2d(t, 2))(x)
    assert y.devices() == x.devices() and float(y.sum()) == 2 * 3 * 4
