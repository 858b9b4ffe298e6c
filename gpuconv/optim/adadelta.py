"""Adadelta: step sizes from running averages of squared gradients and squared updates."""
from __future__ import annotations

from typing import Any, Iterable

from .. import backend
from .optimizer import Optimizer, apply_update, real

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""Adadelta as ``torch.optim.Adadelta``, plus an L1 penalty.

    Per parameter ``w`` with gradient ``g`` (``v`` and ``u`` start at 0)::

        g = g + weight_decay * w + l1 * sign(w)
        v = rho * v + (1 - rho) * g * g
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d
        w = w - lr * d

    State: ``step``, ``square_avg`` (v), ``acc_delta`` (u).
    """

    def __init__(self, params: Iterable, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, *, l1: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, l1=l1))

    def _check_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        group = super()._check_hyperparameters(group)
        real(self._name, group, "rho", low=0.0, high=1.0)
        real(self._name, group, "eps", low=0.0, low_open=True)
        return group

    _multi_tensor = "adadelta"

    def _init_state(self, p, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            xp = backend.array_module(p.data)
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            state["acc_delta"] = xp.zeros_like(p.data)

    def _update(self, p, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        self._init_state(p, state, group)
        state["step"] += 1
        apply_update("adadelta_step", p.data, grad, [state["square_avg"], state["acc_delta"]],
                     group["lr"], group["rho"], group["eps"], group["weight_decay"], group["l1"])

    def _device_entry(self, p, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        self._init_state(p, state, group)
        return (state["square_avg"], state["acc_delta"]), 0

    def _hyperparameters(self, group: dict[str, Any]) -> tuple:
        return group["lr"], group["rho"], group["eps"], group["weight_decay"], group["l1"]
