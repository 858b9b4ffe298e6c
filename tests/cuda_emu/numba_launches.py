"""pytest plugin: every numba_cuda launch the gpu tests make, checked with the real numba-cuda
compiler and marshalled as numba-cuda marshals a real launch, without a GPU.

``python -m pytest -p cuda_emu.numba_launches -m gpu -k numba_cuda tests/`` (with ``tests``
on the path and ``GPUCONV_NUMBA_LAUNCHES`` naming the report to write) runs with the emulated
CuPy of ``fake_cupy`` and numba's real CUDA target (not its simulator), so the numba_cuda
impls count as GPU impls and their gpu tests call them on (emulated) CuPy arrays. Every launch
reaches ``gpuconv.kernels.numba_cuda._numba.launch``, which this plugin replaces by a check:

- each argument is typed as numba-cuda types it on a GPU: a device array through its
  ``__cuda_array_interface__`` (C, F or A layout from its strides), anything else by
  ``numba.cuda.typing.typeof``; a NumPy array is a problem (numba would copy it to the
  device and back at every launch);
- every non-array argument is marshalled by numba-cuda's own ``_Kernel._prepare_args`` and
  then cuda.core's ``ParamHolder``, the code a real launch runs (None fails here as it fails
  on a GPU: ``NotImplementedError: (none, None)``);
- each new (kernel, argument types) is compiled by ``numba.cuda.compile_ptx`` for sm_80 and
  sm_90 (NVVM from the nvidia-nvvm wheel of ``numba-cuda[cu13]``) and the PTX is assembled
  to a cubin by nvJitLink where it is installed; a signature whose arrays are all float32
  must compile to PTX without a float64 instruction.

The kernel is not run (there is no GPU and no simulator here), so the tests' own assertions
fail and are ignored: the report is the result. tests/test_numba_cuda_compiles.py runs this
and holds the report to those rules, and to every kernel of the numba_cuda kernel modules
having been launched by some gpu test.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import sys

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)

from cuda_emu import fake_cupy  # noqa: E402

sys.modules["cupy"] = fake_cupy

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda import dispatcher, types  # noqa: E402
from numba.cuda.dispatcher import CUDADispatcher, _Kernel  # noqa: E402
from numba.cuda.typing.typeof import Purpose, typeof  # noqa: E402

from gpuconv.kernels import numba_cuda  # noqa: E402
from gpuconv.kernels.numba_cuda import _numba  # noqa: E402

REPORT_ENV = "GPUCONV_NUMBA_LAUNCHES"
# The compute capabilities every signature is compiled for: Ampere and Hopper.
CCS = ((8, 0), (9, 0))
# A PTX instruction or declaration on float64 values.
_F64 = re.compile(r"^\s*[a-z][\w.]*\.f64\b.*$", re.MULTILINE)


class _DeviceView:
    """A device array as numba sees a CuPy array: its ``__cuda_array_interface__`` only
    (strides None when C-contiguous, as CuPy exports them)."""

    def __init__(self, a: np.ndarray):
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "version": 3,
            "strides": None if a.flags.c_contiguous else a.strides,
            "data": (a.__array_interface__["data"][0], False)}


class _Marshaller:
    """numba-cuda's argument marshalling for a kernel without launch extensions."""
    extensions: list = []
    _prepare_args = _Kernel._prepare_args


def _kernel_name(kernel) -> str:
    return f"{kernel.py_func.__module__}.{kernel.py_func.__qualname__}"


def _argument_type(value):
    """(numba type, problem or None) of one launch argument."""
    if isinstance(value, fake_cupy.ndarray):
        return typeof(_DeviceView(value._a), Purpose.argument), None
    ty = typeof(value, Purpose.argument)
    if isinstance(value, np.ndarray):
        return ty, "a host NumPy array: numba copies it to the device and back at every launch"
    return ty, None


def _marshal(ty, value) -> None:
    """Marshal a non-array argument as numba-cuda's launch does; raises where it would."""
    from cuda.core._kernel_arg_handler import ParamHolder

    kernel_args: list = []
    _Marshaller()._prepare_args(ty, value, stream=0, retr=[], kernelargs=kernel_args)
    ParamHolder(kernel_args)


def _cudadevrt() -> str:
    """libcudadevrt.a, where numba-cuda finds it."""
    from numba.cuda.cuda_paths import get_cuda_paths

    return f"{get_cuda_paths()['static_cudalib_dir'].info}/libcudadevrt.a"


