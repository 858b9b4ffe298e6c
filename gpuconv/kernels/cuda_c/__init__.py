"""CUDA C implementations: CuPy ``RawModule`` launchers over ``kernels/<family>.cu``.

Each family module here (``conv.py``, ``pool.py``, ...) registers impls with
``device="cuda"``; nothing in this package imports CuPy until a kernel is launched.
A source file is compiled by NVRTC once per device and process (CuPy also caches the
binary on disk), with ``-D`` options selecting variants, never with generated source.

CuPy keys its on-disk cache by the source text and the options, not by the headers the
source includes, so the options carry a hash of every header a source includes
(``-DGPUCONV_HEADERS_SHA256=...``): a changed header is a new key, never a stale binary.
Every ``-D`` variant a launcher uses is declared in ``DEFINE_VARIANTS`` by the family's
launcher module (``<family>.py``), so that CI compiles exactly those
(tests/test_cuda_sources.py); a launch with an undeclared one raises.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import math
import re
from pathlib import Path
from typing import Any, Sequence

from ... import backend
from ..._resources import cuda_source_dir

import numpy as np

__all__ = ["kernel", "launch", "grid_1d", "gpu_op", "entry_point", "run_threads", "run_blocks",
           "compile_states", "nvrtc_options", "cuda_versions", "THREADS_1D", "REDUCE_THREADS",
           "MAX_BLOCKS", "DTYPES", "NULL", "NVRTC_OPTIONS", "DEFINE_VARIANTS",
           "declared_variants", "device_properties"]

# A multiple of the warp size that keeps occupancy high for simple elementwise kernels.
THREADS_1D = 256
# Threads of the block-reduction kernels: must equal GPUCONV_REDUCE_THREADS in common.cuh.
REDUCE_THREADS = 256
# Grid-stride kernels need no more blocks than this to fill any current GPU.
MAX_BLOCKS = 1 << 16
# The dtypes every family's entry points are instantiated for, and their name suffixes.
DTYPES = ("float32", "float64")
_SUFFIX = {"float32": "f32", "float64": "f64"}
# A null device pointer; each kernel documents what a null argument means to it.
NULL = np.uint64(0)
# gpuconv's own NVRTC options; CuPy adds its own around them (tests/test_cuda_sources.py
# compiles with both, as CuPy 14 would).
NVRTC_OPTIONS = ("-std=c++17",)
# The -D variants each family's launchers compile besides the plain source: {family: (defines,
# ...)}, each defines a tuple of "NAME=VALUE" strings; filled in by the launcher modules.
DEFINE_VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {}
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def _included_headers(source: str, src_dir: Path) -> list[Path]:
    """Every header of ``src_dir`` that ``source`` includes, directly or through another
    header (quoted includes; a name that is not in ``src_dir`` is not ours)."""
    found: dict[str, Path] = {}
    pending = _INCLUDE.findall(source)
    while pending:
        name = pending.pop()
        path = src_dir / name
        if name in found or not path.is_file():
            continue
        found[name] = path
        pending.extend(_INCLUDE.findall(path.read_text()))
    return [found[name] for name in sorted(found)]


def nvrtc_options(family: str, defines: Sequence[str] = ()) -> tuple[str, ...]:
    """The options gpuconv gives CuPy's ``RawModule`` for ``kernels/<family>.cu``: the
    language standard, the include directory, the hash of the included headers (CuPy's cache
    key) and the variant's ``-D`` defines."""
    src_dir = cuda_source_dir()
    digest = hashlib.sha256()
    for header in _included_headers((src_dir / f"{family}.cu").read_text(), src_dir):
        digest.update(header.name.encode() + b"\0" + header.read_bytes() + b"\0")
    return (*NVRTC_OPTIONS, f"-I{src_dir}", f"-DGPUCONV_HEADERS_SHA256={digest.hexdigest()[:16]}",
            *(f"-D{d}" for d in defines))


def declared_variants() -> dict[str, tuple[tuple[str, ...], ...]]:
    """``DEFINE_VARIANTS`` once every family's launcher module has declared its own."""
    for source in cuda_source_dir().glob("*.cu"):
        if importlib.util.find_spec(f"{__name__}.{source.stem}") is not None:
            importlib.import_module(f"{__name__}.{source.stem}")
    return DEFINE_VARIANTS


