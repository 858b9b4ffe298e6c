"""gpuconv.nn: layers with explicit backward.

Each layer's forward equals the functional op it wraps; its backward (input and parameter
gradients) agrees with central finite differences in float64; its parameter names and
shapes are torch's, and with torch's weights copied in it gives torch's outputs and
gradients. Then the Module machinery: gradient accumulation, state_dict, train/eval, to().
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from gpuconv import backend, functional as F, nn
from gpuconv.nn.module import accumulate_grad
from support import FD_TOL, assert_close, check_grads, numerical_grad, rel_err, rng_for

F64 = np.float64


def _randn(rng, shape, dtype=F64):
    return rng.standard_normal(shape).astype(dtype)


def _tie_free(rng, shape):
    """Distinct values (a shuffled arange), so max pooling has no ties."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0).astype(F64)


def _outputs(out) -> list:
    """The arrays of a forward's result, flattened (RNNs return nested tuples)."""
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _outputs(o)]
    return [out]


# --------------------------------------------------------------------------- cases
# (id, constructor, input shape, input kind); layers are built in float64.

CASES = [
    ("conv1d", lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1, dtype=F64), (2, 2, 7), "randn"),
    ("conv1d_same_nobias", lambda: nn.Conv1d(2, 2, 4, padding="same", bias=False, dtype=F64),
     (1, 2, 6), "randn"),
    ("conv2d_groups_dilation", lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                                 dilation=(1, 2), groups=2, dtype=F64),
     (2, 4, 6, 7), "randn"),
    ("conv2d_nobias", lambda: nn.Conv2d(3, 2, 3, bias=False, dtype=F64), (1, 3, 4, 5), "randn"),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                    output_padding=1, groups=2, dtype=F64),
     (2, 4, 3, 3), "randn"),
    ("linear", lambda: nn.Linear(5, 3, dtype=F64), (4, 5), "randn"),
    ("linear_3d_nobias", lambda: nn.Linear(5, 3, bias=False, dtype=F64), (2, 3, 5), "randn"),
    ("relu", lambda: nn.ReLU(), (3, 4), "randn"),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), (3, 4), "randn"),
    ("elu", lambda: nn.ELU(0.5), (3, 4), "randn"),
    ("sigmoid", lambda: nn.Sigmoid(), (3, 4), "randn"),
    ("tanh", lambda: nn.Tanh(), (3, 4), "randn"),
    ("softmax", lambda: nn.Softmax(dim=1), (3, 4), "randn"),
    ("log_softmax", lambda: nn.LogSoftmax(dim=-1), (2, 3, 4), "randn"),
    ("max_pool1d", lambda: nn.MaxPool1d(3, stride=2, padding=1), (2, 2, 7), "tie_free"),
    ("max_pool2d", lambda: nn.MaxPool2d(2), (2, 2, 4, 6), "tie_free"),
    ("max_pool2d_ceil_dilation", lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True),
     (1, 2, 7, 6), "tie_free"),
    ("avg_pool1d", lambda: nn.AvgPool1d(3, stride=2, padding=1), (2, 2, 7), "randn"),
    ("avg_pool2d_exclude_pad",
     lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 5, 6), "randn"),
    ("adaptive_avg_pool1d", lambda: nn.AdaptiveAvgPool1d(3), (2, 2, 7), "randn"),
    ("adaptive_avg_pool2d", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7), "randn"),
    ("batch_norm1d_2d_input", lambda: nn.BatchNorm1d(3, dtype=F64), (4, 3), "randn"),
    ("batch_norm1d_3d_input", lambda: nn.BatchNorm1d(3, dtype=F64), (2, 3, 5), "randn"),
    ("batch_norm2d", lambda: nn.BatchNorm2d(3, dtype=F64), (2, 3, 3, 3), "randn"),
    ("batch_norm2d_no_affine", lambda: nn.BatchNorm2d(2, affine=False, dtype=F64),
     (2, 2, 3, 3), "randn"),
    ("batch_norm2d_untracked", lambda: nn.BatchNorm2d(2, track_running_stats=False, dtype=F64),
     (2, 2, 3, 3), "randn"),
    ("local_response_norm", lambda: nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=2.0),
     (2, 5, 3, 3), "randn"),
    ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2), "randn"),
    ("flatten_middle", lambda: nn.Flatten(1, 2), (2, 3, 2, 2), "randn"),
    ("basic_block_projection", lambda: nn.BasicBlock(2, 3, stride=2, dtype=F64), (2, 2, 5, 5),
     "randn"),
    ("basic_block_identity", lambda: nn.BasicBlock(2, 2, dtype=F64), (2, 2, 4, 4), "randn"),
    ("sequential", lambda: nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, dtype=F64), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(12, 4, dtype=F64)), (2, 2, 4, 4), "randn"),
]


