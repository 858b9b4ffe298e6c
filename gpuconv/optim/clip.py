"""Gradient clipping by the global norm of all gradients."""
from __future__ import annotations

import math
from typing import Iterable

from .. import _checks as C, backend

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters: Iterable, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False):
    """Scale all gradients in place so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: ``total = ||(||g_1||_p, ||g_2||_p, ...)||_p`` over
    the parameters whose ``grad`` is not None (``norm_type = inf`` takes the largest
    absolute entry), then every gradient is multiplied by ``min(1, max_norm / (total + 1e-6))``.
    Returns ``total`` (measured before clipping; 0.0 when no parameter has a gradient): a
    float for NumPy gradients; for CuPy gradients a 0-d float64 device array, computed in
    float64 by two launches per dtype and never read by the host, so that clipping costs no
    synchronisation (``float(total)`` reads it).
    A NaN or infinite ``total`` raises ``ValueError`` when ``error_if_nonfinite`` is true
    (on the GPU this reads the norm: one synchronisation); otherwise the gradients are scaled
    by the resulting NaN or 0 factor, as torch does.
    On the CPU each norm is taken of the values divided by their largest magnitude, so that a
    total the gradients' dtype can hold does not overflow (float32 gradients of 1e20) or
    underflow (1e-30 with norm_type 3) on the way; the GPU's float64 sums cover float32.
    """
    op = "clip_grad_norm_"
    max_norm = C.finite_float(op, "max_norm", max_norm, low=0.0)
    norm_type = _norm_order(op, norm_type)
    params = [parameters] if hasattr(parameters, "grad") else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    devices = {backend.device_of(g) for g in grads}
    if len(devices) > 1:
        raise ValueError(f"{op}: gradients are on several devices {sorted(devices)}")
    if devices == {"cuda"}:
        from ._multi_tensor import clip_grad_norm

        check = _nonfinite_error(op, norm_type) if error_if_nonfinite else None
        return clip_grad_norm(grads, max_norm, norm_type, check)
    xp = backend.array_module(grads[0])
    # Empty gradients add nothing to the norm (and the inf-norm of nothing is undefined).
    norms = [_scaled_norm(xp, g.reshape(-1), norm_type) for g in grads if g.size]
    if not norms:
        return 0.0
    total = float(_scaled_norm(xp, xp.stack(norms), norm_type))
    if error_if_nonfinite:
        _nonfinite_error(op, norm_type)(total)
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also true for NaN, which torch propagates into the gradients
        for g in grads:
            g *= coef
    return total


def _nonfinite_error(op: str, norm_type: float):
    def check(total: float) -> None:
        if not math.isfinite(total):
            raise ValueError(f"{op}: the total norm of order {norm_type} of the gradients is "
                             f"{total}; pass error_if_nonfinite=False to scale by it anyway")
    return check


def _scaled_norm(xp, a, order: float):
    """``||a||_order`` as ``m * ||a / m||_order``, m = max |a|: no power of an entry overflows
    or underflows unless the norm itself does. An inf or NaN entry gives the plain norm."""
    m = xp.max(xp.abs(a))
    if order == math.inf or not bool(xp.isfinite(m)) or m == 0:
        return xp.linalg.norm(a, ord=order)
    return m * xp.linalg.norm(a / m, ord=order)


def _norm_order(op: str, value) -> float:
    try:
        order = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: norm_type must be a real number, got {value!r}") from None
    if not (order > 0 and (math.isfinite(order) or order == math.inf)):
        raise ValueError(f"{op}: norm_type must be > 0 or inf, got {value!r}")
    return order
