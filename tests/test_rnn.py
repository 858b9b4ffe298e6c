"""Recurrent cells and sequences (RNN tanh/relu, LSTM, GRU): every impl against the
reference, the reference against PyTorch, every backward against finite differences, the
seeded inter-layer dropout, layouts, and one test per validation error."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from support import check_against_reference, check_grads, on_device_of, rng_for, with_impls

from gpuconv import backend, kernels
from gpuconv.functional.rnn import (
    Reserve, gru, gru_backward, gru_cell, gru_cell_backward, lstm, lstm_backward, lstm_cell,
    lstm_cell_backward, rnn, rnn_backward, rnn_relu_cell, rnn_relu_cell_backward,
    rnn_tanh_cell, rnn_tanh_cell_backward,
)

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
DTYPES = ("float64", "float32")

CELL = {"lstm": lstm_cell, "gru": gru_cell, "rnn_tanh": rnn_tanh_cell,
        "rnn_relu": rnn_relu_cell}
CELL_BACKWARD = {"lstm": lstm_cell_backward, "gru": gru_cell_backward,
                 "rnn_tanh": rnn_tanh_cell_backward, "rnn_relu": rnn_relu_cell_backward}
CELL_OP = {kind: f"{kind}_cell" for kind in KINDS}
SEQ_OP = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn"}

SEQ_ARGS = ("num_layers", "bidirectional", "batch_first", "dropout", "training", "seed")


def kind_impl_params(op_of_kind: dict, **kwargs) -> list:
    """pytest params (kind, impl) over every kind and the impls registered for its op."""
    return with_impls(KINDS, KINDS, op_of_kind.__getitem__, **kwargs)


def cast(arrays, dtype) -> list:
    return [None if a is None else a.astype(dtype) for a in arrays]


def to_impl(impl: str, op: str, arrays) -> list:
    return [on_device_of(impl, op, a) for a in arrays]


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def assert_all_close(outs, refs, dtype, what: str) -> None:
    assert len(outs) == len(refs), f"{what}: {len(outs)} results, reference has {len(refs)}"
    for j, (out, ref) in enumerate(zip(outs, refs)):
        check_against_reference(out, ref, dtype, f"{what}[{j}]")


# --------------------------------------------------------------------------- cells

def cell_args(kind: str, B: int, I: int, H: int, biases: str, rng) -> list:
    """(input, hx[, cx], weight_ih, weight_hh, bias_ih, bias_hh) in float64; biases is
    'both', 'none', 'ih' or 'hh'."""
    G = GATES[kind]
    states = [rng.standard_normal((B, H)) for _ in range(2 if kind == "lstm" else 1)]
    weights = [rng.uniform(-0.8, 0.8, (G * H, I)), rng.uniform(-0.8, 0.8, (G * H, H))]
    bias = [rng.uniform(-0.5, 0.5, G * H) if biases in ("both", which) else None
            for which in ("ih", "hh")]
    return [rng.standard_normal((B, I)), *states, *weights, *bias]


def packed(kind, args) -> list:
    """Flat cell arguments in PyTorch's call form: the LSTM takes its state as a pair."""
    return [args[0], (args[1], args[2]), *args[3:]] if kind == "lstm" else list(args)


def flattened(out) -> tuple:
    """A result with the LSTM's state pairs spread out, in the order of the flat arguments."""
    return tuple(a for o in as_tuple(out) for a in (o if isinstance(o, tuple) else (o,)))


def cell_forward(kind, args, impl):
    return as_tuple(CELL[kind](*packed(kind, args), impl=impl))


def cell_backward(kind, grads, args, impl):
    return flattened(CELL_BACKWARD[kind](*grads, *packed(kind, args), impl=impl))


def cell_output_grads(kind, B, H, rng) -> list:
    return [rng.standard_normal((B, H)) for _ in range(2 if kind == "lstm" else 1)]


CELL_CASES = [pytest.param(3, 5, 4, "both", id="B3-I5-H4"),
              pytest.param(1, 1, 1, "none", id="B1-I1-H1-nobias"),
              pytest.param(2, 7, 3, "ih", id="B2-I7-H3-bias_ih_only"),
              pytest.param(4, 2, 5, "hh", id="B4-I2-H5-bias_hh_only")]


@pytest.mark.parametrize("B,I,H,biases", CELL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,impl", kind_impl_params(CELL_OP))
def test_cell_matches_reference(kind, impl, dtype, B, I, H, biases):
    args = cell_args(kind, B, I, H, biases, rng_for("cell", kind, B, I, H, biases))
    ref = cell_forward(kind, args, "reference")
    out = cell_forward(kind, to_impl(impl, CELL_OP[kind], cast(args, dtype)), impl)
    assert_all_close(out, ref, dtype, CELL_OP[kind])


@pytest.mark.parametrize("B,I,H,biases", CELL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,impl", kind_impl_params(
    {kind: f"{op}_backward" for kind, op in CELL_OP.items()}))