def _input(rng, shape, kind):
    return _tie_free(rng, shape) if kind == "tie_free" else _randn(rng, shape)


def _case_params():
    return [pytest.param(make, shape, kind, id=name) for name, make, shape, kind in CASES]


@pytest.mark.parametrize("make, shape, kind", _case_params())
def test_backward_matches_finite_differences(make, shape, kind):
    rng = rng_for("fd", shape, kind)
    layer = make()
    x = _input(rng, shape, kind)
    g = _randn(rng, layer(x).shape)
    gx = layer.backward(g)
    params = dict(layer.named_parameters())

    def loss():
        return float(np.sum(layer(x) * g))

    check_grads(loss, {"input": gx, **{n: p.grad for n, p in params.items()}},
                {"input": x, **{n: p.data for n, p in params.items()}})


# Forward vs the functional op each layer wraps (float32, the layer's own weights).
def _w(layer, name):
    p = getattr(layer, name)
    return None if p is None else p.data


FUNCTIONAL = [
    ("conv1d", lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 9),
     lambda m, x: F.conv1d(x, _w(m, "weight"), _w(m, "bias"), 2, 1)),
    ("conv2d", lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (2, 4, 5, 5),
     lambda m, x: F.conv2d(x, _w(m, "weight"), _w(m, "bias"), 1, 2, 2, 2)),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(3, 2, 3, stride=2), (1, 3, 4, 4),
     lambda m, x: F.conv_transpose2d(x, _w(m, "weight"), _w(m, "bias"), 2)),
    ("linear", lambda: nn.Linear(6, 2), (3, 6),
     lambda m, x: F.linear(x, _w(m, "weight"), _w(m, "bias"))),
    ("leaky_relu", lambda: nn.LeakyReLU(0.3), (3, 6), lambda m, x: F.leaky_relu(x, 0.3)),
    ("softmax", lambda: nn.Softmax(0), (3, 6), lambda m, x: F.softmax(x, 0)),
    ("max_pool2d", lambda: nn.MaxPool2d(3, 2, 1), (1, 2, 6, 6),
     lambda m, x: F.max_pool2d(x, 3, 2, 1)),
    ("avg_pool2d", lambda: nn.AvgPool2d(2, divisor_override=3), (1, 2, 6, 6),
     lambda m, x: F.avg_pool2d(x, 2, 2, 0, False, True, 3)),
    ("adaptive_avg_pool2d", lambda: nn.AdaptiveAvgPool2d(3), (1, 2, 7, 5),
     lambda m, x: F.adaptive_avg_pool2d(x, 3)),
    ("batch_norm2d_eval", lambda: nn.BatchNorm2d(2).eval(), (2, 2, 3, 3),
     lambda m, x: F.batch_norm(x, m.running_mean, m.running_var, _w(m, "weight"),
                               _w(m, "bias"), False)),
    ("local_response_norm", lambda: nn.LocalResponseNorm(2), (1, 4, 2, 2),
     lambda m, x: F.local_response_norm(x, 2)),
]


@pytest.mark.parametrize("make, shape, functional", [
    pytest.param(m, s, f, id=name) for name, m, s, f in FUNCTIONAL])
def test_forward_equals_functional(make, shape, functional):
    layer = make()
    x = _randn(rng_for("functional", shape), shape, np.float32)
    out = layer(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, functional(layer, x))


# --------------------------------------------------------------------------- recurrent layers

RNN_CASES = [
    pytest.param(nn.RNN, dict(num_layers=2, bidirectional=True), id="rnn_2layer_bidir"),
    pytest.param(nn.RNN, dict(nonlinearity="relu", bias=False), id="rnn_relu_nobias"),
    pytest.param(nn.LSTM, dict(batch_first=True), id="lstm_batch_first"),
    pytest.param(nn.LSTM, dict(num_layers=2, bidirectional=True), id="lstm_2layer_bidir"),
    pytest.param(nn.GRU, dict(num_layers=2), id="gru_2layer"),
]