@functools.lru_cache(maxsize=None)
def _module(family: str, device_id: int, defines: tuple[str, ...], cooperative: bool = False):
    if defines and defines not in DEFINE_VARIANTS.get(family, ()):
        raise ValueError(f"{family}.cu: the -D variant {defines} is not declared in "
                         "cuda_c.DEFINE_VARIANTS, so CI does not compile it")
    cp = backend.cupy_or_none()
    source = (cuda_source_dir() / f"{family}.cu").read_text()
    # A cooperative module launches every kernel with cuLaunchCooperativeKernel.
    return cp.RawModule(code=source, options=nvrtc_options(family, defines),
                        enable_cooperative_groups=cooperative)


def _version(number: int) -> str:
    """CUDA's version integer (13020) as "13.2"."""
    return f"{number // 1000}.{number % 1000 // 10}"


def cuda_versions() -> dict[str, str]:
    """The versions of the CUDA parts CuPy uses here: {"nvrtc", "runtime", "driver"}, each
    "major.minor" (the driver's is the newest CUDA it supports)."""
    cp = backend.cupy_or_none()
    major, minor = cp.cuda.nvrtc.getVersion()
    return {"nvrtc": f"{major}.{minor}",
            "runtime": _version(cp.cuda.runtime.runtimeGetVersion()),
            "driver": _version(cp.cuda.runtime.driverGetVersion())}


def compile_states() -> dict[str, str]:
    """``{"conv.cu": "compiled" | "failed: <first line of the error>", ...}`` for every
    CUDA C source, compiled now for the current device (then cached like any launch)."""
    cp = backend.cupy_or_none()
    states = {}
    for source in sorted(cuda_source_dir().glob("*.cu")):
        try:
            _module(source.stem, cp.cuda.Device().id, ()).compile()
            states[source.name] = "compiled"
        except Exception as exc:  # any NVRTC or driver error is the state to report
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            states[source.name] = f"failed: {lines[0]}"
    return states


def device_properties() -> dict:
    """cudaGetDeviceProperties of the current device, read once per device: the call fills
    the whole struct, far too slow for every launch."""
    cp = backend.cupy_or_none()
    return _device_properties(cp.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _device_properties(device_id: int) -> dict:
    return backend.cupy_or_none().cuda.runtime.getDeviceProperties(device_id)


def kernel(family: str, name: str, defines: Sequence[str] = (), cooperative: bool = False):
    """The ``extern "C"`` kernel ``name`` of ``kernels/<family>.cu`` on the current device;
    ``cooperative``: from the module whose launches are cooperative (all blocks resident)."""
    cp = backend.cupy_or_none()
    return _function(family, name, cp.cuda.Device().id, tuple(defines), cooperative)


@functools.lru_cache(maxsize=None)
def _function(family: str, name: str, device_id: int, defines: tuple[str, ...],
              cooperative: bool):
    # CuPy's get_function looks the kernel up in the module (a driver call and a new
    # Function object) every time: once per kernel and device is enough.
    return _module(family, device_id, defines, cooperative).get_function(name)


def grid_1d(n: int, threads: int = THREADS_1D) -> tuple[int]:
    """Enough blocks of ``threads`` to cover ``n`` elements with one thread each."""
    return (max(1, math.ceil(n / threads)),)


def entry_point(name: str, dtype) -> str:
    """The ``extern "C"`` name of kernel ``name`` instantiated for ``dtype``."""
    return f"{name}_{_SUFFIX[np.dtype(dtype).name]}"


def run_threads(family: str, name: str, dtype, threads: int, args: tuple) -> None:
    """Launch a grid-stride kernel with at least ``threads`` threads (capped at MAX_BLOCKS
    blocks of THREADS_1D; the kernel's loop covers the rest)."""
    blocks = min(MAX_BLOCKS, max(1, math.ceil(threads / THREADS_1D)))
    launch(family, entry_point(name, dtype), (blocks,), (THREADS_1D,), args)


def run_blocks(family: str, name: str, dtype, blocks: int, args: tuple) -> None:
    """Launch a block-per-item reduction kernel: ``blocks`` blocks (capped at MAX_BLOCKS; the
    kernel strides over the rest) of exactly REDUCE_THREADS threads."""
    launch(family, entry_point(name, dtype), (min(MAX_BLOCKS, max(1, blocks)),),
           (REDUCE_THREADS,), args)


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