def _assemble(ptx: str, cc: tuple[int, int]) -> str | None:
    """PTX -> cubin with nvJitLink (what numba-cuda links with); None where it is missing."""
    try:
        from cuda.bindings import nvjitlink
    except ImportError:
        return None
    try:
        handle = nvjitlink.create(1, [f"-arch=sm_{cc[0]}{cc[1]}"])
    except Exception:  # the nvJitLink library is not installed
        return None
    try:
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, ptx.encode(), len(ptx), "kernel.ptx")
        if "cudaCGSynchronize" in ptx:  # a grid sync: numba-cuda links the device runtime
            nvjitlink.add_file(handle, nvjitlink.InputType.LIBRARY, _cudadevrt())
        nvjitlink.complete(handle)
    except Exception as exc:
        size = nvjitlink.get_error_log_size(handle)
        log = bytearray(size)
        nvjitlink.get_error_log(handle, log)
        return f"nvJitLink: {exc}: {log.decode(errors='replace').strip()}"
    finally:
        nvjitlink.destroy(handle)
    return "cubin"


class _Device:
    """What numba-cuda asks the current device for when it compiles a device function that a
    kernel calls: its compute capability (there is no device here)."""

    def __init__(self, cc: tuple[int, int]):
        self.compute_capability = cc


def _compile(kernel, signature: tuple) -> dict:
    """{cc: "cubin" | "ptx" | error} and the float64 lines of each PTX. numba-cuda compiles
    a device function once per argument types, for the first cc it is asked for."""
    out, f64 = {}, {}
    current_device = dispatcher.get_current_device
    for cc in CCS:
        name = f"sm_{cc[0]}{cc[1]}"
        dispatcher.get_current_device = lambda cc=cc: _Device(cc)
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc,
                                      fastmath=kernel.targetoptions.get("fastmath", False))
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            dispatcher.get_current_device = current_device
        out[name] = _assemble(ptx, cc) or "ptx"
        f64[name] = _F64.findall(ptx)[:5]
    return {"compiled": out, "float64_lines": f64}


def _all_float32(signature: tuple) -> bool:
    arrays = [t for t in signature if isinstance(t, types.Array)]
    floats = [t.dtype for t in arrays if isinstance(t.dtype, types.Float)]
    return bool(floats) and all(d == types.float32 for d in floats)


class Recorder:
    def __init__(self):
        self.kernels: dict[str, dict] = {}
        self.problems: list[dict] = []
        self.launches = 0
        self.test = ""

    def launch(self, kernel, blocks: int, threads: int, args: tuple,
               shared_mem: int = 0) -> None:
        self.launches += 1
        name = _kernel_name(kernel)
        signature = []
        for i, value in enumerate(args):
            try:
                ty, problem = _argument_type(value)
                if not isinstance(ty, types.Array):
                    _marshal(ty, value)
            except Exception as exc:
                ty, problem = None, f"{type(exc).__name__}: {exc}"
            if problem:
                self.problems.append({"kernel": name, "argument": i, "value": repr(value)[:80],
                                      "problem": problem, "test": self.test})
            signature.append(ty)
        entry = self.kernels.setdefault(name, {"launches": 0, "signatures": {}})
        entry["launches"] += 1
        if any(t is None for t in signature):
            return
        key = ", ".join(str(t) for t in signature)
        if key not in entry["signatures"]:
            entry["signatures"][key] = {**_compile(kernel, tuple(signature)),
                                        "float32": _all_float32(tuple(signature)),
                                        "test": self.test}

    def report(self) -> dict:
        return {"launches": self.launches, "kernels": self.kernels, "problems": self.problems,
                "defined": defined_kernels()}


def defined_kernels() -> list[str]:
    """Every kernel (not device function) of the numba_cuda kernel modules."""
    names = []
    for info in pkgutil.iter_modules(numba_cuda.__path__):
        if not info.name.endswith("_kernels"):
            continue
        module = importlib.import_module(f"{numba_cuda.__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")
                    and obj.py_func.__module__ == module.__name__):
                names.append(_kernel_name(obj))
    return sorted(names)


RECORDER = Recorder()
_numba.launch = RECORDER.launch
# No device to ask: an H100's answers (132 SMs, one block of a persistent kernel resident per
# SM), so that launchers which size their grid by the device reach the launch.
H100_SMS = 132
_numba.multiprocessor_count = lambda: H100_SMS
_numba.cooperative_grid_blocks = lambda kernel, args, threads, shared_mem: H100_SMS


def pytest_runtest_setup(item):
    RECORDER.test = item.nodeid


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w") as f:
            json.dump(RECORDER.report(), f, indent=1)


def pytest_report_header(config):
    return ("cupy: emulated (tests/cuda_emu); numba_cuda launches compiled by numba-cuda "
            "and not run")
