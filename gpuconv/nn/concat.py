"""Concat: parallel branches over one input, their outputs joined along an axis."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from .. import backend
from .module import Module, _children_independent

__all__ = ["Concat"]


class Concat(Module):
    """``concatenate([branch(x) for branch in branches], axis=dim)``: every branch reads the
    same input, and their outputs, equal in every axis but ``dim``, are joined along ``dim``
    (the channels by default, as in GoogLeNet's Inception blocks).

    Backward splits ``grad_output`` along ``dim`` into each branch's slice, runs each
    branch's backward on its slice, and returns the sum of their input gradients: the input
    fans out to every branch, so its gradient is the sum over the branches.

    ``Concat(b0, b1, ...)`` names the children "0", "1", ...; ``Concat(OrderedDict)`` uses
    the dict's names.
    """

    def __init__(self, *branches: Module | OrderedDict, dim: int = 1):
        super().__init__()
        self._add_children(branches)
        if not self._modules:
            raise ValueError("Concat: needs at least one branch")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"Concat: dim must be an int, got {dim!r}")
        self.dim = int(dim)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @property
    def samples_independent(self) -> bool:
        """Joined along an axis after the batch's, of independent branches."""
        return self.dim >= 1 and _children_independent(self)

    def _axis(self, ndim: int) -> int:
        if not -ndim <= self.dim < ndim:
            raise ValueError(f"Concat: dim {self.dim} is out of range for branch outputs of "
                             f"{ndim} dimensions")
        return self.dim % ndim

    def forward(self, input):
        outs = [branch(input) for branch in self]
        axis = self._axis(outs[0].ndim)
        shapes = [tuple(o.shape) for o in outs]
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
            raise ValueError(f"Concat: the branch outputs must agree in every dimension but "
                             f"dim {self.dim}; got shapes {shapes} from input shape "
                             f"{tuple(input.shape)}")
        self._save(axis, [s[axis] for s in shapes])
        return backend.array_module(outs[0]).concatenate(outs, axis=axis)

    def backward(self, grad_output):
        axis, sizes = self._saved()
        xp = backend.array_module(grad_output)
        grad_input, start = None, 0
        for branch, size in zip(self, sizes):
            part = xp.ascontiguousarray(
                grad_output[(slice(None),) * axis + (slice(start, start + size),)])
            start += size
            g = branch.backward(part)
            grad_input = g if grad_input is None else grad_input + g
        return grad_input

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
