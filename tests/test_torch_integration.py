"""gpuconv.torch: gpuconv's ops as PyTorch custom ops, inside autograd, torch.compile and
torch.nn models.

Every case runs one gpuconv op and PyTorch's own op on the same float64 tensors: the outputs
and the gradients of a random projection of them agree within float64's tolerance, and
``torch.autograd.gradcheck`` passes (finite differences, so the oracle is never the code
under test). Every registered op passes ``torch.library.opcheck``. The cases run on CUDA
tensors too (marker ``gpu``) where PyTorch sees a GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import pytest

torch = pytest.importorskip("torch", reason="gpuconv.torch needs PyTorch (pip install "
                                            "torch==2.13.0, the CPU wheel)")
import torch.nn.functional as TF  # noqa: E402

import gpuconv.functional as F  # noqa: E402
import gpuconv.torch as G  # noqa: E402
import gpuconv.torch.nn as gnn  # noqa: E402
from gpuconv import kernels  # noqa: E402
from support import TOL, rel_err  # noqa: E402

F64 = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                        reason="PyTorch sees no CUDA device")])]


@dataclasses.dataclass
class Case:
    """``ours(*inputs)`` and ``theirs(*inputs)`` compute the same thing; ``inputs(gen)``
    makes the tensors. Floating ones require grad, except those at ``constants``
    (statistics, class weights)."""

    id: str
    ours: Callable
    theirs: Callable
    inputs: Callable
    constants: tuple = ()


def rand(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=F64)


def ints(gen, high, *shape):
    return torch.randint(0, high, shape, generator=gen)


def _lstm_ref(x, h0, c0, *params):
    return _sequence_ref(torch.nn.LSTM, x, (h0, c0), params, bidirectional=True, num_layers=2)


def _sequence_ref(cls, x, hx, params, *, num_layers=1, bidirectional=False, **kwargs):
    H = params[1].shape[1]
    module = cls(x.shape[2], H, num_layers=num_layers, bidirectional=bidirectional,
                 batch_first=True, dtype=F64, **kwargs)
    state = dict(zip(module._flat_weights_names, params))
    out, finals = torch.func.functional_call(module, state, (x, hx))
    return (out, *finals) if isinstance(finals, tuple) else (out, finals)


def _flat(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _seq_params(gen, gates, I, H, layers, directions):
    params = []
    for layer in range(layers):
        width = I if layer == 0 else directions * H
        for _ in range(directions):
            params += [rand(gen, gates * H, width), rand(gen, gates * H, H),
                       rand(gen, gates * H), rand(gen, gates * H)]
    return params


def _loss_inputs(gen):
    return rand(gen, 4, 5, 3), ints(gen, 5, 4, 3)


CASES = [
    Case("conv2d-stride2-pad1-dil12-groups2", lambda x, w, b: G.conv2d(x, w, b, 2, 1, (1, 2), 2),
         lambda x, w, b: TF.conv2d(x, w, b, 2, 1, (1, 2), 2),
         lambda g: (rand(g, 2, 4, 7, 6), rand(g, 6, 2, 3, 2), rand(g, 6))),
    Case("conv2d-same-even-kernel-batch1", lambda x, w: G.conv2d(x, w, padding="same"),
         lambda x, w: TF.conv2d(x, w, padding="same"),
         lambda g: (rand(g, 1, 3, 5, 6), rand(g, 4, 3, 2, 3))),
    Case("conv1d-stride2-groups2", lambda x, w, b: G.conv1d(x, w, b, 2, 1, 1, 2),
         lambda x, w, b: TF.conv1d(x, w, b, 2, 1, 1, 2),
         lambda g: (rand(g, 2, 4, 9), rand(g, 6, 2, 3), rand(g, 6))),
    Case("conv_transpose2d-stride2-outpad1-groups2",
         lambda x, w, b: G.conv_transpose2d(x, w, b, 2, 1, 1, 2),
         lambda x, w, b: TF.conv_transpose2d(x, w, b, 2, 1, 1, 2),
         lambda g: (rand(g, 2, 4, 5, 5), rand(g, 4, 3, 3, 3), rand(g, 6))),
    Case("max_pool2d-k3-s2-p1-ceil", lambda x: G.max_pool2d(x, 3, 2, 1, ceil_mode=True),
         lambda x: TF.max_pool2d(x, 3, 2, 1, ceil_mode=True), lambda g: (rand(g, 2, 3, 7, 6),)),
    Case("max_pool1d-dilation2-indices",
         lambda x: G.max_pool1d(x, 3, 2, 1, 2, return_indices=True)[0],
         lambda x: TF.max_pool1d(x, 3, 2, 1, 2, return_indices=True)[0],
         lambda g: (rand(g, 2, 3, 11),)),
    Case("avg_pool2d-exclude-pad-ceil", lambda x: G.avg_pool2d(x, 3, 2, 1, True, False),
         lambda x: TF.avg_pool2d(x, 3, 2, 1, True, False), lambda g: (rand(g, 2, 3, 7, 6),)),
    Case("avg_pool2d-divisor-unbatched", lambda x: G.avg_pool2d(x, 2, divisor_override=3),
         lambda x: TF.avg_pool2d(x, 2, divisor_override=3), lambda g: (rand(g, 3, 6, 5),)),
    Case("avg_pool1d", lambda x: G.avg_pool1d(x, 3, 2, 1), lambda x: TF.avg_pool1d(x, 3, 2, 1),
         lambda g: (rand(g, 2, 3, 9),)),
    Case("adaptive_avg_pool2d-3xNone", lambda x: G.adaptive_avg_pool2d(x, (3, None)),
         lambda x: TF.adaptive_avg_pool2d(x, (3, None)), lambda g: (rand(g, 2, 3, 7, 6),)),
    Case("adaptive_avg_pool1d", lambda x: G.adaptive_avg_pool1d(x, 4),
         lambda x: TF.adaptive_avg_pool1d(x, 4), lambda g: (rand(g, 2, 3, 9),)),
    Case("relu", G.relu, TF.relu, lambda g: (rand(g, 3, 4, 5),)),
    Case("leaky_relu", lambda x: G.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2),
         lambda g: (rand(g, 3, 4, 5),)),
    Case("elu", lambda x: G.elu(x, 0.7), lambda x: TF.elu(x, 0.7), lambda g: (rand(g, 3, 4, 5),)),
    Case("sigmoid", G.sigmoid, torch.sigmoid, lambda g: (rand(g, 3, 4, 5),)),
    Case("tanh", G.tanh, torch.tanh, lambda g: (rand(g, 3, 4, 5),)),
    Case("softmax-dim1", lambda x: G.softmax(x, 1), lambda x: TF.softmax(x, 1),
         lambda g: (rand(g, 3, 4, 5),)),
    Case("log_softmax-dim-1", lambda x: G.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1),
         lambda g: (rand(g, 3, 4, 5),)),
    Case("bias_act-tanh", lambda x, b: G.bias_act(x, b, "tanh"),
         lambda x, b: torch.tanh(x + b[:, None, None]),
         lambda g: (rand(g, 2, 3, 4, 5), rand(g, 3))),
    Case("linear-3d-input", G.linear, TF.linear,
         lambda g: (rand(g, 2, 3, 4), rand(g, 5, 4), rand(g, 5))),
    Case("embedding", lambda i, w: G.embedding(i, w), lambda i, w: TF.embedding(i, w),
         lambda g: (ints(g, 5, 2, 3), rand(g, 5, 4))),
    Case("cross_entropy-spatial-weight-ignore-smoothing",
         lambda x, t, w: G.cross_entropy(x, t, w, ignore_index=2, label_smoothing=0.1),
         lambda x, t, w: TF.cross_entropy(x, t, w, ignore_index=2, label_smoothing=0.1),
         lambda g: (*_loss_inputs(g), rand(g, 5).abs()), constants=(2,)),
    Case("cross_entropy-sum", lambda x, t: G.cross_entropy(x, t, reduction="sum"),
         lambda x, t: TF.cross_entropy(x, t, reduction="sum"),
         lambda g: (rand(g, 4, 5), ints(g, 5, 4))),
    Case("nll_loss-none", lambda x, t: G.nll_loss(x, t, reduction="none"),
         lambda x, t: TF.nll_loss(x, t, reduction="none"), _loss_inputs),
    Case("mse_loss", G.mse_loss, TF.mse_loss, lambda g: (rand(g, 3, 4), rand(g, 3, 4))),
    Case("l1_loss-sum", lambda x, t: G.l1_loss(x, t, reduction="sum"),
         lambda x, t: TF.l1_loss(x, t, reduction="sum"),
         lambda g: (rand(g, 3, 4), rand(g, 3, 4))),
    Case("batch_norm-training", lambda x, w, b: G.batch_norm(x, None, None, w, b, True),
         lambda x, w, b: TF.batch_norm(x, None, None, w, b, True),
         lambda g: (rand(g, 4, 3, 5), rand(g, 3), rand(g, 3))),
    Case("batch_norm-eval",
         lambda x, m, v, w: G.batch_norm(x, m, v, w, None, False),
         lambda x, m, v, w: TF.batch_norm(x, m, v, w, None, False),
         lambda g: (rand(g, 4, 3, 5, 2), rand(g, 3), rand(g, 3).abs() + 0.5, rand(g, 3)),
         constants=(1, 2)),
    Case("local_response_norm", lambda x: G.local_response_norm(x, 3, 1e-2, 0.75, 2.0),
         lambda x: TF.local_response_norm(x, 3, 1e-2, 0.75, 2.0),
         lambda g: (rand(g, 2, 5, 3, 4),)),
    Case("rnn_tanh_cell", G.rnn_tanh_cell, torch.rnn_tanh_cell,
         lambda g: (rand(g, 3, 4), rand(g, 3, 5), rand(g, 5, 4), rand(g, 5, 5), rand(g, 5),
                    rand(g, 5))),
    Case("rnn_relu_cell-no-bias", G.rnn_relu_cell, torch.rnn_relu_cell,
         lambda g: (rand(g, 3, 4), rand(g, 3, 5), rand(g, 5, 4), rand(g, 5, 5))),
    Case("gru_cell", G.gru_cell, torch.gru_cell,
         lambda g: (rand(g, 1, 4), rand(g, 1, 5), rand(g, 15, 4), rand(g, 15, 5), rand(g, 15),
                    rand(g, 15))),
    Case("lstm_cell", lambda x, h, c, *w: G.lstm_cell(x, (h, c), *w),
         lambda x, h, c, *w: torch.lstm_cell(x, (h, c), *w),
         lambda g: (rand(g, 3, 4), rand(g, 3, 5), rand(g, 3, 5), rand(g, 20, 4),
                    rand(g, 20, 5), rand(g, 20), rand(g, 20))),
    Case("lstm-2layers-bidirectional-batch_first",
         lambda x, h, c, *p: _flat(G.lstm(x, (h, c), list(p), 2, True, True)),
         _lstm_ref,
         lambda g: (rand(g, 2, 3, 4), rand(g, 4, 2, 3), rand(g, 4, 2, 3),
                    *_seq_params(g, 4, 4, 3, 2, 2))),
    Case("gru-no-hx", lambda x, *p: _flat(G.gru(x, None, list(p), batch_first=True)),
         lambda x, *p: _sequence_ref(torch.nn.GRU, x, None, p),
         lambda g: (rand(g, 2, 4, 3), *_seq_params(g, 3, 3, 4, 1, 1))),
    Case("rnn-relu", lambda x, h, *p: _flat(G.rnn(x, h, list(p), batch_first=True,
                                                  nonlinearity="relu")),
         lambda x, h, *p: _sequence_ref(torch.nn.RNN, x, h, p, nonlinearity="relu"),
         lambda g: (rand(g, 3, 4, 3), rand(g, 1, 3, 4), *_seq_params(g, 1, 3, 4, 1, 1))),
]
IDS = [c.id for c in CASES]


def _inputs(case: Case, device: str) -> tuple:
    tensors = case.inputs(torch.Generator().manual_seed(0))
    return tuple(t.to(device).requires_grad_(t.is_floating_point() and i not in case.constants)
                 for i, t in enumerate(tensors))


def _grads(fn, inputs, projections):
    outs = _flat(fn(*inputs))
    if projections is None:
        gen = torch.Generator().manual_seed(1)
        projections = [torch.randn(o.shape, generator=gen, dtype=F64).to(o.device)
                       for o in outs]
    loss = sum((o * p).sum() for o, p in zip(outs, projections))
    wrt = [t for t in inputs if t.requires_grad]
    return outs, torch.autograd.grad(loss, wrt), projections


def _close(ours, theirs, what: str) -> None:
    err = rel_err(ours.detach().cpu().numpy(), theirs.detach().cpu().numpy())
    assert err <= TOL["float64"], f"{what}: relative error {err:.3e} > {TOL['float64']:.0e}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_outputs_and_gradients_match_pytorchs_own_op(case, device):
    inputs = _inputs(case, device)
    ours, our_grads, projections = _grads(case.ours, inputs, None)
    theirs, their_grads, _ = _grads(case.theirs, inputs, projections)
    assert len(ours) == len(theirs)
    for i, (o, t) in enumerate(zip(ours, theirs)):
        assert o.dtype == t.dtype and o.device == t.device
        _close(o, t, f"output {i}")
    for i, (o, t) in enumerate(zip(our_grads, their_grads)):
        _close(o, t, f"gradient of input {i}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_in_float64(case):
    inputs = _inputs(case, "cpu")
    assert torch.autograd.gradcheck(case.ours, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- registration

OPS = torch.ops.gpuconv


def _opcheck_cases():
    """(op, args, kwargs) for every gpuconv:: forward op, float64 inputs requiring grad."""
    g = torch.Generator().manual_seed(2)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=F64, requires_grad=True)

    x4, x3, x2 = r(2, 4, 7, 6), r(2, 4, 9), r(3, 4)
    logits, target = r(4, 5, 3), torch.randint(0, 5, (4, 3), generator=g)
    seq = lambda gates, n: [r(gates * 3, 4), r(gates * 3, 3), r(gates * 3), r(gates * 3)][:n]
    seed = torch.tensor(7)
    return {
        "conv2d": (x4, r(6, 2, 3, 2), r(6), [2, 2], [1, 1], [1, 2], 2, False),
        "conv1d": (x3, r(6, 4, 2), None, [1], [0], [1], 1, True),
        "conv_transpose2d": (x4, r(4, 3, 3, 3), r(6), [2, 2], [1, 1], [1, 1], 2, [1, 1]),
        "max_pool2d": (x4, [3, 3], [2, 2], [1, 1], [1, 1], True),
        "max_pool1d": (x3, [3], [], [1], [2], False),
        "avg_pool2d": (x4, [3, 3], [2, 2], [1, 1], True, False, 5),
        "avg_pool1d": (x3, [3], [], [1], False, True),
        "adaptive_avg_pool2d": (x4, [3, 6]),
        "adaptive_avg_pool1d": (x3, [4]),
        "relu": (x4,), "leaky_relu": (x4, 0.1), "elu": (x4, 0.5), "sigmoid": (x4,),
        "tanh": (x4,), "softmax": (x4, 1), "log_softmax": (x4, -1),
        "dropout": (x4, 0.3, seed), "bias_act": (x4, r(4), "leaky_relu", 0.1),
        "linear": (x3, r(5, 9), r(5)),
        "embedding": (target, r(5, 2), 1),
        "cross_entropy": (logits, target, None, 1, "mean", 0.2),
        "nll_loss": (logits, target, None, -100, "none"),
        "mse_loss": (x2, r(3, 4), "sum"), "l1_loss": (x2, r(3, 4), "none"),
        "batch_norm": (x4, torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64), r(4), r(4), True,
                       0.1, 1e-5),
        "local_response_norm": (x4, 3, 1e-3, 0.75, 1.0),
        "rnn_tanh_cell": (x2, r(3, 3), *seq(1, 4)),
        "rnn_relu_cell": (x2, r(3, 3), *seq(1, 2), None, None),
        "gru_cell": (x2, r(3, 3), *seq(3, 4)),
        "lstm_cell": (x2, r(3, 3), r(3, 3), *seq(4, 4)),
        "lstm": (r(2, 3, 4), None, None, seq(4, 4), 1, False, True, 0.0, True, seed),
        "gru": (r(2, 3, 4), r(1, 3, 3), seq(3, 2), 1, False, False, 0.0, True, seed),
        "rnn": (r(2, 3, 4), None, seq(1, 4), 1, False, False, 0.0, False, seed, "relu"),
    }


OPCHECK = _opcheck_cases()
SEQUENCES = ("lstm", "gru", "rnn")


@pytest.mark.parametrize("name", sorted(OPCHECK))
def test_opcheck(name):
    kwargs = [{"keep_reserve": True}, {"keep_reserve": False}] if name in SEQUENCES else [{}]
    for kw in kwargs:
        torch.library.opcheck(getattr(OPS, name).default, OPCHECK[name], kw)


def test_every_functional_op_with_a_backward_is_a_custom_op_and_checked():
    with_backward = {name for name in F.__all__ if f"{name}_backward" in F.__all__}
    assert with_backward == set(OPCHECK)
    for name in with_backward:
        assert callable(getattr(G, name)), name
        for op in (name, f"{name}_backward"):
            assert hasattr(OPS, op), f"torch.ops.gpuconv.{op} is not registered"


def test_a_gpuconv_error_comes_through_the_op_as_a_value_error_naming_op_and_shapes():
    x, w = torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels.*\(4, 2, 3, 3\)"):
        G.conv2d(x, w)


def test_inplace_activation_is_a_value_error():
    with pytest.raises(ValueError, match="inplace=True is not supported"):
        G.relu(torch.randn(3), inplace=True)


# --------------------------------------------------------------------------- saved state

def _forbid(monkeypatch, op: str):
    """Make the impls of ``op`` raise: a backward that still calls them recomputes."""
    for impl in kernels.implementations(op):
        def fail(*args, **kwargs):
            raise AssertionError(f"{op} ran again")
        monkeypatch.setitem(kernels._REGISTRY[op], impl.name,
                            dataclasses.replace(impl, fn=fail))


@pytest.mark.parametrize("kind", SEQUENCES)
def test_sequence_backward_uses_the_forwards_reserve_instead_of_recomputing(kind, monkeypatch):
    args = OPCHECK[kind]
    params = args[3] if kind == "lstm" else args[2]
    fn = getattr(G, kind)
    out, _ = fn(args[0], None, params, training=True)
    _forbid(monkeypatch, kind)
    out.sum().backward()
    assert all(p.grad is not None for p in params)


def test_max_pool_backward_uses_the_saved_indices(monkeypatch):
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = G.max_pool2d(x, 2)
    _forbid(monkeypatch, "max_pool2d")
    y.sum().backward()
    assert x.grad.sum().item() == y.numel()


def test_no_reserve_is_kept_when_no_gradient_is_needed():
    x, params = torch.randn(4, 2, 4, dtype=F64), [p.detach() for p in OPCHECK["gru"][2]]
    *_, buffer, layout = OPS.gru(x, None, params, 1, False, False, 0.0, False, torch.tensor(0),
                                 keep_reserve=G._rnn._needs_grad(x, *params))
    assert buffer.numel() == 0 and layout.item() == -1


def test_batch_norm_updates_the_running_statistics_as_pytorch_does():
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    ours, theirs = (torch.zeros(3), torch.ones(3)), (torch.zeros(3), torch.ones(3))
    G.batch_norm(x, *ours, training=True, momentum=0.3)
    TF.batch_norm(x, *theirs, training=True, momentum=0.3)
    for o, t in zip(ours, theirs):
        assert rel_err(o.numpy(), t.numpy()) <= TOL["float32"]


def test_dropout_masks_follow_torch_manual_seed_and_the_gradient_is_the_mask():
    x = torch.randn(200, requires_grad=True)
    torch.manual_seed(3)
    y = G.dropout(x, 0.25)
    torch.manual_seed(3)
    assert torch.equal(G.dropout(x, 0.25), y)
    y.sum().backward()
    keep = y != 0
    assert torch.allclose(x.grad, keep.float() / 0.75)
    assert 0.1 < 1 - keep.float().mean().item() < 0.4
    assert G.dropout(x, 0.25, training=False) is x


# --------------------------------------------------------------------------- modules

MODULES = [
    ("Conv2d", (3, 4, 3, 2, 1), (2, 3, 8, 8)), ("Conv1d", (3, 4, 3, 1, "same"), (2, 3, 7)),
    ("ConvTranspose2d", (3, 4, 3, 2, 1, 1), (2, 3, 5, 5)), ("Linear", (4, 3), (2, 4)),
    ("BatchNorm2d", (3,), (4, 3, 5, 5)), ("BatchNorm1d", (3, 1e-3, None), (4, 3, 5)),
    ("LSTM", (4, 6, 2), (5, 3, 4)), ("GRU", (4, 6, 1, True, True), (3, 5, 4)),
    ("RNN", (4, 6, 1, "relu"), (5, 4)), ("LSTMCell", (4, 6), (3, 4)),
    ("GRUCell", (4, 6), (3, 4)), ("RNNCell", (4, 6), (4,)), ("Embedding", (7, 3, 0), None),
    ("MaxPool2d", (3, 2, 1), (2, 3, 8, 8)), ("AvgPool1d", (3, 2), (2, 3, 8)),
    ("AdaptiveAvgPool2d", ((2, None),), (2, 3, 8, 8)), ("LocalResponseNorm", (2,), (2, 4, 3)),
    ("Softmax", (1,), (2, 3)), ("ELU", (), (3, 4)),
]


@pytest.mark.parametrize("name,args,shape", MODULES, ids=[m[0] for m in MODULES])
def test_module_state_dict_round_trips_and_the_outputs_agree(name, args, shape):
    theirs, ours = getattr(torch.nn, name)(*args), getattr(gnn, name)(*args)
    assert isinstance(ours, type(theirs).__mro__[1] if name in ("RNN", "GRU", "LSTM")
                      else type(theirs))
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randint(0, 7, (2, 5)) if shape is None else torch.randn(*shape)
    for o, t in zip(_flat(ours(x)), _flat(theirs(x))):
        assert rel_err(o.detach().numpy(), t.detach().numpy()) <= 1e-5
    for (n, o), (_, t) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert rel_err(o.double().numpy(), t.double().numpy()) <= TOL["float32"], \
            f"{name}.{n} differs after the same forward"


def _small_cnn(layers):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        layers.Conv2d(1, 4, 3, padding=1), layers.BatchNorm2d(4), layers.ReLU(),
        layers.MaxPool2d(2), layers.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        layers.Tanh(), layers.AdaptiveAvgPool2d(1), torch.nn.Flatten(), layers.Dropout(0.2),
        layers.Linear(6, 3))


class _LSTMClassifier(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = layers.LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.3)
        self.head = layers.Linear(5, 4)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        return self.head(h[-1])


@pytest.fixture
def eager_random_in_compiled_graphs():
    """Compiled graphs draw the dropout seed with PyTorch's eager generator, so that the same
    torch.manual_seed gives the same masks compiled and eager."""
    import torch._inductor.config as inductor_config
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("model,shape,classes", [
    (lambda: _small_cnn(gnn), (4, 1, 8, 8), 3),
    (lambda: _LSTMClassifier(gnn), (4, 6, 3), 4),
], ids=["cnn", "lstm"])
def test_compiled_fullgraph_model_matches_eager(model, shape, classes,
                                                eager_random_in_compiled_graphs):
    eager, compiled = model(), model()
    compiled.load_state_dict(eager.state_dict())
    run = torch.compile(compiled, fullgraph=True)
    x, y = torch.randn(*shape), torch.randint(0, classes, (shape[0],))
    results = []
    for net, fn in ((eager, eager), (compiled, run)):
        torch.manual_seed(5)
        loss = G.cross_entropy(fn(x), y)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in net.parameters()]))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert rel_err(loss_c.numpy(), loss_e.numpy()) <= TOL["float32"]
    for ge, gc in zip(grads_e, grads_c):
        assert rel_err(gc.numpy(), ge.numpy()) <= 1e-4
    for (n, b), (_, bc) in zip(eager.named_buffers(), compiled.named_buffers()):
        assert rel_err(bc.numpy(), b.numpy()) <= TOL["float32"], n


def test_a_model_of_gpuconv_layers_trains_like_the_same_pytorch_model():
    ours, theirs = _small_cnn(gnn), _small_cnn(torch.nn)
    theirs.load_state_dict(ours.state_dict())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    for net in (ours, theirs):
        net[8].p = 0.0  # dropout masks differ by design (gpuconv's Philox rule)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            TF.cross_entropy(net(x), y).backward()
            opt.step()
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert rel_err(a.float().numpy(), b.float().numpy()) <= 1e-4, n