def test_cell_backward_matches_reference(kind, impl, dtype, B, I, H, biases):
    rng = rng_for("cell_backward", kind, B, I, H, biases)
    args = cell_args(kind, B, I, H, biases, rng)
    grads = cell_output_grads(kind, B, H, rng)
    ref = cell_backward(kind, grads, args, "reference")
    op = f"{CELL_OP[kind]}_backward"
    out = cell_backward(kind, to_impl(impl, op, cast(grads, dtype)),
                        to_impl(impl, op, cast(args, dtype)), impl)
    assert_all_close(out, ref, dtype, op)


@pytest.mark.parametrize("kind,impl", kind_impl_params(
    {kind: f"{op}_backward" for kind, op in CELL_OP.items()}, include_reference=True))
def test_cell_backward_matches_finite_differences(kind, impl):
    rng = rng_for("cell_fd", kind)
    args = cell_args(kind, 2, 3, 2, "both", rng)
    grads = cell_output_grads(kind, 2, 2, rng)

    def loss():
        return sum(float(np.sum(o * g))
                   for o, g in zip(cell_forward(kind, args, "reference"), grads))

    op = f"{CELL_OP[kind]}_backward"
    analytic = cell_backward(kind, to_impl(impl, op, grads), to_impl(impl, op, args), impl)
    check_grads(loss, dict(enumerate(analytic)), dict(enumerate(args)))


@pytest.mark.parametrize("kind,impl", kind_impl_params(CELL_OP))
def test_saturated_gates_give_finite_results_without_warnings(kind, impl):
    args = cell_args(kind, 3, 4, 5, "both", rng_for("saturated", kind))
    args[0] = args[0] * 1e4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cell_forward(kind, to_impl(impl, CELL_OP[kind], cast(args, "float32")), impl)
    assert_all_close(out, cell_forward(kind, args, "reference"), "float32", CELL_OP[kind])


def test_lstm_cell_backward_without_grad_c_equals_zero_grad_c():
    rng = rng_for("grad_c_none")
    args = cell_args("lstm", 2, 3, 4, "both", rng)
    grad_h = rng.standard_normal((2, 4))
    without = flattened(lstm_cell_backward(grad_h, None, *packed("lstm", args)))
    with_zero = flattened(lstm_cell_backward(grad_h, np.zeros((2, 4)), *packed("lstm", args)))
    for a, b in zip(without, with_zero):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- sequences

def seq_inputs(kind: str, T, B, I, H, num_layers, bidirectional, batch_first, biases, rng):
    """(input, initial states, params) in float64, params in torch's _flat_weights order."""
    G, D = GATES[kind], 2 if bidirectional else 1
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    states = [rng.standard_normal((num_layers * D, B, H))
              for _ in range(2 if kind == "lstm" else 1)]
    params = []
    for layer in range(num_layers):
        for _ in range(D):
            params += [rng.uniform(-0.8, 0.8, (G * H, I if layer == 0 else D * H)),
                       rng.uniform(-0.8, 0.8, (G * H, H))]
            if biases:
                params += [rng.uniform(-0.5, 0.5, G * H) for _ in range(2)]
    return x, states, params


def hx_of(kind, states):
    if states is None:
        return None
    return tuple(states) if kind == "lstm" else states[0]


def seq_kwargs(kind, case) -> dict:
    kw = {k: case[k] for k in SEQ_ARGS if k in case}
    if kind.startswith("rnn_"):
        kw["nonlinearity"] = kind[4:]
    return kw


def seq_forward(kind, x, states, params, impl, **kw) -> tuple:
    """(output, h_n[, c_n])."""
    fn = {"lstm": lstm, "gru": gru}.get(kind, rnn)
    out, final = fn(x, hx_of(kind, states), params, impl=impl, **kw)
    return (out, *final) if kind == "lstm" else (out, final)


def seq_backward(kind, grads, x, states, params, impl, **kw) -> tuple:
    """(grad_input, grad_h0[, grad_c0], *grad_params)."""
    fn = {"lstm": lstm_backward, "gru": gru_backward}.get(kind, rnn_backward)
    gx, ghx, gparams = fn(*grads, x, hx_of(kind, states), params, impl=impl, **kw)
    assert len(gparams) == len(params)
    return (gx, *as_tuple(ghx), *gparams)


def seq_output_grads(kind, x, states, params, c, rng) -> list:
    outs = seq_forward(kind, x, states, params, "reference", **seq_kwargs(kind, c))
    return [rng.standard_normal(o.shape) for o in outs]


