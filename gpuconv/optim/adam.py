"""Adam and AdamW: bias-corrected running moments of the gradient."""
from __future__ import annotations

from typing import Any, Iterable

from .. import _checks as C, backend
from .optimizer import Optimizer, apply_update, real

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam as ``torch.optim.Adam``, plus an L1 penalty.

    Per parameter ``w`` with gradient ``g``, at step ``t = 1, 2, ...`` (``m``, ``v`` start at 0)::

        g = g + weight_decay * w + l1 * sign(w)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        if amsgrad:  v_max = max(v_max, v);  v_hat = v_max   else  v_hat = v
        w = w - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (v_max, amsgrad).
    """

    # AdamW decays the weights directly instead of adding weight_decay * w to the gradient.
    _decoupled_weight_decay = False
    _multi_tensor = "adam"

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, l1: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, l1=l1))

    def _check_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        group = super()._check_hyperparameters(group)
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"{self._name}: betas must be a pair of floats, got {betas!r}")
        group["betas"] = tuple(C.finite_float(self._name, f"betas[{i}]", b, low=0.0, high=1.0,
                                              high_open=True) for i, b in enumerate(betas))
        real(self._name, group, "eps", low=0.0, low_open=True)
        group["amsgrad"] = bool(group["amsgrad"])
        return group

    def _init_state(self, p, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            xp = backend.array_module(p.data)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)

    def _update(self, p, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        self._init_state(p, state, group)
        state["step"] += 1
        step, (beta1, beta2) = state["step"], group["betas"]
        buffers = [state["exp_avg"], state["exp_avg_sq"],
                   state["max_exp_avg_sq"] if group["amsgrad"] else None]
        apply_update("adam_step", p.data, grad, buffers, group["lr"], beta1, beta2, group["eps"],
                     group["weight_decay"], group["l1"], 1 - beta1 ** step, 1 - beta2 ** step,
                     self._decoupled_weight_decay)

    def _device_entry(self, p, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        self._init_state(p, state, group)
        return (state["exp_avg"], state["exp_avg_sq"],
                state["max_exp_avg_sq"] if group["amsgrad"] else None), 0

    def _hyperparameters(self, group: dict[str, Any]) -> tuple:
        beta1, beta2 = group["betas"]
        return (group["lr"], beta1, beta2, group["eps"], group["weight_decay"], group["l1"],
                self._decoupled_weight_decay)


class AdamW(Adam):
    r"""AdamW as ``torch.optim.AdamW``: Adam with decoupled weight decay, plus an L1 penalty.

    As :class:`Adam`, except that the gradient gets no ``weight_decay * w`` term and each
    step first shrinks the weights: ``w = w * (1 - lr * weight_decay)``.
    """

    _decoupled_weight_decay = True

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, l1: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, l1=l1)
