"""numba's CUDA target, imported in this one place, and the one function that launches a
numba_cuda kernel.

numba-cuda (the ``numba.cuda`` of the ``numba-cuda`` package) has entered maintenance and
``numba-cuda-mlir`` is its successor: every kernel module takes ``cuda`` from here and every
launcher goes through :func:`launch`, so moving to another provider of the same API is the
import below. Imported only when the first kernel is launched: numba reads
``NUMBA_ENABLE_CUDASIM`` (the CPU simulator) when its CUDA target is first imported, and the
import is slow.
"""
from numba import cuda

__all__ = ["cuda", "launch"]


def launch(kernel, blocks: int, threads: int, args: tuple, shared_mem: int = 0) -> None:
    """Run ``kernel`` on ``blocks`` blocks of ``threads`` threads, with ``shared_mem`` bytes of
    dynamic shared memory per block.

    On a GPU every argument is marshalled by numba-cuda: a device array (a CuPy array, read
    through its ``__cuda_array_interface__``, no copy), or a scalar typed by its Python or
    NumPy type. Never None: numba cannot pass it (``NotImplementedError: (none, None)``), so
    an absent array is an empty one beside a flag. tests/cuda_emu/numba_launches.py checks
    every launch the gpu tests make at this point, with the real numba-cuda compiler.
    """
    kernel[blocks, threads, 0, shared_mem](*args)
