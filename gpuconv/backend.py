"""Array modules, devices and zero-copy interop.

gpuconv computes on NumPy arrays (CPU) and CuPy arrays (NVIDIA GPU). Any other array
that speaks DLPack or ``__cuda_array_interface__`` (torch, JAX, numba device arrays) is
viewed as one of those two without a copy, and results are handed back as the caller's
kind. CuPy is imported only when a GPU array or device is actually asked for.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import Any, Callable

import numpy as np

__all__ = [
    "array_module", "device_of", "cupy_or_none", "gpu_available", "resolve_device",
    "to_device", "to_numpy", "import_array", "export_array", "interop", "empty", "poisoned",
    "ForeignArrayError", "channels_last",
]


def cupy_or_none():
    """The ``cupy`` module if it is importable, else None (imported only on first call)."""
    return _cupy()


@functools.lru_cache(maxsize=None)
def _cupy():
    try:
        return importlib.import_module("cupy")
    except Exception:  # ImportError, or a CUDA runtime that fails to load
        return None


@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _is_cupy(x: Any) -> bool:
    # Checked by module name so that no CuPy import happens for NumPy arrays; NumPy's own
    # array type first, because every op asks this of its arguments several times.
    t = type(x)
    return t is not np.ndarray and t.__module__.split(".")[0] == "cupy"


def array_module(x: Any):
    """``numpy`` or ``cupy``: the module whose functions operate on ``x``."""
    if _is_cupy(x):
        return _cupy()
    return np


def device_of(x: Any) -> str:
    """``"cpu"`` for NumPy arrays, ``"cuda"`` for CuPy arrays."""
    return "cpu" if type(x) is np.ndarray or not _is_cupy(x) else "cuda"


def resolve_device(device: str) -> str:
    """Turn ``"auto" | "cpu" | "cuda"`` into ``"cpu"`` or ``"cuda"``.

    ``"auto"`` picks the GPU when CuPy sees one. Asking for ``"cuda"`` where there is
    none raises a ``RuntimeError`` that says why.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "cuda"
    if device == "cuda":
        reason = "CuPy is not installed" if _cupy() is None else "CuPy sees no CUDA device"
        raise RuntimeError(f"device='cuda' was requested but {reason}; "
                           "install gpuconv[cuda13] (or [cuda12]) on a machine with an NVIDIA GPU")
    return "cpu"


