"""Every numba_cuda kernel, compiled by the real numba-cuda compiler (not the simulator) for the
argument types its launchers really pass, with every argument marshalled as a real launch
marshals it: what numba's CUDA simulator cannot see, since it runs the kernels as Python
(None arguments, float64 arithmetic in float32 kernels, code NVVM or ptxas refuses).

A second pytest process runs the gpu tests' numba_cuda cases under
``tests/cuda_emu/numba_launches.py`` (its docstring says how each launch is checked) and
writes a report; the tests here read it. The launches are the gpu tests' own calls, so a new
kernel or launcher is covered the day a gpu test calls it, and a kernel that no gpu test
launches fails the first test. Needs numba-cuda with NVVM (``numba-cuda[cu13]``, in the test
extra) and g++ (the emulated CuPy).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuconv import backend

TESTS = Path(__file__).resolve().parent


def _nvvm_missing() -> str | None:
    """Why numba-cuda cannot compile here, or None (checked in a process of its own: this
    one runs numba's simulator)."""
    probe = ("from numba.cuda.cudadrv import nvvm; nvvm.NVVM()")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True)
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["no NVVM"])[-1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("the emulated CuPy needs g++")
    if backend.gpu_available():
        pytest.skip("a GPU is present: the numba_cuda gpu tests run on it")
    missing = _nvvm_missing()
    if missing:
        pytest.skip(f"numba-cuda cannot compile here (pip install -e '.[test]'): {missing}")
    path = tmp_path_factory.mktemp("numba") / "launches.json"
    env = {**os.environ, "GPUCONV_NUMBA_LAUNCHES": str(path), "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "cuda_emu.numba_launches", "-m", "gpu",
           "-k", "numba_cuda", "-q", "--tb=no", "-p", "no:cacheprovider", str(TESTS)]
    result = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True)
    # The kernels are not run, so the tests' own checks fail; only a crash or no report counts.
    if result.returncode not in (0, 1) or not path.exists():
        pytest.fail(f"{' '.join(cmd)} -> exit {result.returncode}\n{result.stdout[-5000:]}\n"
                    f"{result.stderr[-5000:]}")
    return json.loads(path.read_text())


def _signatures(report):
    for kernel, entry in sorted(report["kernels"].items()):
        for signature, result in entry["signatures"].items():
            yield kernel, signature, result


def test_every_numba_cuda_kernel_is_launched_by_a_gpu_test(report):
    assert report["defined"], "no numba_cuda kernel found"
    never = sorted(set(report["defined"]) - set(report["kernels"]))
    assert not never, f"no gpu test launches {never}: it is never compiled for a GPU"


def test_every_launch_argument_marshals_as_numba_cuda_marshals_it(report):
    problems = {(p["kernel"], p["argument"], p["problem"]): p["test"] for p in report["problems"]}
    assert not problems, "\n".join(f"{kernel} argument {i}: {problem} (first in {test})"
                                   for (kernel, i, problem), test in problems.items())


def test_every_launched_signature_compiles_for_sm80_and_sm90(report):
    failed = [f"{kernel}({signature}) for {cc}: {outcome}"
              for kernel, signature, result in _signatures(report)
              for cc, outcome in result["compiled"].items() if outcome not in ("cubin", "ptx")]
    assert sum(1 for _ in _signatures(report)) > 0
    assert not failed, "\n".join(failed)


def test_float32_launches_compute_in_float32(report):
    slow = [f"{kernel}({signature}): {lines[:2]}"
            for kernel, signature, result in _signatures(report) if result["float32"]
            for cc, lines in result["float64_lines"].items() if lines]
    assert not slow, "float64 instructions in float32 kernels:\n" + "\n".join(slow)