def _states(cls, rng, kw, batch, hidden):
    shape = (kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1), batch, hidden)
    if cls is nn.LSTM:
        return _randn(rng, shape), _randn(rng, shape)
    return _randn(rng, shape)


@pytest.mark.parametrize("cls, kw", RNN_CASES)
def test_recurrent_backward_matches_finite_differences(cls, kw):
    rng = rng_for("rnn-fd", cls.__name__, sorted(kw.items()))
    layer = cls(2, 3, dtype=F64, **kw)
    x = _randn(rng, (4, 2, 2))          # T=4, B=2 (or B=4, T=2 when batch_first)
    hx = _states(cls, rng, kw, 4 if kw.get("batch_first") else 2, 3)
    outs = _outputs(layer(x, hx))
    gs = [_randn(rng, o.shape) for o in outs]
    gx = layer.backward(*gs)
    grad_hx = layer.grad_hx if cls is nn.LSTM else (layer.grad_hx,)
    states = hx if cls is nn.LSTM else (hx,)

    def loss():
        return float(sum(np.sum(o * g) for o, g in zip(_outputs(layer(x, hx)), gs)))

    analytic = {"input": gx, **{f"h{i}": g for i, g in enumerate(grad_hx)},
                **{n: p.grad for n, p in layer.named_parameters()}}
    inputs = {"input": x, **{f"h{i}": s for i, s in enumerate(states)},
              **{n: p.data for n, p in layer.named_parameters()}}
    check_grads(loss, analytic, inputs)


def test_recurrent_backward_without_hx_leaves_no_state_grad():
    layer = nn.GRU(2, 3, dtype=F64)
    x = _randn(rng_for("gru-nohx"), (3, 2, 2))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    assert layer.grad_hx is None


def test_recurrent_dropout_masks_change_per_step_and_replay_from_seed():
    layer = nn.LSTM(2, 4, num_layers=2, dropout=0.5)
    x = _randn(rng_for("rnn-drop"), (5, 3, 2), np.float32)
    nn.manual_seed(11)
    first, _ = layer(x)
    second, _ = layer(x)
    nn.manual_seed(11)
    replay, _ = layer(x)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, replay)
    layer.eval()
    np.testing.assert_array_equal(layer(x)[0], layer(x)[0])


# --------------------------------------------------------------------------- losses

LOSSES = [
    pytest.param(lambda: nn.CrossEntropyLoss(), "classes", id="cross_entropy"),
    pytest.param(lambda: nn.CrossEntropyLoss(weight=np.array([1.0, 2.0, 0.5, 1.5]),
                                             label_smoothing=0.1, reduction="sum"),
                 "classes", id="cross_entropy_weighted_smoothed"),
    pytest.param(lambda: nn.CrossEntropyLoss(ignore_index=1), "classes", id="cross_entropy_ignore"),
    pytest.param(lambda: nn.NLLLoss(), "classes", id="nll"),
    pytest.param(lambda: nn.MSELoss(), "values", id="mse"),
    pytest.param(lambda: nn.L1Loss(reduction="sum"), "values", id="l1"),
]


@pytest.mark.parametrize("make, target_kind", LOSSES)
def test_loss_backward_matches_finite_differences(make, target_kind):
    rng = rng_for("loss", target_kind)
    loss_fn = make()
    x = _randn(rng, (5, 4))
    target = rng.integers(0, 4, 5) if target_kind == "classes" else _randn(rng, (5, 4))
    loss_fn(x, target)
    gx = loss_fn.backward(2.5)
    num = numerical_grad(lambda: 2.5 * float(loss_fn(x, target)), x)
    assert rel_err(gx, num) <= FD_TOL


def test_loss_returns_a_scalar_and_none_reduction_takes_an_array_grad():
    rng = rng_for("loss-none")
    x, t = _randn(rng, (3, 4)), _randn(rng, (3, 4))
    assert nn.MSELoss()(x, t).shape == ()
    loss_fn = nn.MSELoss(reduction="none")
    per_element = loss_fn(x, t)
    g = _randn(rng, per_element.shape)
    np.testing.assert_allclose(loss_fn.backward(g), 2 * g * (x - t))


# --------------------------------------------------------------------------- torch equivalence
# (constructor name, positional args, keyword args, input shape); the same arguments build
# ours and torch's.

