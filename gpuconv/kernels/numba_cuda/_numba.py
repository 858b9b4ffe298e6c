"""numba's CUDA target, imported in this one place, the one function that launches a
numba_cuda kernel, and the device queries a launcher makes.

numba-cuda (the ``numba.cuda`` of the ``numba-cuda`` package) has entered maintenance and
``numba-cuda-mlir`` is its successor: every kernel module takes ``cuda`` from here and every
launcher goes through :func:`launch`, so moving to another provider of the same API is the
import below. Imported only when the first kernel is launched: numba reads
``NUMBA_ENABLE_CUDASIM`` (the CPU simulator) when its CUDA target is first imported, and the
import is slow.
"""
from __future__ import annotations

import functools
from typing import Any

from numba import cuda

from ... import backend
from . import simulator_enabled

__all__ = ["cuda", "launch", "multiprocessor_count", "cooperative_grid_blocks"]


def launch(kernel, blocks, threads, args: tuple, shared_mem: int = 0) -> None:
    """Run ``kernel`` on ``blocks`` blocks of ``threads`` threads (ints or tuples), with
    ``shared_mem`` bytes of dynamic shared memory per block.

    On a GPU the kernel is queued on CuPy's current stream, as the CUDA C kernels are, and
    each CuPy array is handed to numba through ``as_cuda_array(a, sync=False)``: by default
    numba synchronises the stream an array was made on once per array argument, a host wait
    per array per launch, while the arrays come from the stream the kernel runs on, so stream
    order is all the ordering needed. Every other argument is marshalled by numba-cuda: a
    scalar typed by its Python or NumPy type. Never None: numba cannot pass it
    (``NotImplementedError: (none, None)``), so an absent array is an empty one beside a flag.
    tests/cuda_emu/numba_launches.py checks every launch the gpu tests make at this point,
    with the real numba-cuda compiler.
    """
    if simulator_enabled():
        kernel[blocks, threads, 0, shared_mem](*args)
        return
    kernel[blocks, threads, _current_stream(), shared_mem](*(_device_array(a) for a in args))


def multiprocessor_count() -> int:
    """The current GPU's number of SMs."""
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def cooperative_grid_blocks(kernel, args: tuple, threads: int, shared_mem: int) -> int:
    """How many blocks of a cooperative launch of ``kernel`` on ``args`` the current GPU keeps
    resident at once (the most a grid sync allows)."""
    overload = next(iter(kernel.specialize(*map(_device_array, args)).overloads.values()))
    return overload.max_cooperative_grid_blocks(threads, shared_mem)


def _device_array(a: Any) -> Any:
    if backend.device_of(a) != "cuda":
        return a
    return cuda.as_cuda_array(a, sync=False)


def _current_stream():
    """numba's handle of CuPy's current stream (the legacy default stream for pointer 0)."""
    return _numba_stream(backend.cupy_or_none().cuda.get_current_stream().ptr)


@functools.lru_cache(maxsize=64)
def _numba_stream(ptr: int):
    return cuda.external_stream(ptr) if ptr else cuda.default_stream()
