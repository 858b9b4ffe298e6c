"""The GPU path of the optimizers: every parameter of a dtype updated in one launch.

An optimizer on CuPy parameters keeps, next to its host-side state dicts, a
:class:`DeviceState`: the hyperparameters of each group (``hyper``, float64, a row per
group, the learning rate first) and each parameter's step count (``steps``, int64) in device
memory, so that a CUDA graph that replays the step sees a new learning rate and counts its
steps; and the tables of pointers and sizes that the kernels walk (``kernels/optim.cu``
describes their layout). A table is cached by the addresses it holds: in a steady loop the
memory pool hands back the same blocks, so a step uploads nothing; a new set of addresses
costs one asynchronous host-to-device copy (never a synchronisation), deferred until the
capture ends when it happens inside one (:func:`gpuconv.graphs.upload`).

Clipping by the global norm runs on the same tables: one launch per dtype for the partial
norms and one per dtype to scale, with the total norm left on the device.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from .. import backend, graphs
from ..kernels.cuda_c import optim as kernels

__all__ = ["DeviceState", "Entry", "clip_grad_norm"]

# Tables kept per optimizer: enough for the eager step, a captured step and a last batch.
TABLE_CACHE = 8
# Rows of the table (kernels/optim.cu MT_*).
(PARAM, GRAD, STATE0, STATE1, STATE2, SIZE, FIRST_CHUNK, GROUP, INDEX,
 FLAGS) = range(kernels.MT_FIELDS)
FLAG_FIRST_STEP = 1


class Entry(NamedTuple):
    """One parameter of a multi-tensor step: its arrays (C-contiguous, one dtype) and its
    rows in the device arrays."""

    index: int         # the parameter's number across the groups (its row of ``steps``)
    group: int         # its group (its row of ``hyper``)
    param: Any
    grad: Any
    buffers: tuple     # up to three state arrays, None where unused
    flags: int = 0


def _ptr(a) -> int:
    return 0 if a is None else int(a.data.ptr)


def _table(entries: list) -> tuple[np.ndarray, int]:
    """The host table of ``entries`` (MT_FIELDS x count int64) and its number of chunks."""
    table = np.zeros((kernels.MT_FIELDS, len(entries)), np.int64)
    chunks = 0
    for t, e in enumerate(entries):
        buffers = (tuple(e.buffers) + (None, None, None))[:3]
        table[[PARAM, GRAD, STATE0, STATE1, STATE2], t] = [
            _ptr(e.param), _ptr(e.grad), *(_ptr(b) for b in buffers)]
        table[[SIZE, FIRST_CHUNK, GROUP, INDEX, FLAGS], t] = [
            e.grad.size, chunks, e.group, e.index, e.flags]
        chunks += -(-e.grad.size // kernels.MT_CHUNK_ELEMENTS)
    return table, chunks


class _Tables:
    """Device tables cached by their contents (addresses, sizes, rows, flags)."""

    def __init__(self):
        self._cache: OrderedDict = OrderedDict()

    def get(self, entries: list):
        """``(device table, count, chunks)`` for ``entries``."""
        host, chunks = _table(entries)
        key = host.tobytes()
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = (graphs.upload(host), len(entries), chunks)
            if len(self._cache) > TABLE_CACHE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return hit


class DeviceState:
    """An optimizer's device-side hyperparameters, step counts and tables (see the module
    docstring). ``steps`` starts from the host state's ``"step"`` entries."""

    def __init__(self, n_params: int, steps: list[int], kind: str):
        cp = backend.cupy_or_none()
        self.kind = kind
        self.steps = graphs.upload(np.asarray(steps, np.int64).reshape(n_params))
        self.ticket = cp.zeros(1, np.uint32)
        self.hyper = None
        self._hyper_host = None
        self._tables = _Tables()

    def set_hyperparameters(self, rows: list[tuple]) -> None:
        """Upload the groups' hyperparameters when they differ from the last upload (a
        scheduler's new learning rate): one asynchronous copy, none when unchanged."""
        host = np.zeros((len(rows), kernels.MT_HYPER), np.float64)
        for g, row in enumerate(rows):
            host[g, :len(row)] = row
        if self._hyper_host is not None and np.array_equal(host, self._hyper_host):
            return
        if self.hyper is None or graphs.capturing():
            self.hyper = graphs.upload(host)
        else:
            self.hyper[...] = graphs.upload(host)
        self._hyper_host = host

    def step(self, entries: list[Entry]) -> None:
        """One launch per dtype over ``entries``."""
        for dtype, group in _by_dtype(entries).items():
            table, count, chunks = self._tables.get(group)
            kernels.multi_tensor_step(self.kind, dtype, table, count, chunks, self.hyper,
                                      self.steps, self.ticket)

    def host_steps(self) -> np.ndarray:
        """The step counts, read from the device (a synchronisation: for checkpoints)."""
        return backend.to_numpy(self.steps)


def _by_dtype(entries: list) -> dict:
    groups: dict = {}
    for e in entries:
        groups.setdefault(np.dtype(e.grad.dtype), []).append(e)
    return groups


_clip_tables = _Tables()


def clip_grad_norm(grads: list, max_norm: float, norm_type: float, check=None):
    """Scale the CuPy ``grads`` in place so that their joint ``norm_type``-norm is at most
    ``max_norm``; returns the total norm before clipping as a 0-d float64 device array (see
    :func:`gpuconv.optim.clip_grad_norm_`). ``check(total: float)``, when given, sees the
    norm before any gradient is scaled (reading it is a synchronisation)."""
    cp = backend.cupy_or_none()
    by_dtype: dict = {}
    for g in grads:
        by_dtype.setdefault(np.dtype(g.dtype), []).append(Entry(0, 0, None, g, ()))
    launches = [(dtype, *_clip_tables.get(group)) for dtype, group in by_dtype.items()]
    offsets, partials = [], 0
    for _, _, _, chunks in launches:
        offsets.append(partials)
        partials += kernels.norm_blocks(chunks)
    partial = cp.empty(partials, np.float64)
    for (dtype, table, count, chunks), offset in zip(launches, offsets):
        kernels.multi_tensor_norm_partial(dtype, table, count, chunks, norm_type, partial,
                                          offset)
    if check is not None:
        check(float(partial.max() if norm_type == np.inf else partial.sum() ** (1 / norm_type)))
    total = cp.empty((), np.float64)
    for dtype, table, count, chunks in launches:
        kernels.multi_tensor_clip_scale(dtype, table, count, chunks, partial, partials,
                                        norm_type, max_norm, total)
    return total
