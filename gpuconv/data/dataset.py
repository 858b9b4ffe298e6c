"""Datasets: the protocol, an in-memory array dataset and subsets.

A dataset is anything with ``__len__`` and ``__getitem__(i) -> (x, y)``. Datasets that
can fetch many samples at once also define ``get_batch(indices) -> (x_batch, y_batch)``;
:class:`~gpuconv.data.DataLoader` uses it when present and stacks single samples otherwise.
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

__all__ = ["Dataset", "ArrayDataset", "Subset", "get_batch"]


class Dataset(abc.ABC):
    """Base class for map-style datasets: ``len(ds)`` samples, ``ds[i] -> (x, y)``.

    Subclasses define ``__len__`` and ``__getitem__``; :meth:`get_batch` stacks single
    samples and is worth overriding where the data allows batched indexing.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> tuple[Any, Any]:
        ...

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``indices`` (1-D integer array) stacked along a new first axis."""
        return _stack(self, indices)


def _stack(dataset: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(indices) == 0:
        raise ValueError("cannot build a batch of zero samples")
    xs, ys = zip(*(dataset[int(i)] for i in indices))
    return np.stack([np.asarray(x) for x in xs]), np.stack([np.asarray(y) for y in ys])


def get_batch(dataset: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A batch from any dataset: its ``get_batch`` if it has one, else stacked samples.

    This lets plain objects with ``__len__``/``__getitem__`` (not subclasses of
    :class:`Dataset`) be used with the loader and :class:`Subset`.
    """
    indices = np.asarray(indices, dtype=np.int64)
    batched = getattr(dataset, "get_batch", None)
    if batched is not None:
        return batched(indices)
    return _stack(dataset, indices)


class ArrayDataset(Dataset):
    """Samples held in memory as two arrays of the same length.

    x: ``(N, ...)`` inputs (e.g. ``(N, C, H, W)`` float32 images); y: ``(N, ...)`` targets
    (e.g. ``(N,)`` int64 class labels). ``ds[i]`` is ``(x[i], y[i])``; :meth:`get_batch`
    is one fancy-indexing gather per array. ``classes`` optionally names the labels.
    """

    def __init__(self, x: Any, y: Any, classes: Sequence[str] | None = None):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"ArrayDataset: x and y need a first (sample) axis, got shapes "
                             f"{x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"ArrayDataset: x and y must have the same length, got shapes "
                             f"{x.shape} and {y.shape}")
        self.x, self.y = x, y
        self.classes = None if classes is None else tuple(classes)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        return self.x[indices], self.y[indices]

    def __repr__(self) -> str:
        return (f"ArrayDataset(x: {self.x.shape} {self.x.dtype}, "
                f"y: {self.y.shape} {self.y.dtype})")


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (``indices`` may repeat)."""

    def __init__(self, dataset: Any, indices: Any):
        indices = np.asarray(indices)
        integer = indices.size == 0 or np.issubdtype(indices.dtype, np.integer)  # [] is float
        if indices.ndim != 1 or not integer:
            raise ValueError(f"Subset: indices must be a 1-D integer array, got shape "
                             f"{indices.shape} and dtype {indices.dtype}")
        n = len(dataset)
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(f"Subset: indices must lie in [0, {n}), got the range "
                             f"[{indices.min()}, {indices.max()}]")
        self.dataset = dataset
        self.indices = indices.astype(np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return get_batch(self.dataset, self.indices[np.asarray(indices, dtype=np.int64)])

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {self.dataset!r})"
