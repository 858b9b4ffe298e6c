"""Linear and Embedding layers."""
from __future__ import annotations

from typing import Any

from .. import _checks as C, functional as F, init
from ._defaults import float_dtype, new_parameter, reset_weight_and_bias
from .module import Module, accumulate_grad

__all__ = ["Linear", "Embedding"]


class Linear(Module):
    """y = x W^T + b over the last axis: (*, in_features) -> (*, out_features); weight
    (out_features, in_features), bias (out_features,)."""

    samples_independent = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = None):
        super().__init__()
        self.in_features = C.positive_int("Linear", "in_features", in_features)
        self.out_features = C.positive_int("Linear", "out_features", out_features)
        dtype = float_dtype("Linear", dtype)
        self.weight = new_parameter((out_features, in_features), dtype)
        self.register_parameter("bias", new_parameter((out_features,), dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_weight_and_bias(self.weight, self.bias)

    def _bias_data(self):
        return None if self.bias is None else self.bias.data

    def forward(self, input):
        self._save(input)
        return F.linear(input, self.weight.data, self._bias_data())

    def backward(self, grad_output):
        (input,) = self._saved()
        gx, gw, gb = F.linear_backward(grad_output, input, self.weight.data, self._bias_data())
        accumulate_grad(self.weight, gw)
        if self.bias is not None:
            accumulate_grad(self.bias, gb)
        return gx

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: integer indices (*) -> (*, embedding_dim); weight
    (num_embeddings, embedding_dim) drawn from N(0, 1) with the ``padding_idx`` row zeroed,
    as torch. The padding row gets no gradient. ``backward`` returns None: indices have no
    gradient."""

    samples_independent = True

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: Any = None):
        super().__init__()
        self.num_embeddings = C.positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = C.positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx must lie in [{-num_embeddings}, "
                                 f"{num_embeddings}), got {padding_idx}")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        self.weight = new_parameter((num_embeddings, embedding_dim),
                                    float_dtype("Embedding", dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        self._save(input)
        return F.embedding(input, self.weight.data, self.padding_idx)

    def backward(self, grad_output):
        (input,) = self._saved()
        accumulate_grad(self.weight, F.embedding_backward(grad_output, input, self.weight.data,
                                                          self.padding_idx))
        return None

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s if self.padding_idx is None else s + f", padding_idx={self.padding_idx}"
