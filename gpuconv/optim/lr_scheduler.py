"""Learning-rate schedules that set ``group["lr"]`` of an optimizer's parameter groups.

Call ``scheduler.step()`` once per epoch (or per iteration) after ``optimizer.step()``;
``ReduceLROnPlateau.step(metric)`` takes the monitored value. Constructing a scheduler
applies its value at step 0. ``state_dict()`` holds only numbers and lists of numbers, so
``{k: np.asarray(v) for k, v in sd.items()}`` stores it in an ``.npz`` without pickle, and
``load_state_dict`` accepts it back as read from ``np.load``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .. import _checks as C
from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR", "ReduceLROnPlateau"]


class _Scheduler:
    """What every scheduler shares: the optimizer, ``get_last_lr`` and the state dict of the
    attributes named in ``_state_keys``."""

    _state_keys: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a gpuconv.optim "
                            f"Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self._last_lr = self._group_lrs()

    def _group_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group after the latest ``step``."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's progress as numbers and lists of floats (not its settings)."""
        return {key: _copy(getattr(self, key)) for key in self._state_keys}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore progress saved by ``state_dict`` (the optimizer restores its own lr)."""
        name = type(self).__name__
        missing = [key for key in self._state_keys if key not in state_dict]
        if missing:
            raise ValueError(f"{name}: the state lacks {missing}")
        n_groups = len(self.optimizer.param_groups)
        values = {}
        for key in self._state_keys:
            current, value = getattr(self, key), state_dict[key]
            if isinstance(current, list):
                value = [float(v) for v in value]
                if len(value) != n_groups:
                    raise ValueError(f"{name}: state {key!r} has {len(value)} entries but the "
                                     f"optimizer has {n_groups} parameter groups")
            else:
                value = type(current)(value)
            values[key] = value
        for key, value in values.items():
            setattr(self, key, value)


def _copy(value):
    return list(value) if isinstance(value, list) else value


class LRScheduler(_Scheduler):
    """A schedule given in closed form: ``lr = _lr_at(base_lr, epoch)``.

    ``base_lr`` is each group's ``initial_lr`` (its ``lr`` when the first scheduler was made).
    The values equal ``torch.optim.lr_scheduler``'s, which torch computes recursively from
    the previous lr; here each step sets the lr afresh, so a manual change to
    ``group["lr"]`` lasts until the next ``step``.
    """

    _state_keys = ("last_epoch", "base_lrs", "_last_lr")

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(optimizer)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set each group's lr to the schedule's value there."""
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self._lr_at(base_lr, self.last_epoch)
        self._last_lr = self._group_lrs()


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = C.positive_int("StepLR", "step_size", step_size)
        self.gamma = C.finite_float("StepLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    After ``T_max`` epochs the cosine carries on (the lr rises again), as in torch.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = C.positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = C.finite_float("CosineAnnealingLR", "eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        cosine = 1 + math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * cosine / 2


class LinearLR(LRScheduler):
    """Linear warm-up (or decay) of a factor on the lr over ``total_iters`` epochs:
    ``lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters)
    / total_iters)``."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5) -> None:
        name = "LinearLR"
        self.start_factor = C.finite_float(name, "start_factor", start_factor, low=0.0,
                                           low_open=True, high=1.0)
        self.end_factor = C.finite_float(name, "end_factor", end_factor, low=0.0, high=1.0)
        self.total_iters = C.positive_int(name, "total_iters", total_iters)
        super().__init__(optimizer)

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        progress = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class ReduceLROnPlateau(_Scheduler):
    """Multiply the lr by ``factor`` when a metric stops improving, as torch's.

    A value is an improvement when it beats the best so far by the threshold: in "min" mode
    ``metric < best * (1 - threshold)`` ("rel") or ``metric < best - threshold`` ("abs"),
    mirrored in "max" mode. After more than ``patience`` epochs without improvement each
    group's lr becomes ``max(lr * factor, min_lr)`` (changes smaller than ``eps`` are
    skipped), then ``cooldown`` epochs pass before bad epochs count again.
    """

    _state_keys = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr")

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0, eps: float = 1e-8) -> None:
        name = "ReduceLROnPlateau"
        super().__init__(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{name}: threshold_mode must be 'rel' or 'abs', "
                             f"got {threshold_mode!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = C.finite_float(name, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = _non_negative_int(name, "patience", patience)
        self.threshold = C.finite_float(name, "threshold", threshold, low=0.0)
        self.cooldown = _non_negative_int(name, "cooldown", cooldown)
        self.eps = C.finite_float(name, "eps", eps, low=0.0)
        n_groups = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n_groups
        if len(min_lrs) != n_groups:
            raise ValueError(f"{name}: min_lr has {len(min_lrs)} entries but the optimizer has "
                             f"{n_groups} parameter groups")
        self.min_lrs = [C.finite_float(name, "min_lr", v, low=0.0) for v in min_lrs]
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, value: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < self.best * (1 - self.threshold)
            return value < self.best - self.threshold
        if self.threshold_mode == "rel":
            return value > self.best * (1 + self.threshold)
        return value > self.best + self.threshold

    def step(self, metrics: float) -> None:
        """Record this epoch's metric and reduce the lr if it has stalled for too long."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._group_lrs()

    def _reduce_lr(self) -> None:
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr


def _non_negative_int(op: str, name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{op}: {name} must be an int >= 0, got {value!r}")
    return value