TORCH_CASES = [
    ("Conv1d", (2, 4, 3), dict(stride=2, padding=1, dilation=2), (2, 2, 9)),
    ("Conv2d", (4, 6, 3), dict(padding=1, groups=2, bias=False), (2, 4, 5, 5)),
    ("Conv2d", (3, 4, (3, 2)), dict(stride=(2, 1), padding="valid"), (2, 3, 6, 5)),
    ("ConvTranspose2d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 3, 3)),
    ("Linear", (5, 3), {}, (4, 5)),
    ("BatchNorm1d", (3,), dict(momentum=0.3), (4, 3, 5)),
    ("BatchNorm2d", (3,), dict(eps=1e-3), (2, 3, 4, 4)),
    ("BatchNorm2d", (3,), dict(affine=False, track_running_stats=False), (2, 3, 4, 4)),
    ("LocalResponseNorm", (3,), dict(alpha=1e-2, k=2.0), (2, 5, 3, 3)),
    ("MaxPool2d", (3,), dict(stride=2, padding=1), (2, 2, 7, 7)),
    ("AvgPool1d", (3,), dict(stride=2, padding=1, count_include_pad=False), (2, 2, 7)),
    ("AdaptiveAvgPool1d", (3,), {}, (2, 2, 7)),
    ("AdaptiveAvgPool2d", ((2, 3),), {}, (2, 2, 5, 7)),
    ("ELU", (0.7,), {}, (3, 5)),
    ("LogSoftmax", (), dict(dim=1), (3, 5)),
    ("RNN", (3, 4), dict(num_layers=2, bidirectional=True), (5, 2, 3)),
    ("LSTM", (3, 4), dict(batch_first=True, num_layers=2), (2, 5, 3)),
    ("GRU", (3, 4), dict(bidirectional=True, bias=False), (5, 2, 3)),
]


def _torch_case_params():
    return [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(TORCH_CASES)]


def _torch_names(torch_module) -> list:
    return [(n, tuple(t.shape)) for n, t in torch_module.state_dict().items()]


@pytest.mark.parametrize("name, args, kwargs, shape", _torch_case_params())
def test_parameter_names_and_shapes_match_torch(name, args, kwargs, shape):
    torch = pytest.importorskip("torch")
    ours = getattr(nn, name)(*args, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert [(n, tuple(a.shape)) for n, a in ours.state_dict().items()] == _torch_names(theirs)


@pytest.mark.parametrize("name, args, kwargs, shape", _torch_case_params())
def test_outputs_and_gradients_match_torch_with_its_weights(name, args, kwargs, shape):
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    ours = getattr(nn, name)(*args, **kwargs).to(dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    rng = rng_for("torch", name, shape)
    x = _tie_free(rng, shape) if name.startswith("Max") else _randn(rng, shape)
    xt = torch.tensor(x, requires_grad=True)
    ref = _outputs(theirs(xt))
    out = _outputs(ours(x))
    gs = [_randn(rng, o.shape) for o in out]
    torch.autograd.backward(ref, [torch.tensor(g) for g in gs])
    gx = ours.backward(*gs)
    for o, r in zip(out, ref):
        assert_close(o, r.detach().numpy(), "float64", "output")
    assert_close(gx, xt.grad.numpy(), "float64", "grad_input")
    for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(p.grad, tp.grad.numpy(), "float64", f"grad of {n}")
    for (n, a), (_, ta) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert_close(a, ta.numpy(), "float64", f"state {n} after the step")


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Embedding(6, 3, padding_idx=2).double()
    ours = nn.Embedding(6, 3, padding_idx=2, dtype=F64)
    assert _torch_names(theirs) == [(n, tuple(a.shape)) for n, a in ours.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    idx = np.array([[0, 2, 5], [2, 2, 1]])
    ref = theirs(torch.tensor(idx))
    out = ours(idx)
    g = _randn(rng_for("emb"), out.shape)
    ref.backward(torch.tensor(g))
    assert ours.backward(g) is None
    assert_close(out, ref.detach().numpy(), "float64")
    assert_close(ours.weight.grad, theirs.weight.grad.numpy(), "float64")


def test_embedding_default_init_zeroes_the_padding_row():
    emb = nn.Embedding(5, 4, padding_idx=-1)
    assert emb.padding_idx == 4
    assert np.all(emb.weight.data[4] == 0) and np.all(emb.weight.data[:4] != 0)


def test_basic_block_matches_a_torch_replica():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TorchBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(2, 4, 3, 2, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(4)
            self.conv2 = tnn.Conv2d(4, 4, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(4)
            self.shortcut = tnn.Sequential(tnn.Conv2d(2, 4, 1, 2, bias=False), tnn.BatchNorm2d(4))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    theirs = TorchBlock().double()
    ours = nn.BasicBlock(2, 4, stride=2, dtype=F64)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    x = _randn(rng_for("block"), (2, 2, 5, 5))
    assert_close(ours(x), theirs(torch.tensor(x)).detach().numpy(), "float64")


# --------------------------------------------------------------------------- default init

@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Linear(400, 300), 400),
    (lambda: nn.Conv2d(16, 64, 5), 16 * 25),
    (lambda: nn.ConvTranspose2d(64, 16, 5), 16 * 25),
])
def test_default_init_bounds_follow_torch(make, fan_in):
    layer = make()
    bound = 1 / np.sqrt(fan_in)
    for p in (layer.weight.data, layer.bias.data):
        assert p.dtype == np.float32
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert abs(layer.weight.data.std() / (bound / np.sqrt(3)) - 1) < 0.02


def test_recurrent_default_init_bound():
    lstm = nn.LSTM(10, 25)
    for p in lstm.parameters():
        assert np.abs(p.data).max() <= 0.2 and np.abs(p.data).max() > 0.19


def test_batch_norm_starts_at_identity_statistics():
    bn = nn.BatchNorm2d(3)
    state = bn.state_dict()
    assert np.all(state["weight"] == 1) and np.all(state["bias"] == 0)
    assert np.all(state["running_mean"] == 0) and np.all(state["running_var"] == 1)
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 0


def test_manual_seed_gives_the_same_initial_weights():
    nn.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).weight.data.copy()
    b = nn.Conv2d(3, 4, 3).weight.data.copy()
    nn.manual_seed(5)
    np.testing.assert_array_equal(nn.Conv2d(3, 4, 3).weight.data, a)
    assert not np.array_equal(a, b)


def test_dtype_argument_sets_the_parameter_dtype():
    assert nn.Linear(3, 2, dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        nn.Linear(3, 2, dtype=np.int32)


# --------------------------------------------------------------------------- module machinery

def test_gradients_accumulate_across_backward_calls():
    rng = rng_for("accumulate")
    layer = nn.Conv2d(2, 3, 3, dtype=F64)
    x1, x2 = _randn(rng, (2, 2, 4, 4)), _randn(rng, (2, 2, 4, 4))
    g1, g2 = _randn(rng, (2, 3, 2, 2)), _randn(rng, (2, 3, 2, 2))
    expected = {}
    for x, g in ((x1, g1), (x2, g2)):
        layer.zero_grad()
        layer(x)
        layer.backward(g)
        for n, p in layer.named_parameters():
            expected[n] = expected.get(n, 0) + p.grad
    layer.zero_grad()
    layer(x1)
    layer.backward(g1)
    layer(x2)
    layer.backward(g2)
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, expected[n], rtol=1e-12)


def test_accumulation_never_writes_into_the_callers_gradient():
    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(np.zeros(3))

        def forward(self, x):
            return x + self.shift.data

        def backward(self, grad_output):
            accumulate_grad(self.shift, grad_output)
            return grad_output

    layer = Shift()
    g = np.ones(3)
    layer.backward(g)
    layer.backward(g)
    np.testing.assert_array_equal(g, np.ones(3))
    np.testing.assert_array_equal(layer.shift.grad, 2 * np.ones(3))


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=F64), nn.ReLU(),
                           nn.Conv2d(3, 2, 3, stride=2, bias=False, dtype=F64)), (2, 2, 5, 5)),
    (lambda: nn.Sequential(nn.ReLU(), nn.Dropout(0.0), nn.Conv1d(2, 3, 2, dtype=F64)),
     (2, 2, 4)),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 3, dtype=F64), nn.Tanh()), (2, 2, 2, 2)),
    (lambda: nn.Conv2d(2, 3, 3, dtype=F64), (2, 2, 5, 5)),
], ids=["conv-relu-conv", "parameter-free-first", "linear", "conv"])
def test_backward_params_gives_backwards_parameter_gradients(make, shape):
    """backward_params (no input gradient) adds exactly what backward adds to each .grad."""
    rng = rng_for("backward-params")
    model = make()
    x = _randn(rng, shape)
    g = _randn(rng, model(x).shape)
    model.zero_grad()
    model.backward(g)
    expected = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    model(x)
    assert model.backward_params(g) is None
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, expected[n], err_msg=n)


