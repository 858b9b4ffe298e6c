"""The fast CPU impls (impl name ``numpy``): NumPy + BLAS, numba where NumPy cannot
vectorise, on gpuconv's thread pool (:mod:`gpuconv.threads`). Every op registered through
:func:`register` configures the pool (and NumPy's BLAS at one thread) on first use.

float16 arrays compute in float32: NumPy has no float16 GEMM (its fallback loop is
hundreds of times slower than BLAS) and numba no float16 arithmetic on the CPU, so every
op registered here through :func:`register` accepts float16, converts float16 inputs to
float32, and converts the float32 results back (PyTorch's CPU float16 kernels accumulate in
float32 too). float16 never falls back to the slow ``reference`` impl.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import numpy as np

from ... import threads
from .. import register as _register

_HALF, _SINGLE = np.dtype(np.float16), np.dtype(np.float32)


def _is_half(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == _HALF


def _up(a):
    """float16 arrays (also directly inside a list or tuple) as float32; anything else,
    such as a ``saved`` list the op appends to, unchanged."""
    if _is_half(a):
        return a.astype(_SINGLE)
    if isinstance(a, (list, tuple)) and any(_is_half(e) for e in a):
        return type(a)(_up(e) for e in a)
    return a


def _down(r):
    """float32 arrays in a (nested) result back to float16."""
    if isinstance(r, np.ndarray) and r.dtype == _SINGLE:
        return r.astype(_HALF)
    if isinstance(r, (list, tuple)):
        return type(r)(_down(e) for e in r)
    return r


def _any_half(args: tuple) -> bool:
    """Whether an argument, or an array directly inside a list or tuple argument, is
    float16 (a plain loop: every CPU op call asks this)."""
    for a in args:
        if isinstance(a, np.ndarray):
            if a.dtype == _HALF:
                return True
        elif isinstance(a, (list, tuple)):
            for e in a:
                if isinstance(e, np.ndarray) and e.dtype == _HALF:
                    return True
    return False


def _numpy_op(fn: Callable, updates: tuple) -> Callable:
    """``fn`` as registered: the thread pool configured, float16 computed in float32."""
    @functools.wraps(fn)
    def op(*args):
        threads.ensure_configured()
        if not _any_half(args):
            return fn(*args)
        single = [_up(a) for a in args]
        result = _down(fn(*single))
        for i in updates:   # arguments the op updates in place get the new values back
            if _is_half(args[i]):
                np.copyto(args[i], single[i], casting="same_kind")
        return result
    return op


def register(op: str, name: str = "numpy", *, dtypes: Iterable[str] | None = None,
             updates: tuple = (), **kwargs) -> Callable:
    """:func:`gpuconv.kernels.register` for a numpy impl, float16 computed in float32
    (added to ``dtypes`` when those are listed); ``updates``: the positions of the arguments
    the op writes in place. Returns the function unchanged."""
    accepted = None if dtypes is None else (*dtypes, "float16")

    def deco(fn: Callable) -> Callable:
        _register(op, name, dtypes=accepted, **kwargs)(_numpy_op(fn, updates))
        return fn
    return deco