def to_device(x: Any, device: str):
    """Copy ``x`` to ``device`` (``"cpu"`` or ``"cuda"``) if it is not there already."""
    device = resolve_device(device)
    if device == "cuda":
        return _cupy().asarray(x)
    return to_numpy(x)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array with the contents of ``x`` (a copy only if ``x`` lives on the GPU)."""
    if _is_cupy(x):
        return x.get()
    return np.asarray(x)


# --------------------------------------------------------------------------- allocation

_poison = False


def empty(shape, dtype, xp=np):
    """An uninitialised output array; implementations allocate their outputs through this.

    Inside ``poisoned()`` (the tests) it is filled with NaN, so an element that a kernel
    forgets to write shows up as NaN instead of as stale memory that happens to be right.
    """
    if _poison and np.issubdtype(np.dtype(dtype), np.floating):
        return xp.full(shape, np.nan, dtype=dtype)
    return xp.empty(shape, dtype=dtype)


def poisoning() -> bool:
    """Whether :func:`empty` fills floating outputs with NaN here (inside ``poisoned()``)."""
    return _poison


class poisoned:
    """Context manager: outputs allocated with :func:`empty` start as NaN."""

    def __enter__(self):
        global _poison
        self._old, _poison = _poison, True
        return self

    def __exit__(self, *exc):
        global _poison
        _poison = self._old
        return False


# --------------------------------------------------------------------------- interop

def _library_of(x: Any) -> str:
    return type(x).__module__.split(".")[0]


class ForeignArrayError(TypeError):
    """A foreign array (torch, JAX, ...) that cannot be viewed as a NumPy or CuPy array."""


def _check_importable(x: Any, lib: str) -> None:
    """Raise :class:`ForeignArrayError` saying why ``x`` cannot be viewed without a copy."""
    if getattr(x, "requires_grad", False):
        raise ForeignArrayError(
            f"is a {lib} tensor that requires grad; gpuconv.functional takes plain arrays and "
            "has no autograd (its backward functions are explicit). For autograd, use the "
            "PyTorch integration, gpuconv.torch (the ops as PyTorch custom ops), or pass "
            "tensor.detach()")
    dtype = str(getattr(x, "dtype", ""))
    if "bfloat16" in dtype:
        raise ForeignArrayError(
            f"is a {dtype} array; NumPy and CuPy have no bfloat16, so no gpuconv op takes one "
            "through this interface yet: convert it with .float() (or .half())")


def import_array(x: Any):
    """View ``x`` as a NumPy or CuPy array without copying.

    Returns ``(array, kind)`` where ``kind`` names the library the caller used
    (``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"``, ...). Python scalars and lists
    become NumPy arrays. A foreign array that cannot be viewed (a torch tensor that requires
    grad, a bfloat16 array, a GPU array without CuPy) raises :class:`ForeignArrayError`.
    """
    lib = _library_of(x)
    if isinstance(x, np.ndarray):
        return x, "numpy"
    if lib == "cupy":
        return x, "cupy"
    # __dlpack__ first: torch raises (not AttributeError) when asked for the CUDA array
    # interface of a tensor that requires grad.
    foreign = hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__")
    if foreign:
        _check_importable(x, lib)
    if hasattr(x, "__dlpack__") and int(x.__dlpack_device__()[0]) == 1:  # kDLCPU
        return np.from_dlpack(x), lib
    if foreign:
        if _cupy() is None:
            raise ForeignArrayError(f"is a {lib} array on a GPU, which needs CuPy: install "
                                    "gpuconv[cuda13] (or [cuda12])")
        if hasattr(x, "__cuda_array_interface__"):
            return _cupy().asarray(x), lib
        return _cupy().from_dlpack(x), lib
    if isinstance(x, np.generic):
        return np.asarray(x), "numpy"
    return np.asarray(x), "numpy"


def export_array(a: Any, kind: str):
    """Hand ``a`` (NumPy or CuPy) back as the library ``kind`` without copying."""
    if kind in ("numpy", "cupy") or not hasattr(a, "__dlpack__"):
        return a
    if kind == "torch":
        import torch
        return torch.from_dlpack(a)
    if kind == "jax" or kind == "jaxlib":
        import jax.numpy as jnp
        return jnp.from_dlpack(a)
    mod = sys.modules.get(kind)
    if mod is not None and hasattr(mod, "from_dlpack"):
        return mod.from_dlpack(a)
    return a


def _is_foreign_array(x: Any) -> bool:
    # Python numbers and strings first (no array library subclasses them), then the rest.
    if x is None or isinstance(x, (np.ndarray, int, float, str)) or _is_cupy(x):
        return False
    return hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__")


def _export_tree(out: Any, kind: str):
    if isinstance(out, tuple):
        return tuple(_export_tree(o, kind) for o in out)
    if isinstance(out, list):
        return [_export_tree(o, kind) for o in out]
    if out is None or isinstance(out, (int, float)):
        return out
    if isinstance(out, np.generic):  # a NumPy reduction's scalar: hand back a 0-d array
        out = np.asarray(out)
    return export_array(out, kind)


# Argument types that are never foreign arrays, nor hold one: every op call from NumPy or
# CuPy code has only these (and tuples of them), and skips the import walk.
_NATIVE = frozenset({np.ndarray, int, float, bool, str, type(None), np.float32, np.float64})


def _all_native(values) -> bool:
    for v in values:
        t = type(v)
        if t in _NATIVE:
            continue
        if t is tuple and all(type(e) in _NATIVE for e in v):
            continue
        if not _is_cupy(v):
            return False
    return True


def _import_tree(x: Any, kinds: list, op: str, name: str):
    if _is_foreign_array(x):
        try:
            arr, kind = import_array(x)
        except ForeignArrayError as exc:
            raise ForeignArrayError(f"{op}: {name} {exc}") from None
        kinds.append(kind)
        return arr
    if isinstance(x, (tuple, list)) and any(_is_foreign_array(e) for e in x):
        return type(x)(_import_tree(e, kinds, op, f"{name}[{i}]") for i, e in enumerate(x))
    return x


def interop(fn: Callable) -> Callable:
    """Decorator for public ops: foreign arrays in (torch, JAX, ...), the same kind out.

    Positional and keyword arguments that are foreign arrays (or tuples/lists of them) are
    viewed as NumPy/CuPy arrays; array results are exported back to the kind of the
    first foreign argument. NumPy and CuPy callers pay only an isinstance check.
    """
    names = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _all_native(args) and (not kwargs or _all_native(kwargs.values())):
            return fn(*args, **kwargs)
        kinds: list = []
        args = tuple(_import_tree(a, kinds, fn.__name__,
                                  names[i] if i < len(names) else "an argument")
                     for i, a in enumerate(args))
        kwargs = {k: _import_tree(v, kinds, fn.__name__, k) for k, v in kwargs.items()}
        out = fn(*args, **kwargs)
        if not kinds:
            return out
        return _export_tree(out, kinds[0])
    return wrapper


def channels_last(x):
    """``x`` (N, C, H, W) with its memory in NHWC order (PyTorch's ``channels_last``): the
    same shape and values; the implicit-GEMM kernels read it without a transpose, and their
    output for it is channels-last too. A copy unless ``x`` is channels-last already."""
    xp = array_module(x)
    if x.ndim != 4:
        raise ValueError(f"channels_last: expected (N, C, H, W), got shape {tuple(x.shape)}")
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