@pytest.mark.parametrize("pool, shape", [
    (lambda: nn.MaxPool2d(2), (2, 3, 6, 7)),
    (lambda: nn.MaxPool2d(3, stride=1, padding=1), (2, 2, 5, 6)),   # overlapping windows
    (lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), (1, 2, 8, 7)),
    (lambda: nn.MaxPool1d(2, stride=1), (2, 3, 9)),
], ids=["2x2", "3x3-overlapping", "3x3-ceil", "1d"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not backend.gpu_available(),
                                        reason="needs a GPU with CuPy")])])
def test_relu_then_max_pool_backward_equals_the_two_backwards(pool, shape, dtype, device):
    """Sequential runs a ReLU's backward and the max pooling's after it as one; the
    gradient is the reference relu_backward of the reference max-pool backward, element
    for element, with ties, zeros of both signs and NaN in the input and in the gradient,
    on NumPy and on CuPy arrays."""
    rng = rng_for("relu-max-pool")
    x = rng.integers(-2, 3, shape).astype(dtype)
    x.flat[::7] = -0.0
    x.flat[5] = np.nan
    model = nn.Sequential(nn.ReLU(), pool())
    out = model(backend.to_device(x, device))
    g = rng.standard_normal(out.shape).astype(dtype)
    g.flat[1] = np.nan
    got = backend.to_numpy(model.backward(backend.to_device(g, device)))
    p = model[1]
    args = dict(kernel_size=p.kernel_size, stride=p.stride, padding=p.padding,
                dilation=p.dilation, ceil_mode=p.ceil_mode, impl="reference")
    backward = F.max_pool2d_backward if x.ndim == 4 else F.max_pool1d_backward
    expected = F.relu_backward(backward(g, F.relu(x, impl="reference"), **args), x,
                               impl="reference")
    np.testing.assert_array_equal(got, expected)


