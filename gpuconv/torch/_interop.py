"""Tensors in, arrays through gpuconv.functional, tensors out; and the op definition helper.

A CPU tensor is viewed as a NumPy array with ``Tensor.numpy()`` and a CUDA tensor as a CuPy
array through DLPack, both without a copy (``detach()`` first: a tensor that requires grad
refuses both, and autograd is handled by the custom op around the call). On CUDA the call
runs on PyTorch's current stream of the tensor's device (CuPy's current stream is set to it),
so it is ordered with the PyTorch work around it and nothing synchronises.

Results come back as tensors without a copy, except where a custom op must not return what
it got: an output that aliases an input (a view, or the input itself), or one that is not
contiguous or not writeable, is copied. A custom op's fake (meta) implementation returns
contiguous tensors, so the real one does too.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .. import backend

__all__ = ["call", "define", "arrays_of", "empty_if_none", "contiguous_like",
           "ints", "define_unary"]


def _array(t: Any, seen: list):
    """A NumPy/CuPy view of tensor ``t``; lists and tuples recurse (a tuple stays one, so
    that a stride of ints takes the ops' by-value caches); anything else passes through."""
    if isinstance(t, (list, tuple)):
        items = [_array(e, seen) for e in t]
        return tuple(items) if isinstance(t, tuple) else items
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach()
    if t.device.type == "cpu":
        a = t.numpy()
    elif t.device.type == "cuda":
        a = backend.cupy_or_none().from_dlpack(t)
    else:
        raise ValueError(f"gpuconv.torch: tensors on {t.device} are not supported "
                         "(cpu and cuda are)")
    seen.append(a)
    return a


def arrays_of(*tensors):
    """NumPy/CuPy views of ``tensors`` (None passes), for code that needs the raw arrays."""
    return tuple(_array(t, []) for t in tensors)


def _device_of(args: Iterable) -> torch.device | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, (list, tuple)):
            d = _device_of(a)
            if d is not None:
                return d
    return None


@contextlib.contextmanager
def _on_current_stream(device: torch.device | None):
    """On CUDA, make CuPy launch on PyTorch's current stream of ``device``."""
    if device is None or device.type != "cuda":
        yield
        return
    cp = backend.cupy_or_none()
    with cp.cuda.Device(device.index), \
            cp.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
        yield


def _shares_memory(a, others: list) -> bool:
    xp = backend.array_module(a)
    return any(backend.array_module(o) is xp and xp.may_share_memory(a, o) for o in others)


def _tensor(a: Any, inputs: list):
    """``a`` (NumPy/CuPy, or a tuple/list of them) as fresh contiguous tensors."""
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    if isinstance(a, (list, tuple)):
        return type(a)(_tensor(e, inputs) for e in a)
    if isinstance(a, np.generic):
        a = np.asarray(a)
    xp = backend.array_module(a)
    if not a.flags.c_contiguous or _shares_memory(a, inputs) or (
            xp is np and not a.flags.writeable):
        a = xp.array(a, order="C", copy=True)
    return torch.from_numpy(a) if xp is np else torch.from_dlpack(a)


def call(fn: Callable, *args, **kwargs):
    """Call ``fn`` (a gpuconv.functional op) on tensors: tensors and lists of tensors in as
    arrays (no copy), array results out as tensors (see the module docstring)."""
    inputs: list = []
    device = _device_of((*args, *kwargs.values()))
    arrays = [_array(a, inputs) for a in args]
    kw = {k: _array(v, inputs) for k, v in kwargs.items()}
    with _on_current_stream(device):
        out = fn(*arrays, **kw)
    return _tensor(out, inputs)


def empty_if_none(t, like: torch.Tensor) -> torch.Tensor:
    """A custom op returns tensors, never None: an absent gradient travels as a 0-element
    tensor, and the autograd formula turns it back into None."""
    return like.new_empty(0) if t is None else t


def define(name: str, schema: str, impl: Callable, fake: Callable, *,
           mutates: tuple = ()) -> Any:
    """Register ``torch.ops.gpuconv.<name>`` with ``schema``, its CPU/CUDA ``impl`` and its
    ``fake`` (meta) impl; returns the op (a ``torch.library.CustomOpDef``)."""
    op = torch.library.custom_op(f"gpuconv::{name}", impl, mutates_args=mutates, schema=schema)
    op.register_fake(fake)
    return op


def contiguous_like(t: torch.Tensor) -> torch.Tensor:
    """A fake result with ``t``'s shape and dtype, contiguous as the real result is."""
    return t.new_empty(t.shape)


def ints(value, n: int) -> list:
    """An int or a sequence of ints as a list of ``n`` ints (a custom op's ``int[]``); the
    functional op validates the values and says what is wrong with them."""
    if isinstance(value, int):
        return [value] * n
    return [int(v) for v in value]


def define_unary(name: str, forward, backward, params: str = "", *, fake=None,
                 saves_output=False):
    """``gpuconv::<name>(input, *params) -> output`` and ``gpuconv::<name>_backward(grad_output,
    input, *params[, output]) -> grad_input`` with autograd: an op whose only gradient is its
    input's. ``forward``/``backward`` take arrays (functional ops, or adapters of their
    arguments); ``fake`` gives the output's fake (default: the input's shape); with
    ``saves_output`` the result is saved and passed to ``backward`` as ``output=``."""
    extra = f", {params}" if params else ""
    saved = ", Tensor output" if saves_output else ""

    def backward_impl(grad_output, input, *args):
        if saves_output:
            *args, output = args
            return call(backward, grad_output, input, *args, output=output)
        return call(backward, grad_output, input, *args)

    op = define(name, f"(Tensor input{extra}) -> Tensor",
                lambda input, *args: call(forward, input, *args),
                fake or (lambda input, *args: torch.empty_like(input)))
    op_backward = define(f"{name}_backward",
                         f"(Tensor grad_output, Tensor input{extra}{saved}) -> Tensor",
                         backward_impl, lambda grad_output, input, *args: torch.empty_like(input))

    def setup_context(ctx, inputs, output):
        input, *ctx.args = inputs
        ctx.save_for_backward(input, output if saves_output else None)

    def grad(ctx, grad_output):
        input, output = ctx.saved_tensors
        outputs = (output,) if saves_output else ()
        return (op_backward(grad_output, input, *ctx.args, *outputs), *[None] * len(ctx.args))

    op.register_autograd(grad, setup_context=setup_context)
    return op
