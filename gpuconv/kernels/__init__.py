"""The op registry: for each op, its implementations and how one is chosen.

An *implementation* is a function registered under ``(op, impl)``. Every implementation
of an op takes the same arguments, already validated and normalised by the public function
in :mod:`gpuconv.functional` (tuples for stride/padding, arrays of one dtype on one device),
and returns the same results.

Implementations live in ``gpuconv/kernels/<kind>/<family>.py``; the registry imports those
modules the first time an op is looked up, so ``import gpuconv`` stays cheap. Kinds:

- ``reference``: plain NumPy, any float dtype, the oracle for every other impl;
- ``numpy_impl`` (impl name ``numpy``): the fast CPU path;
- ``numba_cuda``: readable GPU kernels in ``numba.cuda``;
- ``cuda_c``: CuPy ``RawModule`` launchers over ``kernels/*.cu``.

Choosing: ``impl=`` forces one; otherwise the available impl for the arrays' device with the
highest priority wins (a priority may be a function of the call's arguments, so that e.g.
a direct kernel wins for depthwise convolution and im2col + GEMM otherwise).

The 1-D public ops (``conv1d``, ``max_pool1d``, ...) run as their 2-D ops on a view with
H = 1, so they have no implementations of their own: the registry answers for them with
those of the op they run as (:data:`RUNS_AS`).
"""
from __future__ import annotations

import importlib as _importlib
import importlib.util as _importlib_util
import operator as _operator
from dataclasses import dataclass as _dataclass, field as _field
from typing import Any, Callable, Iterable, Union

import numpy as _np

from .. import backend as _backend

__all__ = ["Impl", "register", "implementations", "available", "ops", "select", "dispatch",
           "RUNS_AS", "KINDS", "FAMILIES"]

# Public ops that the functional layer runs as another registered op (on an H = 1 view).
RUNS_AS = {f"{stem}1d{suffix}": f"{stem}2d{suffix}"
           for stem in ("conv", "max_pool", "avg_pool", "adaptive_avg_pool")
           for suffix in ("", "_backward")}

KINDS = ("reference", "numpy_impl", "numba_cuda", "cuda_c")
FAMILIES = ("conv", "conv_igemm", "pool", "activation", "linear", "loss", "norm", "rnn",
            "rnn_persistent", "optim", "kmeans")

Priority = Union[int, Callable[..., int]]


@_dataclass(frozen=True)
class Impl:
    """One registered implementation of one op."""

    op: str
    name: str
    fn: Callable
    device: str                      # "cpu" or "cuda"
    dtypes: frozenset | None         # NumPy dtypes accepted; None = any floating dtype
    is_available: Callable[[], bool] = _field(compare=False)
    priority: Priority = 0

    def supports(self, dtype) -> bool:
        return self.dtypes is None or _np.dtype(dtype) in self.dtypes

    def score(self, args, kwargs) -> int:
        return self.priority(*args, **kwargs) if callable(self.priority) else self.priority


_REGISTRY: dict[str, dict[str, Impl]] = {}
_loaded = False
# select's default choices on the CPU, by (op, device, dtype), where every CPU impl's
# priority is a number and every CPU impl is always available (the choice then depends on
# nothing else; the GPU impls, whose priorities may weigh the arguments, never compete for
# a CPU array): ``(the op's impls, chosen)``, trusted only while the op's registered impls
# are still those (a test's monkeypatch, a late register or a replaced entry makes select
# choose again). Every CPU op call asks; the choice loop cost some 3 us a call, and
# conv2d_backward at batch 1 took 82 us without its kept choice, 70 with it.
_CHOICES: dict[tuple, tuple] = {}


def _always() -> bool:
    return True


