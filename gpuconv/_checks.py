"""Argument checks shared by the public ops.

Every public op validates its inputs here before any implementation runs, so that a bad
call fails with a ``ValueError``/``TypeError`` that names the op, the argument and the
shapes, never with a crash, a wrong-shape output or an unexplained NaN.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from . import backend


def is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


_KIND_LETTERS = {np.floating: "f", np.integer: "iu"}


# NumPy dtypes that pass each kind's check at once (every op checks its arrays).
_COMMON = {np.floating: frozenset(np.dtype(d) for d in ("float16", "float32", "float64")),
           np.integer: frozenset(np.dtype(d) for d in ("int32", "int64"))}


def _array_of_kind(op: str, name: str, x: Any, kind, what: str,
                   ndim: int | Sequence[int] | None):
    if not (type(x) is np.ndarray and x.dtype in _COMMON[kind]):
        if not is_array(x):
            raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
        dtype = np.dtype(x.dtype)
        # ml_dtypes' bfloat16 is a floating-point type that NumPy does not class as
        # np.floating. The kind letter of one of NumPy's own dtypes answers the common cases
        # without issubdtype's class walk (ml_dtypes' float8 types have kind "f" but are not
        # floating).
        if not ((dtype.isbuiltin == 1 and dtype.kind in _KIND_LETTERS[kind])
                or np.issubdtype(dtype, kind)
                or (kind is np.floating and dtype.name == "bfloat16")):
            raise TypeError(f"{op}: {name} must have {what} dtype, got {x.dtype}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{op}: {name} must have {want} dimensions, got shape {tuple(x.shape)}")
    return x


def float_array(op: str, name: str, x: Any, ndim: int | Sequence[int] | None = None):
    """Check that ``x`` is a floating-point array (of rank ``ndim``) and return it.

    Python lists are not accepted: the caller chooses the dtype and device.
    """
    return _array_of_kind(op, name, x, np.floating, "a floating-point", ndim)


def int_array(op: str, name: str, x: Any, ndim: int | Sequence[int] | None = None):
    """Check that ``x`` is an integer array (class indices, token ids) and return it."""
    return _array_of_kind(op, name, x, np.integer, "an integer", ndim)


def same_kind(op: str, main_name: str, main: Any, **others: Any) -> None:
    """Arrays in ``others`` (None allowed) must share ``main``'s dtype and device."""
    for name, a in others.items():
        if a is None:
            continue
        if backend.device_of(a) != backend.device_of(main):
            raise ValueError(f"{op}: {name} is on {backend.device_of(a)} but {main_name} is on "
                             f"{backend.device_of(main)}")
        if a.dtype != main.dtype:
            raise TypeError(f"{op}: {name} has dtype {a.dtype} but {main_name} has dtype "
                            f"{main.dtype}; convert one of them")


def shape_is(op: str, name: str, x: Any, shape: tuple) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def shown(value: Any) -> str:
    """``value`` as an error message shows it: an array by its shape and dtype (its repr
    could fill the screen), anything else by a repr cut to a line."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


_SHOWN_CHARS = 80


def plain(*values: Any) -> bool:
    """Whether every value is an int, a str, a bool, None or a tuple of ints: arguments
    whose checks' answers may be kept by value (they are hashable and immutable)."""
    for v in values:
        t = type(v)
        if not (t is int or t is str or t is bool or v is None
                or (t is tuple and all(type(e) is int for e in v))):
            return False
    return True


def ntuple(op: str, name: str, value: Any, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """Normalise an int or a length-``n`` sequence of ints, each ``>= minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value),) * n
    elif (isinstance(value, (tuple, list)) and len(value) == n
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        values = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{op}: {name} must be an int or a sequence of {n} ints, "
                        f"got {shown(value)}")
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {shown(value)}")
    return values


def positive_int(op: str, name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {shown(value)}")
    return int(value)


def finite_float(op: str, name: str, value: Any, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in [low, high] (bounds optional, open where asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a real number, got {shown(value)}") from None
    if not math.isfinite(v):
        raise ValueError(f"{op}: {name} must be finite, got {shown(value)}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{op}: {name} must be {'>' if low_open else '>='} {low}, "
                         f"got {shown(value)}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{op}: {name} must be {'<' if high_open else '<='} {high}, "
                         f"got {shown(value)}")
    return v
