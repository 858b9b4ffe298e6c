"""CUDA C implementations: CuPy ``RawModule`` launchers over ``kernels/<family>.cu``.

Each family module here (``conv.py``, ``pool.py``, ...) registers impls with
``device="cuda"``; nothing in this package imports CuPy until a kernel is launched.
A source file is compiled by NVRTC once per device and process (CuPy also caches the
binary on disk), with ``-D`` options selecting variants, never with generated source.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

from ... import backend
from ..._resources import cuda_source_dir

__all__ = ["kernel", "launch", "grid_1d", "THREADS_1D", "gpu_op"]

# A multiple of the warp size that keeps occupancy high for simple elementwise kernels.
THREADS_1D = 256
NVRTC_OPTIONS = ("-std=c++17",)


@functools.lru_cache(maxsize=None)
def _module(family: str, device_id: int, defines: tuple[str, ...]):
    cp = backend.cupy_or_none()
    src_dir = cuda_source_dir()
    source = (src_dir / f"{family}.cu").read_text()
    options = NVRTC_OPTIONS + (f"-I{src_dir}",) + tuple(f"-D{d}" for d in defines)
    return cp.RawModule(code=source, options=options)


def kernel(family: str, name: str, defines: Sequence[str] = ()):
    """The ``extern "C"`` kernel ``name`` of ``kernels/<family>.cu`` on the current device."""
    cp = backend.cupy_or_none()
    return _module(family, cp.cuda.Device().id, tuple(defines)).get_function(name)


def grid_1d(n: int, threads: int = THREADS_1D) -> tuple[int]:
    """Enough blocks of ``threads`` to cover ``n`` elements with one thread each."""
    return (max(1, math.ceil(n / threads)),)


def launch(family: str, name: str, grid: tuple, block: tuple, args: tuple,
           shared_mem: int = 0, defines: Sequence[str] = ()) -> None:
    """Launch a kernel; CuPy checks the launch's return code and raises on failure."""
    kernel(family, name, defines)(grid, block, args, shared_mem=shared_mem)


def gpu_op(op: str):
    """Decorator for GPU impls: GPU out-of-memory becomes a ``MemoryError`` that names the op
    and the shapes of its array arguments."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            cp = backend.cupy_or_none()
            try:
                return fn(*args, **kwargs)
            except cp.cuda.memory.OutOfMemoryError as exc:
                shapes = [tuple(a.shape) for a in args if hasattr(a, "shape")]
                raise MemoryError(f"{op}: out of GPU memory for input shapes {shapes}: {exc}") from exc
        return wrapper
    return deco