def register(op: str, name: str, *, device: str = "cpu", dtypes: Iterable[str] | None = None,
             available: Callable[[], bool] | None = None, priority: Priority = 0):
    """Decorator: register ``fn`` as implementation ``name`` of ``op``.

    ``available`` says whether it can run on this machine (default: always, on CPU;
    ``backend.gpu_available`` for ``device="cuda"``). ``priority`` ranks the impls of one
    device when the caller does not force one.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if available is None:
        available = _backend.gpu_available if device == "cuda" else _always

    def deco(fn: Callable) -> Callable:
        impls = _REGISTRY.setdefault(op, {})
        if name in impls:
            raise ValueError(f"{op!r} already has an implementation named {name!r}")
        accepted = None if dtypes is None else frozenset(_np.dtype(d) for d in dtypes)
        impls[name] = Impl(op, name, fn, device, accepted, available, priority)
        return fn
    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for kind in KINDS:
        if _importlib_util.find_spec(f"{__name__}.{kind}") is None:
            continue
        for family in FAMILIES:
            mod = f"{__name__}.{kind}.{family}"
            if _importlib_util.find_spec(mod) is not None:
                _importlib.import_module(mod)


def ops() -> list[str]:
    """Every op that has at least one implementation (the 1-D ops of :data:`RUNS_AS` too)."""
    _load()
    return sorted(set(_REGISTRY) | {op for op, runs_as in RUNS_AS.items() if runs_as in _REGISTRY})


def implementations(op: str) -> list[Impl]:
    """Every registered implementation of ``op``, runnable here or not (for a 1-D op, those
    of the 2-D op it runs as)."""
    _load()
    registered = RUNS_AS.get(op, op)
    if registered not in _REGISTRY:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(ops())}")
    return list(_REGISTRY[registered].values())


def available(op: str, array: Any = None) -> list[str]:
    """Names of the implementations of ``op`` that can run on this machine.

    With ``array``, only those that run on that array's device and dtype.
    """
    out = []
    for impl in implementations(op):
        if array is not None and (impl.device != _backend.device_of(array)
                                  or not impl.supports(array.dtype)):
            continue
        if impl.is_available():
            out.append(impl.name)
    return out


def select(op: str, impl: str | None, array: Any, args: tuple = (), kwargs: dict | None = None) -> Impl:
    """The implementation of ``op`` to run for ``array`` (the op's main input)."""
    if impl is None:   # a kept choice first (_CHOICES)
        known = _CHOICES.get((op, _backend.device_of(array), array.dtype))
        if known is not None:
            impls = _REGISTRY.get(op)
            if (impls is not None and len(impls) == len(known[0])
                    and all(map(_operator.is_, impls.values(), known[0]))):
                return known[1]
    kwargs = kwargs or {}
    _load()
    if op not in _REGISTRY:
        implementations(op)  # raises the unknown-op error
    impls = _REGISTRY[op]
    device = _backend.device_of(array)
    dtype = array.dtype
    if impl is not None:
        if impl not in impls:
            raise ValueError(f"{op}: unknown impl {impl!r}; registered: {', '.join(impls)}")
        chosen = impls[impl]
        if chosen.device != device:
            raise ValueError(f"{op}: impl {impl!r} runs on {chosen.device} arrays, "
                             f"but the input is a {device} array")
        if not chosen.supports(dtype):
            raise TypeError(f"{op}: impl {impl!r} does not support dtype {dtype} (input shape "
                            f"{tuple(array.shape)}); it supports "
                            f"{sorted(str(d) for d in chosen.dtypes)}")
        if not chosen.is_available():
            raise RuntimeError(f"{op}: impl {impl!r} cannot run on this machine")
        return chosen
    # The first of the highest-scoring impls that run here.
    chosen, best = None, None
    for i in impls.values():
        if i.device != device or not i.supports(dtype) or not i.is_available():
            continue
        score = i.score(args, kwargs)
        if chosen is None or score > best:
            chosen, best = i, score
    if (chosen is not None and device == "cpu"
            and all(not callable(i.priority) and i.is_available is _always
                    for i in impls.values() if i.device == "cpu")):
        _CHOICES[(op, device, dtype)] = (tuple(impls.values()), chosen)
    if chosen is None:
        raise TypeError(f"{op}: no implementation runs on a {device} array of dtype {dtype} "
                        f"(input shape {tuple(array.shape)}); registered: "
                        f"{', '.join(f'{i.name} ({i.device})' for i in impls.values())}")
    return chosen


def dispatch(op: str, impl: str | None, *args, **kwargs):
    """Select an implementation for ``args[0]`` and call it with ``args`` and ``kwargs``."""
    chosen = select(op, impl, args[0], args, kwargs)
    return chosen.fn(*args, **kwargs)


def __dir__() -> list[str]:
    # The implementation packages (reference, numpy_impl, ...) become attributes once the
    # registry loads them; they are not part of this module's API.
    return sorted(__all__)
