"""numba.cuda implementations: the readable GPU kernels, registered as ``numba_cuda``.

On a GPU they take CuPy arrays (numba reads ``__cuda_array_interface__``, no copy). Under
the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI tests them on the CPU) the same
launchers take NumPy arrays. ``numba.cuda`` is imported on first launch, never at
registration, so ``import gpuconv`` stays cheap.

Every launch goes through :func:`launch`, which on a GPU queues the kernel on CuPy's
current stream (as the CUDA C kernels queue) and hands numba the CuPy arrays as device
arrays imported without synchronisation: by default numba synchronises the stream an
array was made on once per array argument, a host wait per array per launch. The arrays
come from the same stream the kernel runs on, so stream order is all the ordering needed.
"""
from __future__ import annotations

import functools
import os
from typing import Any

from ... import backend

# The dtypes the numba.cuda kernels are written and tested for.
DTYPES = ("float32", "float64")


def simulator_enabled() -> bool:
    """True when numba.cuda runs as the CPU simulator."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def is_available() -> bool:
    """numba_cuda impls run on CuPy arrays when a GPU is present."""
    return backend.gpu_available() and not simulator_enabled()


def launch(kernel, blocks: int, threads: int, *args: Any) -> None:
    """``kernel[blocks, threads](*args)``; on a GPU on CuPy's current stream, its CuPy
    arrays imported with ``numba.cuda.as_cuda_array(a, sync=False)`` (no host wait)."""
    if simulator_enabled():
        kernel[blocks, threads](*args)
        return
    kernel[blocks, threads, _current_stream()](*(_device_array(a) for a in args))


def _device_array(a: Any) -> Any:
    if backend.device_of(a) != "cuda":
        return a
    from numba import cuda

    return cuda.as_cuda_array(a, sync=False)


def _current_stream():
    """numba's handle of CuPy's current stream (the legacy default stream for pointer 0)."""
    return _numba_stream(backend.cupy_or_none().cuda.get_current_stream().ptr)


@functools.lru_cache(maxsize=64)
def _numba_stream(ptr: int):
    from numba import cuda

    return cuda.external_stream(ptr) if ptr else cuda.default_stream()
