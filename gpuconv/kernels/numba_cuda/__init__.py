"""numba.cuda implementations: the readable GPU kernels, registered as ``numba_cuda``.

On a GPU they take CuPy arrays (numba reads ``__cuda_array_interface__``, no copy). Under
the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI tests them on the CPU) the same
launchers take NumPy arrays. ``numba.cuda`` is imported on first launch, never at
registration, so ``import gpuconv`` stays cheap.
"""
from __future__ import annotations

import os

from ... import backend

# The dtypes the numba.cuda kernels are written and tested for.
DTYPES = ("float32", "float64")


def simulator_enabled() -> bool:
    """True when numba.cuda runs as the CPU simulator."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def is_available() -> bool:
    """numba_cuda impls run on CuPy arrays when a GPU is present."""
    return backend.gpu_available() and not simulator_enabled()
