"""Flatten: merge a range of axes into one (a reshape; backward reshapes back)."""
from __future__ import annotations

import math

from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Merge axes ``start_dim .. end_dim`` (inclusive, negative counts from the end), as
    ``torch.nn.Flatten``: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    @property
    def samples_independent(self) -> bool:
        return self.start_dim >= 1

    def forward(self, input):
        shape = tuple(input.shape)
        ndim = max(len(shape), 1)
        start, end = self.start_dim % ndim, self.end_dim % ndim
        if start > end:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim "
                             f"{self.end_dim} for input of shape {shape}")
        self._save(shape)
        return input.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def backward(self, grad_output):
        (shape,) = self._saved()
        return grad_output.reshape(shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
