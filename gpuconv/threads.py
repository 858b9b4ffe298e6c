"""How many CPU threads gpuconv's CPU kernels use.

The CPU path runs many small GEMMs (OpenBLAS, through NumPy) between numba kernels. On a
small machine the two thread pools spin against each other: on the 2-core development machine
one LeNet-5 training run took 148 s with both pools at their defaults and 6.2 s with one
thread each (bench/NOTES.md). The command line therefore runs with one thread unless told
otherwise; library users choose with :func:`set_num_threads`.
"""
from __future__ import annotations

import os

__all__ = ["set_num_threads", "default_threads"]


def default_threads() -> int:
    """``GPUCONV_NUM_THREADS`` if set, else 1."""
    value = os.environ.get("GPUCONV_NUM_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"GPUCONV_NUM_THREADS must be a positive int, got {value!r}") from None
    if n < 1:
        raise ValueError(f"GPUCONV_NUM_THREADS must be a positive int, got {value!r}")
    return n


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in numba's parallel kernels and in the BLAS library behind NumPy.

    The BLAS limit goes through threadpoolctl and lasts for the process.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=n, user_api="blas")