def test_a_max_pooling_subclass_with_its_own_backward_runs_it_after_a_relu():
    class ClippedPool(nn.MaxPool2d):
        def backward(self, grad_output):
            return super().backward(np.clip(grad_output, -0.1, 0.1))

    x = np.abs(rng_for("clipped-pool").standard_normal((1, 1, 4, 4))) + 1
    model = nn.Sequential(nn.ReLU(), ClippedPool(2))
    g = np.ones(model(x).shape)
    assert model.backward(g).max() == 0.1


def test_sequential_of_conv_and_relu_takes_an_unbatched_input():
    """An unbatched (C, H, W) input runs the layers unfused and gives the batched result."""
    rng = rng_for("unbatched-sequential")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, dtype=F64), nn.ReLU())
    x = _randn(rng, (3, 3, 8))   # H equal to C: a mix-up of axes would pass the checks
    np.testing.assert_allclose(model(x), model(x[None])[0], rtol=1e-12)


def test_conv_backward_params_skips_the_input_gradient():
    masks = []

    def spy(*args, **kwargs):
        masks.append(kwargs.get("output_mask"))
        return F.conv2d_backward(*args, **kwargs)

    for bias in (True, False):
        layer = nn.Conv2d(2, 3, 3, bias=bias, dtype=F64)
        layer._backward_op = spy
        layer(np.ones((1, 2, 4, 4)))
        layer.backward_params(np.ones((1, 3, 2, 2)))
    assert masks == [(False, True, True), (False, True, False)]


def test_zero_grad_sets_none_or_zeros():
    layer = nn.Linear(3, 2)
    layer(np.ones((1, 3), np.float32))
    layer.backward(np.ones((1, 2), np.float32))
    layer.zero_grad(set_to_none=False)
    assert np.all(layer.weight.grad == 0)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Linear(3, 2).backward(np.ones((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Sequential(nn.ReLU(), nn.Tanh()).backward(np.ones(3))


def _small_net():
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 2, 3)), ("bn", nn.BatchNorm2d(2)), ("relu", nn.ReLU()),
        ("flat", nn.Flatten()), ("fc", nn.Linear(8, 3))]))


