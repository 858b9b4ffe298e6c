"""The CUDA C impls on the CPU: every ``gpu`` test, run again under the CUDA emulator.

Where there is no GPU, a second pytest process loads ``tests/cuda_emu/plugin.py``: CuPy is
replaced by an emulation that compiles ``kernels/*.cu`` with g++ and runs each launch's
threads on the CPU (``tests/cuda_emu/emu.h`` says how), and every test marked ``gpu`` runs
against it. That checks the CUDA C kernels' arithmetic and indexing, barriers and warp
shuffles, the launchers' argument types (marshalled as CuPy does), contiguity and grid
sizes, reads and writes outside an array (tests/cuda_emu/README.md), and the GPU training
path (CuPy arrays end to end, no host array mixed in). It does not check NVRTC
(tests/test_cuda_sources.py), real parallelism, or speed: those need the GPU machine
(bench/gpu_check.sh).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuconv import backend

TESTS = Path(__file__).resolve().parent


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present: the gpu tests run on it")
def test_every_gpu_test_passes_with_the_cuda_c_kernels_emulated_on_the_cpu():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "cuda_emu.plugin", "-m", "gpu", "-q",
           "-p", "no:cacheprovider", str(TESTS)]
    result = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (f"{' '.join(cmd)} -> exit {result.returncode}\n"
                                    f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}")
    assert " passed" in summary and not re.search(r"\d+ failed", summary), summary
