"""Reference linear and embedding: the formulas as written, in NumPy, for any float dtype.

``embedding`` takes ``(indices, weight)`` with int64 indices already checked to lie in
``[0, num_embeddings)``; ``embedding_backward`` takes ``(grad_output, indices,
num_embeddings, padding_idx)`` with ``padding_idx`` a row number or None.
"""
from __future__ import annotations

import math

import numpy as np

from .. import register

_LOWEST = -100


@register("linear", "reference", priority=_LOWEST)
def linear(x, w, b):
    y = np.einsum("...i,oi->...o", x, w)
    return y if b is None else y + b


@register("linear_backward", "reference", priority=_LOWEST)
def linear_backward(g, x, w, b):
    grad_input = np.einsum("...o,oi->...i", g, w)
    # The weight and bias gradients sum over every leading position: n runs over them.
    positions = math.prod(x.shape[:-1])
    g_rows, x_rows = g.reshape(positions, w.shape[0]), x.reshape(positions, w.shape[1])
    grad_weight = np.einsum("no,ni->oi", g_rows, x_rows)
    grad_bias = None if b is None else np.sum(g_rows, axis=0)
    return grad_input, grad_weight, grad_bias


@register("embedding", "reference", priority=_LOWEST)
def embedding(indices, weight):
    return weight[indices]


@register("embedding_backward", "reference", priority=_LOWEST)
def embedding_backward(g, indices, num_embeddings, padding_idx):
    dim = g.shape[-1]
    grad_weight = np.zeros((num_embeddings, dim), dtype=g.dtype)
    np.add.at(grad_weight, indices.reshape(-1), g.reshape(indices.size, dim))
    if padding_idx is not None:
        grad_weight[padding_idx] = 0
    return grad_weight