def test_state_dict_names_in_torch_order():
    assert list(_small_net().state_dict()) == [
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
        "bn.running_var", "bn.num_batches_tracked", "fc.weight", "fc.bias"]
    assert [n for n, _ in _small_net().named_parameters()] == [
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]


def test_state_dict_round_trip_restores_outputs():
    x = _randn(rng_for("roundtrip"), (3, 1, 4, 4), np.float32)
    nn.manual_seed(1)
    a = _small_net()
    a(x)  # one training step moves the running statistics
    a.eval()
    saved = {k: v.copy() for k, v in a.state_dict().items()}
    nn.manual_seed(2)
    b = _small_net().eval()
    assert not np.allclose(b(x), a(x))
    b.load_state_dict(saved)
    np.testing.assert_array_equal(b(x), a(x))
    assert b.state_dict()["bn.num_batches_tracked"] == 1


def test_load_state_dict_reports_missing_unexpected_and_mismatched_keys():
    net = _small_net()
    state = {k: v.copy() for k, v in net.state_dict().items()}
    del state["fc.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match="missing keys fc.bias.*unexpected keys extra"):
        net.load_state_dict(state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["fc.bias"] and unexpected == ["extra"]
    state["fc.weight"] = np.zeros((3, 7))
    with pytest.raises(ValueError, match=r"shape mismatch for fc.weight: expected \(3, 8\)"):
        net.load_state_dict(state, strict=False)


def test_load_state_dict_casts_to_the_parameter_dtype_in_place():
    layer = nn.Linear(2, 2)
    weight = layer.weight.data
    layer.load_state_dict({"weight": np.eye(2), "bias": np.zeros(2)})
    assert layer.weight.data is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, np.eye(2))


def test_train_and_eval_switch_every_descendant():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)))
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_dropout_is_the_identity_in_eval_and_scales_in_training():
    x = np.ones((200, 100), np.float32)
    drop = nn.Dropout(0.25)
    out = drop(x)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    g = _randn(rng_for("drop"), x.shape, np.float32)
    np.testing.assert_allclose(drop.backward(g), np.where(kept, g / 0.75, 0), rtol=1e-6)
    drop.eval()
    assert drop(x) is x
    assert drop.backward(g) is g


def test_dropout_masks_differ_per_step_and_replay_from_the_global_seed():
    x = np.ones((10, 10), np.float32)
    drop = nn.Dropout(0.5)
    nn.manual_seed(7)
    first, second = drop(x), drop(x)
    nn.manual_seed(7)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(drop(x), first)


def test_dropout_with_its_own_seed_ignores_the_global_generator():
    x = np.ones((10, 10), np.float32)
    nn.manual_seed(1)
    a = nn.Dropout(0.5, seed=3)(x)
    nn.manual_seed(2)
    np.testing.assert_array_equal(nn.Dropout(0.5, seed=3)(x), a)


def test_batch_norm_training_uses_batch_stats_and_updates_running_stats():
    rng = rng_for("bn-train")
    x = _randn(rng, (8, 3, 2, 2)) * 2 + 1
    bn = nn.BatchNorm2d(3, momentum=0.2, dtype=F64)
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.2 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * x.var(axis=(0, 2, 3), ddof=1),
                               rtol=1e-12)
    assert bn.num_batches_tracked == 1


def test_batch_norm_eval_uses_running_stats_and_leaves_them():
    bn = nn.BatchNorm2d(2, dtype=F64).eval()
    bn.running_mean[...] = [1.0, -1.0]
    bn.running_var[...] = [4.0, 0.25]
    x = _randn(rng_for("bn-eval"), (3, 2, 2, 2))
    expected = (x - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12)
    assert bn.num_batches_tracked == 0 and bn.running_mean[0] == 1.0


def test_batch_norm_momentum_none_is_a_cumulative_average():
    rng = rng_for("bn-cma")
    bn = nn.BatchNorm1d(2, momentum=None, dtype=F64)
    xs = [_randn(rng, (6, 2)) + i for i in range(3)]
    for x in xs:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in xs], axis=0),
                               rtol=1e-12)


def test_batch_norm_rejects_the_wrong_rank():
    with pytest.raises(ValueError, match="BatchNorm2d: expected 4-d input"):
        nn.BatchNorm2d(3)(np.ones((2, 3), np.float32))


