"""RMSprop: gradients scaled by a running root mean square, optionally centred."""
from __future__ import annotations

from typing import Any, Iterable

from .. import backend
from .optimizer import Optimizer, apply_update, real

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop as ``torch.optim.RMSprop``, plus an L1 penalty.

    Per parameter ``w`` with gradient ``g`` (``v``, ``m`` and ``b`` start at 0)::

        g = g + weight_decay * w + l1 * sign(w)
        v = alpha * v + (1 - alpha) * g * g
        if centered:  m = alpha * m + (1 - alpha) * g;  s = sqrt(v - m * m) + eps
        else:         s = sqrt(v) + eps
        if momentum:  b = momentum * b + g / s;  w = w - lr * b
        else:         w = w - lr * g / s

    State: ``step``, ``square_avg`` (v), ``grad_avg`` (m, when centered),
    ``momentum_buffer`` (b, when momentum > 0).
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, *, l1: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, l1=l1))

    def _check_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        group = super()._check_hyperparameters(group)
        # alpha > 1 would make the running average negative and its square root NaN.
        real(self._name, group, "alpha", low=0.0, high=1.0)
        real(self._name, group, "eps", low=0.0, low_open=True)
        real(self._name, group, "momentum", low=0.0)
        group["centered"] = bool(group["centered"])
        return group

    _multi_tensor = "rmsprop"

    def _init_state(self, p, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            xp = backend.array_module(p.data)
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)

    def _buffers(self, state: dict[str, Any], group: dict[str, Any]) -> list:
        return [state["square_avg"], state["grad_avg"] if group["centered"] else None,
                state["momentum_buffer"] if group["momentum"] > 0 else None]

    def _update(self, p, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        self._init_state(p, state, group)
        state["step"] += 1
        apply_update("rmsprop_step", p.data, grad, self._buffers(state, group), group["lr"],
                     group["alpha"], group["eps"], group["weight_decay"], group["momentum"],
                     group["l1"])

    def _device_entry(self, p, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        self._init_state(p, state, group)
        return tuple(self._buffers(state, group)), 0

    def _hyperparameters(self, group: dict[str, Any]) -> tuple:
        return (group["lr"], group["alpha"], group["eps"], group["weight_decay"],
                group["momentum"], group["l1"])
