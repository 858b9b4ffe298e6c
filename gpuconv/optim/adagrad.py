"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""
from __future__ import annotations

from typing import Any, Iterable

from .. import backend
from .optimizer import Optimizer, apply_update, real

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad as ``torch.optim.Adagrad``, plus an L1 penalty.

    Per parameter ``w`` with gradient ``g``, at step ``t = 1, 2, ...``::

        g = g + weight_decay * w + l1 * sign(w)
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g                       (s starts at initial_accumulator_value)
        w = w - lr_t * g / (sqrt(s) + eps)

    State: ``step``, ``sum``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, *, l1: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, l1=l1))

    def _check_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        group = super()._check_hyperparameters(group)
        real(self._name, group, "lr_decay", low=0.0)
        real(self._name, group, "initial_accumulator_value", low=0.0)
        real(self._name, group, "eps", low=0.0, low_open=True)
        return group

    _multi_tensor = "adagrad"

    def _init_state(self, p, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = backend.array_module(p.data).full_like(
                p.data, group["initial_accumulator_value"])

    def _update(self, p, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        self._init_state(p, state, group)
        state["step"] += 1
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        apply_update("adagrad_step", p.data, grad, [state["sum"]], clr, group["eps"],
                     group["weight_decay"], group["l1"])

    def _device_entry(self, p, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        self._init_state(p, state, group)
        return (state["sum"],), 0

    def _hyperparameters(self, group: dict[str, Any]) -> tuple:
        return (group["lr"], group["lr_decay"], group["eps"], group["weight_decay"],
                group["l1"])
