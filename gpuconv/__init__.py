"""gpuconv: hand-written GPU kernels for convolution, pooling and recurrent cells.

``import gpuconv`` is cheap: submodules (``functional``, ``nn``, ``optim``, ``data``,
``models``, ``train``, ``kernels``) load on first attribute access, and CuPy, numba and
torch are imported only when an operation needs them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("backend", "functional", "kernels", "nn", "optim", "init", "data", "models",
               "train", "cli", "threads", "benchmark", "testing", "device_checks", "graphs",
               "precision")


def set_num_threads(n: int) -> None:
    """Threads for the CPU kernels (numba and BLAS); see :mod:`gpuconv.threads`."""
    from .threads import set_num_threads as _set

    _set(n)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "F":
        return importlib.import_module(f"{__name__}.functional")
    raise AttributeError(f"module 'gpuconv' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