def case(T, B, I, H, num_layers, bidirectional=False, batch_first=False, biases=True,
         dropout=0.0, id=None):
    values = dict(T=T, B=B, I=I, H=H, num_layers=num_layers, bidirectional=bidirectional,
                  batch_first=batch_first, biases=biases)
    if dropout:
        values.update(dropout=dropout, training=True, seed=7)
    return pytest.param(values, id=id)


SEQ_CASES = [
    case(4, 3, 5, 4, 1, id="T4-B3-I5-H4"),
    case(1, 1, 3, 2, 2, bidirectional=True, id="T1-B1-L2-bidir"),
    case(5, 2, 3, 3, 3, bidirectional=True, batch_first=True, biases=False,
         id="L3-bidir-batch_first-nobias"),
    case(3, 1, 1, 1, 2, batch_first=True, id="B1-I1-H1-L2-batch_first"),
    case(6, 4, 7, 5, 3, bidirectional=True, dropout=0.4, id="L3-bidir-dropout"),
]


def seq_case_inputs(kind, c, rng):
    return seq_inputs(kind, c["T"], c["B"], c["I"], c["H"], c["num_layers"],
                      c["bidirectional"], c["batch_first"], c["biases"], rng)


@pytest.mark.parametrize("c", SEQ_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,impl", kind_impl_params(SEQ_OP))
def test_sequence_matches_reference(kind, impl, dtype, c):
    x, states, params = seq_case_inputs(kind, c, rng_for("seq", kind, c))
    kw = seq_kwargs(kind, c)
    ref = seq_forward(kind, x, states, params, "reference", **kw)
    op = SEQ_OP[kind]
    out = seq_forward(kind, *to_impl(impl, op, cast([x], dtype)),
                      to_impl(impl, op, cast(states, dtype)),
                      to_impl(impl, op, cast(params, dtype)), impl, **kw)
    assert_all_close(out, ref, dtype, op)


@pytest.mark.parametrize("c", SEQ_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,impl", kind_impl_params(
    {kind: f"{op}_backward" for kind, op in SEQ_OP.items()}))
def test_sequence_backward_matches_reference(kind, impl, dtype, c):
    rng = rng_for("seq_backward", kind, c)
    x, states, params = seq_case_inputs(kind, c, rng)
    kw = seq_kwargs(kind, c)
    grads = seq_output_grads(kind, x, states, params, c, rng)
    ref = seq_backward(kind, grads, x, states, params, "reference", **kw)
    op = f"{SEQ_OP[kind]}_backward"
    out = seq_backward(kind, to_impl(impl, op, cast(grads, dtype)),
                       *to_impl(impl, op, cast([x], dtype)),
                       to_impl(impl, op, cast(states, dtype)),
                       to_impl(impl, op, cast(params, dtype)), impl, **kw)
    assert_all_close(out, ref, dtype, op)


FD_CASE = dict(T=3, B=2, I=3, H=2, num_layers=2, bidirectional=True, batch_first=True,
               biases=True, dropout=0.25, training=True, seed=3)


@pytest.mark.parametrize("kind,impl", kind_impl_params(
    {kind: f"{op}_backward" for kind, op in SEQ_OP.items()}, include_reference=True))
def test_sequence_backward_matches_finite_differences(kind, impl):
    rng = rng_for("seq_fd", kind)
    x, states, params = seq_case_inputs(kind, FD_CASE, rng)
    kw = seq_kwargs(kind, FD_CASE)
    grads = seq_output_grads(kind, x, states, params, FD_CASE, rng)

    def loss():
        outs = seq_forward(kind, x, states, params, "reference", **kw)
        return sum(float(np.sum(o * g)) for o, g in zip(outs, grads))

    op = f"{SEQ_OP[kind]}_backward"
    analytic = seq_backward(kind, to_impl(impl, op, grads), *to_impl(impl, op, [x]),
                            to_impl(impl, op, states), to_impl(impl, op, params), impl, **kw)
    check_grads(loss, dict(enumerate(analytic)), dict(enumerate([x, *states, *params])))


# --------------------------------------------------------------------------- reserve

RESERVE_CASE = dict(T=4, B=3, I=2, H=3, num_layers=2, bidirectional=True, batch_first=True,
                    biases=True, dropout=0.3, training=True, seed=5)


