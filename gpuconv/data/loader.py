"""DataLoader: batches of a dataset, optionally shuffled, transformed and moved to the GPU."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np

from .. import backend
from .dataset import get_batch

__all__ = ["DataLoader"]


class DataLoader:
    """Iterate ``(x_batch, y_batch)`` over ``dataset`` in batches of ``batch_size``.

    dataset: anything with ``__len__`` and ``__getitem__ -> (x, y)``; an
        :class:`~gpuconv.data.ArrayDataset` (or a Subset of one) is gathered with one
        fancy index per batch, other datasets are stacked sample by sample.
    shuffle: visit the samples in a new random order every epoch. The order of epoch ``e``
        depends only on ``(seed, e)``, so a run with a seed is reproducible and a resumed
        run can set :attr:`epoch` to continue the same sequence. ``seed=None`` draws a seed
        once, at construction.
    drop_last: leave out the final batch when it is smaller than ``batch_size``.
    transform: a callable applied to each whole ``x_batch`` on the CPU (see
        :mod:`gpuconv.data.transforms`; random transforms carry their own seeded generator).
    device: ``"cpu"`` (NumPy batches), ``"cuda"`` (CuPy batches; a ``RuntimeError`` at
        construction where there is no GPU) or ``"auto"``.
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 device: str = "cpu"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, "
                             f"got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, "
                            f"got {type(transform).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self.transform = transform
        self.device = backend.resolve_device(device)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch``, in the order they are visited."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self.order(self.epoch)
        self.epoch += 1
        for b in range(len(self)):
            x, y = get_batch(self.dataset, order[b * self.batch_size:(b + 1) * self.batch_size])
            if self.transform is not None:
                x = self.transform(x)
            if self.device == "cuda":
                x, y = backend.to_device(x, "cuda"), backend.to_device(y, "cuda")
            yield x, y

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, device={self.device!r})")
