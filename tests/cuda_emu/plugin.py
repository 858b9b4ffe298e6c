"""pytest plugin: run the ``gpu`` tests of the CUDA C impls on the CPU.

``python -m pytest -p cuda_emu.plugin -m gpu tests/...`` (with ``tests`` on the path) puts
the emulated CuPy of ``fake_cupy`` in place of CuPy before gpuconv looks for one, so that
``device="cuda"`` resolves to it and every ``cuda`` impl launches its real ``kernels/*.cu``
entry points, compiled by g++ (README.md here says how each launch is marshalled and
checked); ``cupyx`` provides only ``allow_synchronize``. numba.cuda stays on its simulator,
where ``numba_cuda`` impls are not counted as GPU impls, so the ``gpu`` tests of those skip
here (``numba_launches.py`` compiles them instead).

Grid-stride kernels get at most ``EMULATED_MAX_BLOCKS`` blocks, so that their loops take
several strides on the tests' small shapes (on a GPU the grid usually covers them at once).
"""
import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import types  # noqa: E402

from cuda_emu import fake_cupy, streams  # noqa: E402

sys.modules["cupy"] = fake_cupy
sys.modules["cupyx"] = types.SimpleNamespace(allow_synchronize=streams.allow_synchronize,
                                             DeviceSynchronized=streams.DeviceSynchronized)

from gpuconv.kernels import cuda_c  # noqa: E402

EMULATED_MAX_BLOCKS = 3
cuda_c.MAX_BLOCKS = EMULATED_MAX_BLOCKS


def pytest_report_header(config):
    return "cupy: emulated (tests/cuda_emu): CUDA C kernels compiled by g++ and run on the CPU"
