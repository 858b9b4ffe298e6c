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

    On the GPU each batch is gathered on the host into page-locked (pinned) memory and
    copied to the device on a stream of the loader's own, one batch ahead: while the
    consumer computes on batch b, batch b + 1 is already on its way, and the consumer's
    stream waits for the copy with an event (the host never waits). Each batch is a fresh
    pair of device arrays, which the consumer may keep.
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
        self._copier = None

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
        batches = (self._host_batch(order, b) for b in range(len(self)))
        if self.device != "cuda":
            yield from batches
            return
        if self._copier is None:
            self._copier = _PinnedCopier()
        pending = None
        for host in batches:
            issued = self._copier.copy(host)  # starts while the previous batch is in use
            if pending is not None:
                yield self._copier.ready(pending)
            pending = issued
        if pending is not None:
            yield self._copier.ready(pending)

    def _host_batch(self, order: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = get_batch(self.dataset, order[b * self.batch_size:(b + 1) * self.batch_size])
        if self.transform is not None:
            x = self.transform(x)
        return x, y

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, device={self.device!r})")


class _PinnedCopier:
    """Host batches to the GPU through pinned memory on a stream of its own.

    ``copy`` stages a batch in a pinned buffer and queues its copy on the copy stream,
    after the work already queued on the consumer's stream (the device arrays come from
    the consumer stream's memory pool, whose last user may still be running); ``ready``
    makes the consumer's stream wait for the copy. A pinned buffer is reused once its
    copy is done, which an event query tells without waiting; when none is free, another
    is allocated (two are enough in a steady loop).
    """

    def __init__(self):
        cp = backend.cupy_or_none()
        self._cp = cp
        self._stream = cp.cuda.Stream(non_blocking=True)
        self._buffers: list = []  # [pinned memory, event of its last copy or None]

    def _pinned(self, nbytes: int):
        for slot in self._buffers:
            memory, event = slot
            if memory.size() >= nbytes and (event is None or event.done):
                return slot
        slot = [self._cp.cuda.alloc_pinned_memory(nbytes), None]
        self._buffers.append(slot)
        return slot

    def copy(self, host: tuple):
        """Start copying the host arrays ``host``; returns what ``ready`` takes."""
        cp = self._cp
        consumer = cp.cuda.get_current_stream()
        device = tuple(cp.empty(a.shape, a.dtype) for a in host)
        self._stream.wait_event(consumer.record())
        starts = np.cumsum([0] + [_aligned(a.nbytes) for a in host])
        slot = self._pinned(int(starts[-1]))
        with self._stream:
            for a, d, at in zip(host, device, starts):
                staged = np.frombuffer(slot[0], a.dtype, a.size, int(at)).reshape(a.shape)
                staged[...] = a
                d.set(staged, stream=self._stream)
            slot[1] = self._stream.record()
        return device, slot[1]

    def ready(self, issued) -> tuple:
        """The device arrays of a started copy, after the consumer's stream waits for it."""
        device, done = issued
        self._cp.cuda.get_current_stream().wait_event(done)
        return device


def _aligned(nbytes: int, to: int = 256) -> int:
    """``nbytes`` rounded up to ``to``: each array of a batch starts aligned in the buffer."""
    return -(-nbytes // to) * to
