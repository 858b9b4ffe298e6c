"""numba.cuda implementations: the readable GPU kernels, registered as ``numba_cuda``.

On a GPU they take CuPy arrays (numba reads ``__cuda_array_interface__``, no copy). Under
the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI tests them on the CPU) the same
launchers take NumPy arrays. ``numba.cuda`` is imported on first launch (through
``_numba.py``, the one module that imports it), never at registration, so ``import gpuconv``
stays cheap.

Every launch goes through ``_numba.launch``, which on a GPU queues the kernel on CuPy's
current stream (as the CUDA C kernels queue) and hands numba the CuPy arrays as device
arrays imported without synchronisation: by default numba synchronises the stream an array
was made on once per array argument, a host wait per array per launch. The arrays come from
the same stream the kernel runs on, so stream order is all the ordering needed.

Kernels meant for float32 compute in float32: literals are made from the arrays' dtype
(``x.dtype.type(1)``), never written as ``0.0`` or ``1 - v`` (numba types those float64 and
an int op float32 as float64), and launchers pass hyperparameters as NumPy scalars of the
arrays' dtype. tests/test_numba_cuda_compiles.py holds every float32 launch's PTX to that.
"""
from __future__ import annotations

import importlib
import os

from ... import backend

# The dtypes the numba.cuda kernels are written and tested for.
DTYPES = ("float32", "float64")
# Threads per block of every numba_cuda launch.
THREADS = 128
# Grid-stride kernels need no more blocks than this to fill any current GPU.
MAX_BLOCKS = 1 << 16


def simulator_enabled() -> bool:
    """True when numba.cuda runs as the CPU simulator."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def is_available() -> bool:
    """numba_cuda impls run on CuPy arrays when a GPU is present."""
    return backend.gpu_available() and not simulator_enabled()


def run(family: str, name: str, threads_needed: int, *args, grid_stride: bool = False) -> None:
    """Launch kernel ``name`` of ``_<family>_kernels.py`` with one thread per item of
    ``threads_needed`` in blocks of THREADS; a grid-stride kernel gets at most MAX_BLOCKS
    blocks (its loop covers the rest), any other kernel every block it needs."""
    from . import _numba

    kernels = importlib.import_module(f"{__name__}._{family}_kernels")
    blocks = max(1, -(-threads_needed // THREADS))
    _numba.launch(getattr(kernels, name), min(blocks, MAX_BLOCKS) if grid_stride else blocks,
                  THREADS, args)


def optional(a, like):
    """``(a, True)``, or for ``a is None`` an empty array of ``like``'s dtype and device and
    False: what a kernel gets for an absent array (numba cannot pass None) and the flag that
    says so."""
    if a is not None:
        return a, True
    return backend.array_module(like).empty((0,), like.dtype), False
