"""Activations as custom ops: relu, leaky_relu, elu, sigmoid, tanh, softmax, log_softmax,
dropout and gpuconv's fused ``bias_act``.

sigmoid, tanh, softmax, log_softmax and bias_act save their result and hand it to the
functional backward as ``output=`` (their derivative is cheapest in terms of it); the others
save their input. dropout saves nothing but its seed: the mask is a pure function of the
seed and the shape (see :func:`gpuconv.functional.dropout`). The seed is a tensor drawn from
PyTorch's generator, so ``torch.manual_seed`` makes the masks reproducible and a compiled
graph draws a new one at every call instead of baking one in.
"""
from __future__ import annotations

import torch

from .. import functional as F
from ._interop import call, define, define_unary

__all__ = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
           "bias_act"]


_relu = define_unary("relu", F.relu, F.relu_backward)
_leaky_relu = define_unary("leaky_relu", F.leaky_relu, F.leaky_relu_backward,
                                "float negative_slope")
_elu = define_unary("elu", F.elu, F.elu_backward, "float alpha")
_sigmoid = define_unary("sigmoid", F.sigmoid, F.sigmoid_backward, saves_output=True)
_tanh = define_unary("tanh", F.tanh, F.tanh_backward, saves_output=True)
_softmax = define_unary("softmax", F.softmax, F.softmax_backward, "int dim",
                             saves_output=True)
_log_softmax = define_unary("log_softmax", F.log_softmax, F.log_softmax_backward, "int dim",
                                 saves_output=True)


def _no_inplace(op: str, inplace: bool) -> None:
    if inplace:
        raise ValueError(f"{op}: inplace=True is not supported by gpuconv.torch (its custom ops "
                         "return new tensors); use inplace=False")


def relu(input, inplace=False):
    """``torch.nn.functional.relu`` computed by gpuconv, with autograd."""
    _no_inplace("relu", inplace)
    return _relu(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``torch.nn.functional.leaky_relu`` computed by gpuconv, with autograd."""
    _no_inplace("leaky_relu", inplace)
    return _leaky_relu(input, float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    """``torch.nn.functional.elu`` computed by gpuconv, with autograd."""
    _no_inplace("elu", inplace)
    return _elu(input, float(alpha))


def sigmoid(input):
    """``torch.sigmoid`` computed by gpuconv, with autograd (saves its result)."""
    return _sigmoid(input)


def tanh(input):
    """``torch.tanh`` computed by gpuconv, with autograd (saves its result)."""
    return _tanh(input)


def _along_dim(op, name: str, input, dim, dtype):
    if dim is None:
        raise ValueError(f"{name}: dim must be given (torch's implicit choice of dim is "
                         "deprecated and not supported)")
    if dtype is not None:
        input = input.to(dtype)
    return op(input, int(dim))


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.softmax`` computed by gpuconv, with autograd (saves its result)."""
    return _along_dim(_softmax, "softmax", input, dim, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.log_softmax`` computed by gpuconv, with autograd."""
    return _along_dim(_log_softmax, "log_softmax", input, dim, dtype)


# --------------------------------------------------------------------------- dropout

_SEED_HIGH = 2 ** 62


def _seed_value(seed: torch.Tensor) -> int:
    return int(seed.item())


_dropout = define(
    "dropout", "(Tensor input, float p, Tensor seed) -> Tensor",
    lambda input, p, seed: call(F.dropout, input, p, True, _seed_value(seed)),
    lambda input, p, seed: torch.empty_like(input))
# The functional backward reads its ``input`` argument only for its shape and dtype, which are
# grad_output's: saving nothing keeps the input free to be changed in place afterwards.
_dropout_backward = define(
    "dropout_backward", "(Tensor grad_output, float p, Tensor seed) -> Tensor",
    lambda grad_output, p, seed: call(F.dropout_backward, grad_output, grad_output, p, True,
                                      _seed_value(seed)),
    lambda grad_output, p, seed: torch.empty_like(grad_output))


def _dropout_setup(ctx, inputs, output):
    _, ctx.p, seed = inputs
    ctx.save_for_backward(seed)


def _dropout_grad(ctx, grad_output):
    (seed,) = ctx.saved_tensors
    return _dropout_backward(grad_output, ctx.p, seed), None, None


_dropout.register_autograd(_dropout_grad, setup_context=_dropout_setup)


def new_seed() -> torch.Tensor:
    """A dropout seed drawn from PyTorch's CPU generator: an int64 scalar tensor on the CPU
    (reading it never waits for a GPU), which a compiled graph draws afresh at every call."""
    return torch.randint(0, _SEED_HIGH, (), dtype=torch.int64)


def dropout(input, p=0.5, training=True, inplace=False):
    """``torch.nn.functional.dropout`` computed by gpuconv, with autograd.

    The mask comes from gpuconv's seeded Philox rule, the seed from PyTorch's generator, so
    masks differ from PyTorch's own but are reproducible under ``torch.manual_seed``.
    """
    _no_inplace("dropout", inplace)
    if not training:
        return input
    return _dropout(input, float(p), new_seed())


# --------------------------------------------------------------------------- bias_act

_BIAS_ACT_ARGS = "str activation, float param"


def _bias_act_backward_impl(grad_output, input, bias, activation, param, output):
    return call(F.bias_act_backward, grad_output, input, bias, activation, param, output=output)


_bias_act = define(
    "bias_act", f"(Tensor input, Tensor bias, {_BIAS_ACT_ARGS}) -> Tensor",
    lambda input, bias, activation, param: call(F.bias_act, input, bias, activation, param),
    lambda input, bias, activation, param: torch.empty_like(input))
_bias_act_backward = define(
    "bias_act_backward", f"(Tensor grad_output, Tensor input, Tensor bias, {_BIAS_ACT_ARGS}, "
    "Tensor output) -> (Tensor, Tensor)", _bias_act_backward_impl,
    lambda grad_output, input, bias, *args: (torch.empty_like(input), torch.empty_like(bias)))


def _bias_act_setup(ctx, inputs, output):
    input, bias, *ctx.args = inputs
    ctx.save_for_backward(input, bias, output)


def _bias_act_grad(ctx, grad_output):
    input, bias, output = ctx.saved_tensors
    gx, gb = _bias_act_backward(grad_output, input, bias, *ctx.args, output)
    return gx, gb, None, None


_bias_act.register_autograd(_bias_act_grad, setup_context=_bias_act_setup)


def bias_act(input, bias, activation="relu", param=0.0):
    """gpuconv's fused ``act(input + bias[c])`` (no torch.nn.functional counterpart), with
    autograd. input (N, C, *), bias (C,). See :func:`gpuconv.functional.bias_act`."""
    return _bias_act(input, bias, activation, float(param))