def test_to_casts_parameters_buffers_and_grads():
    net = _small_net()
    net(np.ones((2, 1, 4, 4), np.float32))
    net.backward(np.ones((2, 3), np.float32))
    net.to("cpu", dtype=np.float64)
    for _, a in net.state_dict().items():
        assert a.dtype in (np.float64, np.int64)
    assert all(p.grad.dtype == np.float64 for p in net.parameters())


def test_to_cuda_without_a_gpu_says_why():
    if backend.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="device='cuda'"):
        nn.Linear(2, 2).to("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")
def test_to_cuda_moves_every_array_and_matches_cpu():
    net = _small_net()
    x = np.ones((2, 1, 4, 4), np.float32)
    ref = net(x)
    net.to("cuda")
    assert all(backend.device_of(a) == "cuda" for a in net.state_dict().values())
    assert_close(backend.to_numpy(net(backend.to_device(x, "cuda"))), ref, "float32")


def test_setattr_registers_parameters_and_modules_in_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(np.zeros(2))
            self.inner = nn.Linear(2, 2)
            self.a = nn.Parameter(np.zeros(1))
            self.register_buffer("stat", np.zeros(3))
            self.plain = 5

    net = Net()
    assert list(net.state_dict()) == ["b", "a", "stat", "inner.weight", "inner.bias"]
    assert [n for n, _ in net.named_parameters()] == ["b", "a", "inner.weight", "inner.bias"]
    assert net.plain == 5 and net.stat.shape == (3,)
    net.inner.bias = None
    assert "inner.bias" not in net.state_dict()
    with pytest.raises(TypeError, match="is a parameter"):
        net.b = np.zeros(2)


def test_shared_parameter_is_listed_once():
    seq = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    seq[1].weight = seq[0].weight
    assert len(list(seq.parameters())) == 3


def test_sequential_indexing_and_repr():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())
    assert isinstance(seq[1], nn.ReLU) and len(seq[1:]) == 2 and len(seq) == 3
    assert "(0): Conv2d(1, 2, kernel_size=(3, 3)" in repr(seq)


def test_module_list_registers_its_items():
    ml = nn.ModuleList([nn.Linear(2, 3), nn.Linear(3, 1)])
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert ml[1].out_features == 1


def test_max_pool_return_indices():
    pool = nn.MaxPool2d(2, return_indices=True)
    out, idx = pool(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])
    assert idx.shape == out.shape


def test_conv_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)


# --------------------------------------------------------------------------- Concat

def _concat_of_two_convs(dim=1):
    return nn.Concat(OrderedDict([
        ("a", nn.Conv2d(2, 3, 3, padding=1, dtype=F64)),
        ("b", nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(2, 1, 1, dtype=F64)))]),
        dim=dim)


def test_concat_joins_the_branch_outputs_along_dim():
    layer = _concat_of_two_convs()
    x = _randn(rng_for("concat"), (2, 2, 4, 5))
    out = layer(x)
    np.testing.assert_array_equal(out, np.concatenate([layer.a(x), layer.b(x)], axis=1))
    assert [n for n, _ in layer.named_parameters()] == ["a.weight", "a.bias", "b.1.weight",
                                                       "b.1.bias"]


@pytest.mark.parametrize("dim", [1, -3])
def test_concat_backward_matches_finite_differences(dim):
    layer = _concat_of_two_convs(dim)
    rng = rng_for("concat-fd", dim)
    x = _tie_free(rng, (2, 2, 3, 4))
    g = _randn(rng, (2, 4, 3, 4))
    layer(x)
    gx = layer.backward(g)
    params = dict(layer.named_parameters())
    check_grads(lambda: float(np.sum(layer(x) * g)),
                {"input": gx, **{n: p.grad for n, p in params.items()}},
                {"input": x, **{n: p.data for n, p in params.items()}})


def test_concat_rejects_branches_whose_outputs_do_not_line_up():
    layer = nn.Concat(nn.Conv2d(1, 2, 3), nn.Identity())
    with pytest.raises(ValueError, match=r"agree in every dimension but dim 1.*\(1, 2, 3, 3\)"):
        layer(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="at least one branch"):
        nn.Concat()
    with pytest.raises(ValueError, match="dim 4 is out of range"):
        nn.Concat(nn.Identity(), dim=4)(np.zeros((1, 2, 3, 3)))
