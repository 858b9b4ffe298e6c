"""Seeded random splits of a dataset (or of parallel arrays) into disjoint parts."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .dataset import Subset

__all__ = ["random_split", "train_val_test_split", "split_lengths"]


def split_lengths(n: int, lengths: Sequence[int | float]) -> list[int]:
    """Turn ``lengths`` into part sizes that add up to ``n``.

    lengths: non-negative integers adding up to ``n``, or fractions in ``[0, 1]`` adding up
    to 1. Fractions are rounded down and the samples left over go one each to the parts
    in order (as ``torch.utils.data.random_split`` does).
    """
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must name at least one part")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in lengths):
        if any(v < 0 for v in lengths) or sum(lengths) != n:
            raise ValueError(f"random_split: sizes {lengths} must be non-negative and add up "
                             f"to the {n} samples")
        return [int(v) for v in lengths]
    if all(isinstance(v, (float, np.floating)) for v in lengths):
        in_range = all(0.0 <= v <= 1.0 for v in lengths)
        if not (in_range and math.isclose(sum(lengths), 1.0, abs_tol=1e-6)):
            raise ValueError(f"random_split: fractions {lengths} must lie in [0, 1] "
                             f"and add up to 1")
        sizes = [math.floor(n * v) for v in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        return sizes
    raise TypeError(f"random_split: lengths must be all integers (sizes) or all floats "
                    f"(fractions), got {lengths!r}")


def _length(data: Any) -> int:
    if isinstance(data, tuple):
        if not data:
            raise ValueError("random_split: got an empty tuple of arrays")
        n = len(data[0])
        if any(len(a) != n for a in data):
            raise ValueError(f"random_split: the arrays must have the same length, got "
                             f"{[len(a) for a in data]}")
        return n
    return len(data)


def random_split(data: Any, lengths: Sequence[int | float], seed: int | None = None) -> list:
    """Split ``data`` at random into disjoint parts that together cover every sample.

    data: a dataset (each part is a :class:`Subset` of it) or a tuple of arrays of equal
        length such as ``(x, y)`` (each part is a tuple of those arrays indexed alike).
    lengths: part sizes or fractions, see :func:`split_lengths`.
    seed: the same seed gives the same parts.
    """
    n = _length(data)
    sizes = split_lengths(n, lengths)
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, np.cumsum(sizes)[:-1])
    if isinstance(data, tuple):
        return [tuple(np.asarray(a)[idx] for a in data) for idx in parts]
    return [Subset(data, idx) for idx in parts]


def train_val_test_split(data: Any, lengths: Sequence[int | float] = (0.8, 0.1, 0.1),
                         seed: int | None = None) -> tuple:
    """``(train, val, test)``: :func:`random_split` into exactly three parts."""
    if len(lengths) != 3:
        raise ValueError(f"train_val_test_split: lengths must give three parts "
                         f"(train, val, test), got {lengths!r}")
    return tuple(random_split(data, lengths, seed))
