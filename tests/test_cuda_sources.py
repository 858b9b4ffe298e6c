"""Every CUDA C source compiles, as it is, for Ampere and Hopper: with nvcc (warnings as
errors), and with NVRTC given the options gpuconv's loader gives CuPy's ``RawModule``.

These are the checks CI can make without a GPU; the kernels' results are tested on a GPU by
the family test files (marker ``gpu``) and, without one, under the CUDA emulator
(tests/test_cuda_emulated.py)."""
import ctypes
import ctypes.util
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuconv._resources import cuda_source_dir
from gpuconv.kernels import cuda_c

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


def _nvrtc():
    """libnvrtc from the ``nvidia-cuda-nvrtc`` wheel (the test extra) or the system."""
    try:
        import nvidia.cu13
        candidates = sorted((Path(nvidia.cu13.__path__[0]) / "lib").glob("libnvrtc.so*"))
    except ImportError:
        candidates = []
    name = str(candidates[0]) if candidates else ctypes.util.find_library("nvrtc")
    return ctypes.CDLL(name) if name else None


NVRTC = _nvrtc()


def _nvrtc_compile(source: Path, arch: str) -> tuple[int, str, str]:
    """(result code, log, PTX) of NVRTC on the source text with the loader's options."""
    program = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), source.read_bytes(),
                                    source.name.encode(), 0, None, None) == 0
    options = [*cuda_c.NVRTC_OPTIONS, f"-I{cuda_source_dir()}", f"--gpu-architecture={arch}"]
    argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
    code = NVRTC.nvrtcCompileProgram(program, len(options), argv)
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(program, log)
    ptx = ""
    if code == 0:
        NVRTC.nvrtcGetPTXSize(program, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetPTX(program, buffer)
        ptx = buffer.value.decode()
    NVRTC.nvrtcDestroyProgram(ctypes.byref(program))
    return code, log.value.decode().strip(), ptx


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc is not installed (pip install nvidia-cuda-nvrtc)")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_cuda_source_compiles_with_nvrtc_as_the_loader_asks(source, arch):
    code, log, ptx = _nvrtc_compile(source, arch)
    assert code == 0 and not log, f"NVRTC on {source.name} for {arch}: code {code}\n{log}"
    entries = [line.split()[-1] for line in ptx.splitlines() if line.startswith(".visible .entry")]
    assert entries and all("_f32" in e or "_f64" in e for e in entries), entries
