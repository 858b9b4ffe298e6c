"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .. import backend, kernels
from ._multi_tensor import FLAG_FIRST_STEP
from .optimizer import Optimizer, apply_update, real

__all__ = ["SGD"]

_CHUNKED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class SGD(Optimizer):
    r"""SGD as ``torch.optim.SGD``, plus an L1 penalty.

    Per parameter ``w`` with gradient ``g``, at step ``t``::

        g = g + weight_decay * w + l1 * sign(w)
        if momentum:
            b = g                                        (t = 1)
            b = momentum * b + (1 - dampening) * g       (t > 1)
            g = g + momentum * b   if nesterov   else   b
        w = w - lr * g

    ``l1 * sign(w)`` is the subgradient of ``l1 * |w|`` (0 where ``w == 0``).
    State: ``momentum_buffer`` (when ``momentum > 0``).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False,
                 *, l1: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, l1=l1))

    def _check_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        group = super()._check_hyperparameters(group)
        real(self._name, group, "momentum", low=0.0)
        real(self._name, group, "dampening")
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{self._name}: nesterov=True requires momentum > 0 and "
                             f"dampening == 0, got momentum={group['momentum']}, "
                             f"dampening={group['dampening']}")
        return group

    _multi_tensor = "sgd"

    def _update(self, p, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        buf = state.get("momentum_buffer") if momentum else None
        # The first step fills the buffer with the gradient; it joins the state only then.
        first_step = bool(momentum) and buf is None
        if first_step:
            buf = backend.array_module(p.data).empty_like(p.data)
        apply_update("sgd_step", p.data, grad, [buf], group["lr"], momentum, group["dampening"],
                     group["weight_decay"], group["l1"], group["nesterov"], first_step)
        if first_step:
            state["momentum_buffer"] = buf

    def _host_step(self, items: list) -> None:
        """Small float32/float64 parameters in chunks per group and dtype
        (:func:`gpuconv.kernels.numpy_impl.optim.sgd_step_chunked`) where the registry's
        ``sgd_step`` is the numpy impl and ``_update`` is this class's; the rest one by
        one."""
        from ..kernels.numpy_impl import optim as host

        if type(self)._update is not SGD._update:
            super()._host_step(items)
            return
        chunks: dict[tuple, list] = {}
        chunkable: dict = {}   # per dtype: whether the registry's sgd_step is the numpy impl
        for item in items:
            _, group, p, grad, state = item
            data = p.data
            buffer = state.get("momentum_buffer") if group["momentum"] else None
            if (data.dtype in _CHUNKED_DTYPES and data.size < host.CHUNK_MAX_SIZE
                    and host.uniform(data, (data, grad, buffer))):
                chosen = chunkable.get(data.dtype)
                if chosen is None:
                    chosen = chunkable[data.dtype] = (
                        kernels.select("sgd_step", None, data).name == "numpy")
                if chosen:
                    chunks.setdefault((id(group), data.dtype), []).append(item)
                    continue
            self._update(p, grad, state, group)
        for chunk in chunks.values():
            group = chunk[0][1]
            buffers = firsts = None
            if group["momentum"]:   # a new buffer joins the state after its first update
                buffers = [s.get("momentum_buffer") for *_, s in chunk]
                firsts = [b is None for b in buffers]
                buffers = [np.empty_like(p.data) if b is None else b
                           for (_, _, p, _, _), b in zip(chunk, buffers)]
            host.sgd_step_chunked([p.data for _, _, p, _, _ in chunk],
                                  [g for _, _, _, g, _ in chunk], buffers,
                                  firsts or [False] * len(chunk), group["lr"],
                                  group["momentum"], group["dampening"],
                                  group["weight_decay"], group["l1"], group["nesterov"])
            if firsts is not None:
                for (*_, s), b, first in zip(chunk, buffers, firsts):
                    if first:
                        s["momentum_buffer"] = b

    def _device_entry(self, p, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        if not group["momentum"]:
            return (None,), 0
        first_step = "momentum_buffer" not in state
        if first_step:
            state["momentum_buffer"] = backend.array_module(p.data).empty_like(p.data)
        return (state["momentum_buffer"],), FLAG_FIRST_STEP if first_step else 0

    def _hyperparameters(self, group: dict[str, Any]) -> tuple:
        return (group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                group["l1"], group["nesterov"])