@pytest.mark.parametrize("kind,impl", kind_impl_params(SEQ_OP, include_reference=True))
def test_backward_from_a_reserve_equals_the_recomputing_backward(kind, impl):
    rng = rng_for("reserve", kind)
    x, states, params = seq_case_inputs(kind, RESERVE_CASE, rng)
    kw = seq_kwargs(kind, RESERVE_CASE)
    grads = seq_output_grads(kind, x, states, params, RESERVE_CASE, rng)
    op = SEQ_OP[kind]
    x, = to_impl(impl, op, [x])
    states, params, grads = (to_impl(impl, op, a) for a in (states, params, grads))
    reserve = Reserve()
    seq_forward(kind, x, states, params, impl, reserve=reserve, **kw)
    assert reserve.impl == impl and reserve.saved
    recomputed = seq_backward(kind, grads, x, states, params, impl, **kw)
    for _ in range(2):  # a backward leaves the reserve as it found it
        from_reserve = seq_backward(kind, grads, x, states, params, None, reserve=reserve, **kw)
        assert_all_close(from_reserve, [backend.to_numpy(a) for a in recomputed], "float64", op)


def test_backward_from_a_reserve_does_not_run_the_forward_again(monkeypatch):
    from gpuconv.kernels import _rnn_loop
    rng = rng_for("reserve_spy")
    x, states, params = seq_case_inputs("lstm", RESERVE_CASE, rng)
    kw = seq_kwargs("lstm", RESERVE_CASE)
    grads = seq_output_grads("lstm", x, states, params, RESERVE_CASE, rng)
    reserve = Reserve()
    seq_forward("lstm", x, states, params, "numpy", reserve=reserve, **kw)
    calls = []
    forward = _rnn_loop._forward
    monkeypatch.setattr(_rnn_loop, "_forward", lambda *a: calls.append(1) or forward(*a))
    seq_backward("lstm", grads, x, states, params, None, reserve=reserve, **kw)
    assert calls == []
    seq_backward("lstm", grads, x, states, params, "numpy", **kw)
    assert calls == [1]


@pytest.mark.parametrize("mutate, error, message", [
    (lambda r, x: (r, x[:, :2]), ValueError, "of a forward on other inputs"),
    (lambda r, x: (Reserve(), x), ValueError, "of a forward on other inputs"),
    (lambda r, x: ([], x), TypeError, "reserve must be a gpuconv.functional.Reserve"),
], ids=["other-shape", "empty", "not-a-reserve"])
def test_a_reserve_that_does_not_match_the_backward_is_refused(mutate, error, message):
    rng = rng_for("reserve_errors")
    x, states, params = seq_case_inputs("gru", RESERVE_CASE, rng)
    kw = seq_kwargs("gru", RESERVE_CASE)
    reserve = Reserve()
    seq_forward("gru", x, states, params, "numpy", reserve=reserve, **kw)
    reserve, x = mutate(reserve, x)
    with pytest.raises(error, match=message):
        gru_backward(None, None, x, states[0], params, reserve=reserve, **kw)


def test_a_reserve_of_another_nonlinearity_or_impl_is_refused():
    rng = rng_for("reserve_ops")
    x, states, params = seq_case_inputs("rnn_tanh", RESERVE_CASE, rng)
    kw = seq_kwargs("rnn_tanh", RESERVE_CASE)
    reserve = Reserve()
    rnn(x, states[0], params, reserve=reserve, impl="numpy", **kw)
    with pytest.raises(ValueError, match="rnn_backward: reserve holds Reserve.rnn"):
        rnn_backward(None, None, x, states[0], params, reserve=reserve,
                     **{**kw, "nonlinearity": "relu"})
    with pytest.raises(ValueError, match="impl 'reference' cannot use a reserve made by impl "
                                         "'numpy'"):
        rnn_backward(None, None, x, states[0], params, reserve=reserve, impl="reference", **kw)


