"""Every CUDA C source compiles with nvcc, as it is, for Ampere and Hopper, warnings as errors.

This is the check CI can make without a GPU; the kernels' results are tested on a GPU by
the family test files (marker ``gpu``)."""
import shutil
import subprocess

import pytest

from gpuconv._resources import cuda_source_dir

SOURCES = sorted(cuda_source_dir().glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc")


def test_cuda_sources_are_found_by_the_package():
    assert cuda_source_dir().is_dir()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_cuda_source_compiles_without_warnings(source, arch, tmp_path):
    cmd = [NVCC, "-std=c++17", f"-arch={arch}", "-Werror", "all-warnings",
           f"-I{cuda_source_dir()}", "--ptx", "-o", str(tmp_path / "out.ptx"), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