def test_batch_first_is_the_transposed_time_major_sequence():
    rng = rng_for("batch_first")
    x, states, params = seq_inputs("lstm", 4, 3, 2, 3, 2, True, False, True, rng)
    grads = seq_output_grads("lstm", x, states, params, {"num_layers": 2, "bidirectional": True},
                             rng)
    kw = dict(num_layers=2, bidirectional=True)
    outs = seq_forward("lstm", x, states, params, None, **kw)
    outs_bf = seq_forward("lstm", x.swapaxes(0, 1), states, params, None, batch_first=True, **kw)
    np.testing.assert_allclose(outs_bf[0], outs[0].swapaxes(0, 1), rtol=1e-12)
    back = seq_backward("lstm", grads, x, states, params, None, **kw)
    back_bf = seq_backward("lstm", [grads[0].swapaxes(0, 1), *grads[1:]], x.swapaxes(0, 1),
                           states, params, None, batch_first=True, **kw)
    np.testing.assert_allclose(back_bf[0], back[0].swapaxes(0, 1), rtol=1e-12)
    for a, b in zip(back_bf[1:], back[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_hx_is_a_zero_state_without_gradient(kind):
    rng = rng_for("hx_none", kind)
    x, states, params = seq_inputs(kind, 3, 2, 3, 4, 2, False, False, True, rng)
    zeros = [np.zeros_like(s) for s in states]
    kw = seq_kwargs(kind, {"num_layers": 2})
    for a, b in zip(seq_forward(kind, x, None, params, None, **kw),
                    seq_forward(kind, x, zeros, params, None, **kw)):
        np.testing.assert_array_equal(a, b)
    fn = {"lstm": lstm_backward, "gru": gru_backward}.get(kind, rnn_backward)
    grads = seq_output_grads(kind, x, states, params, {"num_layers": 2}, rng)
    _, grad_hx, _ = fn(*grads, x, None, params, **kw)
    assert grad_hx is None


@pytest.mark.parametrize("kind", KINDS)
def test_missing_output_grads_count_as_zero(kind):
    rng = rng_for("grads_none", kind)
    x, states, params = seq_inputs(kind, 3, 2, 3, 4, 1, True, False, True, rng)
    kw = seq_kwargs(kind, {"bidirectional": True})
    grads = seq_output_grads(kind, x, states, params, {"bidirectional": True}, rng)
    only_h_n = [None, grads[1]] + [None] * (len(grads) - 2)
    zeros_but_h_n = [np.zeros_like(grads[0]), grads[1]] + [np.zeros_like(g) for g in grads[2:]]
    for a, b in zip(seq_backward(kind, only_h_n, x, states, params, None, **kw),
                    seq_backward(kind, zeros_but_h_n, x, states, params, None, **kw)):
        np.testing.assert_array_equal(a, b)


def noncontiguous(a):
    """The same values in a negatively strided, non-contiguous view."""
    big = np.zeros(a.shape + (2,), a.dtype)
    big[..., 0] = a[tuple(slice(None, None, -1) for _ in a.shape)]
    return big[..., 0][tuple(slice(None, None, -1) for _ in a.shape)]


# NumPy views: strides are a property of CPU memory here.
@pytest.mark.parametrize("kind,impl", kind_impl_params(SEQ_OP, include_reference=True,
                                                       devices=("cpu",)))
def test_sequence_accepts_noncontiguous_inputs(kind, impl):
    rng = rng_for("noncontiguous", kind)
    c = {"num_layers": 2, "bidirectional": True}
    x, states, params = seq_inputs(kind, 4, 3, 5, 3, 2, True, False, True, rng)
    grads = seq_output_grads(kind, x, states, params, c, rng)
    kw = seq_kwargs(kind, c)
    views = [noncontiguous(a) for a in (x, *states, *params)]
    assert not any(v.flags.c_contiguous for v in views)
    xv, statesv, paramsv = views[0], views[1:1 + len(states)], views[1 + len(states):]
    assert_all_close(seq_forward(kind, xv, statesv, paramsv, impl, **kw),
                     seq_forward(kind, x, states, params, impl, **kw), "float64", "forward")
    assert_all_close(
        seq_backward(kind, [noncontiguous(g) for g in grads], xv, statesv, paramsv, impl, **kw),
        seq_backward(kind, grads, x, states, params, impl, **kw), "float64", "backward")


@pytest.mark.parametrize("kind,impl", kind_impl_params(CELL_OP, include_reference=True,
                                                       devices=("cpu",)))
def test_cell_accepts_noncontiguous_inputs(kind, impl):
    rng = rng_for("cell_noncontiguous", kind)
    args = cell_args(kind, 3, 4, 5, "both", rng)
    grads = cell_output_grads(kind, 3, 5, rng)
    views = [noncontiguous(a) for a in args]
    assert_all_close(cell_forward(kind, views, impl), cell_forward(kind, args, impl),
                     "float64", "forward")
    assert_all_close(cell_backward(kind, [noncontiguous(g) for g in grads], views, impl),
                     cell_backward(kind, grads, args, impl), "float64", "backward")


# --------------------------------------------------------------------------- dropout

DROPOUT = dict(num_layers=3, bidirectional=True, dropout=0.5, training=True)


def test_dropout_with_the_same_seed_gives_the_same_output():
    x, states, params = seq_inputs("gru", 4, 3, 2, 3, 3, True, False, True, rng_for("drop"))
    a = seq_forward("gru", x, states, params, None, seed=11, **DROPOUT)
    b = seq_forward("gru", x, states, params, None, seed=11, **DROPOUT)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_dropout_with_another_seed_gives_another_output():
    x, states, params = seq_inputs("gru", 4, 3, 2, 3, 3, True, False, True, rng_for("drop"))
    a = seq_forward("gru", x, states, params, None, seed=11, **DROPOUT)
    b = seq_forward("gru", x, states, params, None, seed=12, **DROPOUT)
    assert not np.allclose(a[0], b[0])


def test_dropout_is_off_when_not_training():
    x, states, params = seq_inputs("gru", 4, 3, 2, 3, 3, True, False, True, rng_for("drop"))
    kw = dict(DROPOUT, training=False)
    a = seq_forward("gru", x, states, params, None, **kw)
    b = seq_forward("gru", x, states, params, None, **dict(kw, dropout=0.0))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def documented_mask(seed, layer, shape, p):
    u = np.random.Generator(np.random.Philox(key=seed + layer)).random(shape)
    return np.where(u >= p, 1 / (1 - p) if p < 1 else 0.0, 0.0)


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_dropout_multiplies_each_layer_output_but_the_last_by_the_documented_mask(p):
    """A 2-layer batch-first LSTM equals layer 0, then the time-major Philox mask, then
    layer 1 run on their own."""
    T, B, I, H = 5, 3, 2, 4
    x, (h0, c0), params = seq_inputs("lstm", T, B, I, H, 2, True, True, True, rng_for("mask"))
    out, (h_n, c_n) = lstm(x, (h0, c0), params, 2, True, True, p, True, 5)
    mid, (h_a, c_a) = lstm(x, (h0[:2], c0[:2]), params[:8], 1, True, True)
    mask = documented_mask(5, 0, (T, B, 2 * H), p).swapaxes(0, 1)
    top, (h_b, c_b) = lstm(mid * mask, (h0[2:], c0[2:]), params[8:], 1, True, True)
    np.testing.assert_allclose(out, top, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(h_n, np.concatenate([h_a, h_b]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c_n, np.concatenate([c_a, c_b]), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- against torch

def torch_module(torch, kind, I, H, num_layers=1, bidirectional=False, batch_first=False,
                 bias=True):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
              bias=bias)
    if kind == "lstm":
        return torch.nn.LSTM(I, H, **kw).double()
    if kind == "gru":
        return torch.nn.GRU(I, H, **kw).double()
    return torch.nn.RNN(I, H, nonlinearity=kind[4:], **kw).double()


def torch_cell(torch, kind, I, H, bias):
    if kind == "lstm":
        return torch.nn.LSTMCell(I, H, bias=bias).double()
    if kind == "gru":
        return torch.nn.GRUCell(I, H, bias=bias).double()
    return torch.nn.RNNCell(I, H, bias=bias, nonlinearity=kind[4:]).double()


def torch_grads(torch, outs, grads, leaves) -> list:
    loss = sum((o * torch.from_numpy(g)).sum() for o, g in zip(outs, grads))
    return [g.numpy() for g in torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_reference_cell_matches_torch(kind, bias):
    torch = pytest.importorskip("torch")
    B, I, H = 3, 4, 5
    rng = rng_for("torch_cell", kind, bias)
    cell = torch_cell(torch, kind, I, H, bias)
    weights = [p.detach().numpy() for p in cell.parameters()] + ([] if bias else [None, None])
    inputs = [rng.standard_normal((B, I))] + [rng.standard_normal((B, H))
                                              for _ in range(2 if kind == "lstm" else 1)]
    leaves = [torch.tensor(a, requires_grad=True) for a in inputs]
    t_out = as_tuple(cell(leaves[0], tuple(leaves[1:]) if kind == "lstm" else leaves[1]))
    args = inputs + weights
    out = cell_forward(kind, args, "reference")
    for o, t in zip(out, t_out):
        np.testing.assert_allclose(o, t.detach().numpy(), rtol=1e-12, atol=1e-14)
    grads = cell_output_grads(kind, B, H, rng)
    expected = torch_grads(torch, t_out, grads, leaves + list(cell.parameters()))
    got = [g for g in cell_backward(kind, grads, args, "reference") if g is not None]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


TORCH_CASES = [case(4, 3, 5, 4, 2, bidirectional=True, batch_first=True, id="L2-bidir-bf"),
               case(3, 2, 3, 2, 3, biases=False, id="L3-nobias"),
               case(1, 1, 2, 3, 1, bidirectional=True, id="T1-B1-bidir")]


@pytest.mark.parametrize("c", TORCH_CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_reference_sequence_matches_torch(kind, c):
    torch = pytest.importorskip("torch")
    rng = rng_for("torch_seq", kind, c)
    module = torch_module(torch, kind, c["I"], c["H"], c["num_layers"], c["bidirectional"],
                          c["batch_first"], c["biases"])
    params = [p.detach().numpy() for p in module._flat_weights]
    x, states, _ = seq_case_inputs(kind, c, rng)
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, *states)]
    t_out, t_final = module(leaves[0], tuple(leaves[1:]) if kind == "lstm" else leaves[1])
    t_outs = (t_out, *as_tuple(t_final))
    kw = seq_kwargs(kind, c)
    outs = seq_forward(kind, x, states, params, "reference", **kw)
    for o, t in zip(outs, t_outs, strict=True):
        np.testing.assert_allclose(o, t.detach().numpy(), rtol=1e-12, atol=1e-14)
    grads = [rng.standard_normal(o.shape) for o in outs]
    expected = torch_grads(torch, t_outs, grads, leaves + list(module._flat_weights))
    got = seq_backward(kind, grads, x, states, params, "reference", **kw)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


def test_torch_tensors_in_give_torch_tensors_out():
    torch = pytest.importorskip("torch")
    module = torch_module(torch, "lstm", 3, 2, num_layers=2)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    out, (h_n, c_n) = lstm(x, None, [p.detach() for p in module._flat_weights], 2)
    assert all(isinstance(t, torch.Tensor) for t in (out, h_n, c_n))
    np.testing.assert_allclose(out.numpy(), module(x)[0].detach().numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- registry

RNN_OPS = [op for kind in ("lstm", "gru", "rnn_tanh", "rnn_relu")
           for op in (CELL_OP[kind], f"{CELL_OP[kind]}_backward")] + [
    op for name in ("lstm", "gru", "rnn") for op in (name, f"{name}_backward")]


@pytest.mark.parametrize("op", RNN_OPS)
def test_op_has_reference_and_numpy_impls(op):
    assert {"reference", "numpy"} <= set(kernels.available(op))
    assert kernels.select(op, None, np.zeros(1)).name == "numpy"


# --------------------------------------------------------------------------- validation

def valid_cell(kind="lstm"):
    args = cell_args(kind, 2, 3, 4, "both", rng_for("valid_cell"))
    names = ["input", "hx", "cx"] if kind == "lstm" else ["input", "hx"]
    return dict(zip(names + ["weight_ih", "weight_hh", "bias_ih", "bias_hh"], args))


def shrink_last(a):
    return a[..., :-1]


CELL_ERRORS = [
    ("input_rank", "lstm", lambda a: a.update(input=a["input"][None]), ValueError,
     "input must have 1 or 2 dimensions"),
    ("hx_rank", "gru", lambda a: a.update(hx=a["hx"][0]), ValueError,
     "hx must have 2 dimensions"),
    ("input_size", "lstm", lambda a: a.update(weight_ih=shrink_last(a["weight_ih"])),
     ValueError, "weight_ih has 2 columns but the input size"),
    ("hx_hidden_size", "lstm", lambda a: a.update(hx=a["hx"][:, :3], cx=a["cx"][:, :3]),
     ValueError, "weight_ih must have 12 rows"),
    ("hx_batch", "lstm", lambda a: a.update(hx=a["hx"][:1]), ValueError, "hx must have shape"),
    ("cx_shape", "lstm", lambda a: a.update(cx=shrink_last(a["cx"])), ValueError,
     "cx must have shape"),
    ("cx_missing", "lstm", lambda a: a.update(cx=None), TypeError, "cx must be an array"),
    ("hx_not_a_pair", "lstm", lambda a: a.update(cx="no pair"), TypeError,
     r"hx must be a pair \(h, c\)"),
    ("weight_hh_shape", "lstm", lambda a: a.update(weight_hh=shrink_last(a["weight_hh"])),
     ValueError, "weight_hh must have shape"),
    ("bias_shape", "lstm", lambda a: a.update(bias_hh=a["bias_hh"][:-1]), ValueError,
     "bias_hh must have shape"),
    ("lstm_weight_ih_rows", "lstm", lambda a: a.update(weight_ih=a["weight_ih"][:12]),
     ValueError, "weight_ih must have 16 rows"),
    ("gru_weight_ih_rows", "gru", lambda a: a.update(weight_ih=a["weight_ih"][:8]),
     ValueError, "weight_ih must have 12 rows"),
    ("integer_dtype", "gru", lambda a: a.update(input=a["input"].astype(np.int64)), TypeError,
     "floating-point"),
    ("dtype_mismatch", "rnn_tanh", lambda a: a.update(weight_hh=a["weight_hh"].astype("f4")),
     TypeError, "weight_hh has dtype float32"),
]


@pytest.mark.parametrize("kind,change,error,match",
                         [pytest.param(*c[1:], id=c[0]) for c in CELL_ERRORS])
def test_cell_rejects(kind, change, error, match):
    args = valid_cell(kind)
    change(args)
    if kind == "lstm":
        cx = args.pop("cx")
        args["hx"] = args["hx"] if isinstance(cx, str) else (args["hx"], cx)
    with pytest.raises(error, match=match):
        CELL[kind](**args)


def test_cell_backward_rejects_grad_h_of_the_wrong_shape():
    args = valid_cell("gru")
    with pytest.raises(ValueError, match="grad_h must have shape"):
        gru_cell_backward(np.zeros((2, 3)), **args)


def valid_seq(kind="lstm"):
    x, states, params = seq_inputs(kind, 3, 2, 3, 4, 2, True, False, True, rng_for("valid"))
    return dict(input=x, hx=hx_of(kind, states), params=params, num_layers=2,
                bidirectional=True)


def replace_param(i, fn):
    def change(a):
        a["params"] = [fn(p) if j == i else p for j, p in enumerate(a["params"])]
    return change


SEQ_ERRORS = [
    ("input_rank", "lstm", lambda a: a.update(input=a["input"][0, 0]), ValueError,
     "input must have 2 or 3 dimensions"),
    ("input_empty", "lstm", lambda a: a.update(input=a["input"][:0]), ValueError,
     "at least one time step"),
    ("unbatched_hx_rank", "gru", lambda a: a.update(input=a["input"][:, 0]), ValueError,
     "hx must have 2 dimensions"),
    ("input_size", "lstm", replace_param(0, shrink_last), ValueError,
     r"params\[0\] \(weight_ih_l0\) has 2 columns but the input size is 3"),
    ("layer_input_size", "gru", replace_param(12, shrink_last), ValueError,
     r"weight_ih_l1_reverse\) has 7 columns but layer 1's input size"),
    ("hidden_size_weight_hh", "lstm", replace_param(5, lambda p: p[:, :3]), ValueError,
     r"params\[5\] \(weight_hh_l0_reverse\) must have shape \(16, 4\)"),
    ("hidden_size_bias", "gru", replace_param(3, lambda p: p[:-3]), ValueError,
     r"params\[3\] \(bias_hh_l0\) must have shape \(12,\)"),
    ("lstm_weight_ih_rows", "lstm", replace_param(4, lambda p: p[:12]), ValueError,
     r"weight_ih_l0_reverse\) must have 16 rows"),
    ("gru_weight_ih_rows", "gru", replace_param(0, lambda p: p[:8]), ValueError,
     r"weight_ih_l0\) must have 12 rows"),
    ("params_count", "lstm", lambda a: a.update(params=a["params"][:-1]), ValueError,
     "params must hold 16 arrays .* or 8 without biases, got 15"),
    ("params_count_for_num_layers", "gru", lambda a: a.update(num_layers=3), ValueError,
     "params must hold 24 arrays"),
    ("params_count_for_bidirectional", "gru", lambda a: a.update(bidirectional=False),
     ValueError, "params must hold 8 arrays"),
    ("params_not_a_list", "gru", lambda a: a.update(params=np.zeros(3)), TypeError,
     "params must be a list"),
    ("hx_shape", "gru", lambda a: a.update(hx=a["hx"][:3]), ValueError,
     r"hx must have shape \(4, 2, 4\)"),
    ("c0_shape", "lstm", lambda a: a.update(hx=(a["hx"][0], a["hx"][1][:, :1])), ValueError,
     r"c0 must have shape \(4, 2, 4\)"),
    ("lstm_hx_not_a_pair", "lstm", lambda a: a.update(hx=a["hx"][0]), TypeError,
     r"pair \(h0, c0\)"),
    ("integer_dtype", "lstm", lambda a: a.update(input=a["input"].astype(np.int32)), TypeError,
     "floating-point"),
    ("dtype_mismatch", "gru", replace_param(1, lambda p: p.astype(np.float32)), TypeError,
     "has dtype float32 but input has dtype float64"),
    ("dropout_above_one", "lstm", lambda a: a.update(dropout=1.5), ValueError,
     "dropout must be <= 1"),
    ("dropout_negative", "lstm", lambda a: a.update(dropout=-0.1), ValueError,
     "dropout must be >= 0"),
    ("num_layers_zero", "gru", lambda a: a.update(num_layers=0), ValueError,
     "num_layers must be a positive int"),
    ("bidirectional_not_bool", "gru", lambda a: a.update(bidirectional=1), TypeError,
     "bidirectional must be a bool"),
    ("seed_negative", "gru", lambda a: a.update(seed=-1), ValueError, "seed must be >= 0"),
    ("nonlinearity", "rnn_tanh", lambda a: a.update(nonlinearity="sigmoid"), ValueError,
     "nonlinearity must be 'tanh' or 'relu'"),
]


@pytest.mark.parametrize("kind,change,error,match",
                         [pytest.param(*c[1:], id=c[0]) for c in SEQ_ERRORS])
def test_sequence_rejects(kind, change, error, match):
    args = valid_seq(kind)
    change(args)
    fn = {"lstm": lstm, "gru": gru}.get(kind, rnn)
    with pytest.raises(error, match=match):
        fn(**args)


def test_sequence_backward_rejects_grad_output_of_the_wrong_shape():
    args = valid_seq("gru")
    with pytest.raises(ValueError, match=r"grad_output must have shape \(3, 2, 8\)"):
        gru_backward(np.zeros((3, 2, 4)), None, **args)
