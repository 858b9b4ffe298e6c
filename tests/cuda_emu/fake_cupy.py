"""A stand-in for CuPy on a machine without a GPU: gpuconv's CUDA C kernels run on the CPU.

Installed as ``sys.modules["cupy"]`` by ``tests/cuda_emu/plugin.py``. Two halves:

- ``ndarray`` wraps a NumPy array and behaves like a CuPy array where gpuconv's GPU path
  can get it wrong: mixing it with a NumPy array in an operation raises ``TypeError``,
  ``numpy.asarray`` on it raises (CuPy forbids implicit device-to-host copies), reductions
  return 0-d arrays, and ``.get()`` copies to the host. Module functions (``zeros``,
  ``matmul``, ...) are NumPy's on the unwrapped data; ``matmul`` stands for cuBLAS.
- ``RawModule`` compiles a ``kernels/<family>.cu`` source with g++ against ``emu.h`` and
  launches its entry points there (blocks in turn, a block's threads as fibers, barriers
  and warp shuffles emulated; a module made with ``enable_cooperative_groups`` runs every
  block of a launch at once, after checking with ``occupancy.py`` that the emulated GPU could
  keep the whole grid resident). Each launch marshals its arguments exactly as CuPy 14 does
  and checks them against the parameter types the entry point declares, and runs the
  kernel on copies of its arrays placed between inaccessible pages, so that a read or a
  write outside an array fails the launch. README.md in this folder says how, exactly.
- ``streams`` (its own module): streams, events, pinned memory, memory pools, CUDA graph
  capture and replay, and the counters of host synchronisations and device-to-host copies
  that the tests of the training step read. The hooks into it are marked ``streams.``.
"""
from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from cuda_emu import occupancy, streams

__version__ = "0.0-emulated"
_HERE = Path(__file__).resolve().parent
_BUILD = Path(tempfile.gettempdir()) / "gpuconv-cuda-emu"
# The byte that fills the unused part of each array's pages: NaN to a float read.
GUARD_VALUE = 0xFF
PAGE = mmap.PAGESIZE
DEVICE_NAME = b"gpuconv CUDA emulator (CPU)"


# --------------------------------------------------------------------------- arrays

def _has_host_array(x) -> bool:
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, (tuple, list)):
        return any(_has_host_array(e) for e in x)
    if isinstance(x, dict):
        return any(_has_host_array(e) for e in x.values())
    return False


def _reject_host(what: str, args, kwargs) -> None:
    if _has_host_array(args) or _has_host_array(kwargs):
        raise TypeError(f"emulated cupy: {what} got a numpy.ndarray among cupy arrays "
                        "(CuPy refuses to mix host and device arrays)")


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (tuple, list)):
        return type(x)(_unwrap(e) for e in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(e) for e in x)
    if isinstance(x, list):
        return [_wrap(e) for e in x]
    return x


def _device_call(what: str, fn, args, kwargs):
    _reject_host(what, args, kwargs)
    capture = streams.issue(what)
    if capture is not None:
        return streams.capture_call(capture, what, fn, args, kwargs, _unwrap, _wrap)
    return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))


def _device_write(what: str, write) -> None:
    """Run the in-place update ``write()`` now, or record it into an open capture."""
    capture = streams.issue(what)
    if capture is not None:
        streams.record(capture, write)
    else:
        write()


class ndarray:
    """A device array: a NumPy array that only device operations may touch."""

    __module__ = "cupy"
    __hash__ = None

    def __init__(self, a: np.ndarray):
        self._a = a

    def get(self, stream=None) -> np.ndarray:
        streams.host_read("ndarray.get()")
        return np.array(self._a)

    def set(self, host: np.ndarray, stream=None) -> None:
        # Without a stream CuPy copies synchronously; with one, from pinned memory, async.
        streams.host_write("ndarray.set()", blocking=stream is None,
                           pinned=stream is not None and streams.is_pinned(host))
        self._a[...] = host

    @property
    def data(self):
        """CuPy's MemoryPointer, as far as ``.ptr`` (the address the kernels see)."""
        return types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0])

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _device_call(f"ufunc {ufunc.__name__}", getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        return _device_call(f"function {func.__name__}", func, args, kwargs)

    @property
    def T(self) -> "ndarray":
        return ndarray(self._a.T)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr) and name in ("item", "tolist"):
            streams.host_read(f"ndarray.{name}()")
            return attr
        if callable(attr):
            # The array goes in as an argument, so that a capture sees what the method writes.
            return lambda *args, **kwargs: _device_call(
                f"method {name}", lambda a, *rest, **kw: getattr(a, name)(*rest, **kw),
                (self, *args), kwargs)
        return _wrap(attr)

    def __getitem__(self, key):
        _reject_host("indexing", key, {})
        return _device_call("indexing", lambda a, k: a[k], (self, key), {})

    def __setitem__(self, key, value):
        _reject_host("indexing", key, {})

        def write():
            self._a[_unwrap(key)] = _unwrap(value)
        _device_write("indexing assignment", write)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (_wrap(self._a[i]) for i in range(len(self._a)))

    def __float__(self) -> float:
        streams.host_read("float(ndarray)")
        return float(self._a)

    def __int__(self) -> int:
        streams.host_read("int(ndarray)")
        return int(self._a)

    def __bool__(self) -> bool:
        streams.host_read("bool(ndarray)")
        return bool(self._a)

    def __repr__(self) -> str:
        streams.host_read("repr(ndarray)")
        return f"emulated cupy {self._a!r}"

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("emulated cupy arrays have no DLPack capsule")


def _binary(ufunc, reflected: bool = False):
    def op(self, other):
        return ufunc(other, self) if reflected else ufunc(self, other)
    return op


def _in_place(name: str):
    def op(self, other):
        _reject_host(f"in-place {name}", other, {})
        _device_write(f"in-place {name}",
                      lambda: getattr(self._a, f"__i{name}__")(_unwrap(other)))
        return self
    return op


for _name, _ufunc in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                      ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                      ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                      ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_name}__", _in_place(_name))
for _name, _ufunc in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                      ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
ndarray.__neg__ = lambda self: np.negative(self)
ndarray.__pos__ = lambda self: np.positive(self)
ndarray.__abs__ = lambda self: np.absolute(self)
ndarray.__invert__ = lambda self: np.invert(self)
streams.bind(ndarray)


def asarray(a, dtype=None, order=None) -> ndarray:
    """Host to device: a copy of ``a`` (no copy when ``a`` is already a device array of
    ``dtype``)."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    host = np.array(a, dtype=dtype, order="K" if order is None else order)
    if host.ndim == 0:  # CuPy fills a 0-d array with a kernel: no copy
        return _device_call("cupy.full", np.full, ((), host[()], host.dtype), {})
    # CuPy stages the copy through pinned memory: asynchronous.
    streams.host_write("cupy.asarray(numpy.ndarray)", blocking=False)
    return ndarray(host)


def array(a, dtype=None, copy=True, order="K") -> ndarray:
    if isinstance(a, ndarray):
        return _device_call("cupy.array", lambda x: np.array(x, dtype=dtype, copy=copy,
                                                             order=order), (a,), {})
    return asarray(a, dtype, order)


def asnumpy(a, stream=None) -> np.ndarray:
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


get_default_memory_pool = streams.get_default_memory_pool


def get_array_module(*args):
    return _this if any(isinstance(a, ndarray) for a in args) else np


def __getattr__(name: str):
    attr = getattr(np, name)
    if isinstance(attr, types.ModuleType):
        return _Submodule(attr)
    if callable(attr) and not isinstance(attr, type):
        return lambda *args, **kwargs: _device_call(f"cupy.{name}", attr, args, kwargs)
    return attr


class _Submodule:
    """``cupy.linalg`` and friends: NumPy's functions of the same name, on device arrays."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if callable(attr) and not isinstance(attr, type):
            return lambda *args, **kwargs: _device_call(name, attr, args, kwargs)
        return attr


# --------------------------------------------------------------------------- cupy.cuda

class OutOfMemoryError(MemoryError):
    """CuPy's: the size asked for, the total allocated so far, the pool's limit."""

    def __init__(self, size: int, total: int, limit: int = 0):
        super().__init__(f"Out of memory allocating {size:,} bytes "
                         f"(allocated so far: {total:,} bytes).")


class _Device:
    def __init__(self, device_id: int = 0):
        self.id = device_id

    def synchronize(self) -> None:
        streams.synchronize("Device.synchronize()")


_CUDA_VERSION = 13000
cuda = types.SimpleNamespace(
    Device=_Device,
    Event=streams.Event,
    get_elapsed_time=streams.elapsed_ms,
    Stream=streams.Stream,
    ExternalStream=streams.ExternalStream,
    get_current_stream=streams.get_current_stream,
    Graph=streams.Graph,
    MemoryPool=streams.MemoryPool,
    using_allocator=streams.using_allocator,
    set_allocator=streams.set_allocator,
    get_allocator=streams.get_allocator,
    alloc_pinned_memory=streams.alloc_pinned_memory,
    cublas=streams.cublas,
    device=types.SimpleNamespace(get_cublas_handle=streams.get_cublas_handle),
    memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError,
                                 MemoryPool=streams.MemoryPool),
    # The emulator runs no NVRTC (g++ compiles the kernels): a version of the same form.
    nvrtc=types.SimpleNamespace(getVersion=lambda: divmod(_CUDA_VERSION // 10, 100)),
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        runtimeGetVersion=lambda: _CUDA_VERSION,
        driverGetVersion=lambda: _CUDA_VERSION,
        getDeviceProperties=lambda device_id: occupancy.device_properties(DEVICE_NAME),
        CUDA_R_32F=0, CUDA_R_16F=2, CUDA_R_16BF=14,  # library_types.h (cuBLAS's gemmEx)
    ),
    driver=types.SimpleNamespace(
        occupancyMaxActiveBlocksPerMultiprocessor=lambda func, threads, dynamic_smem:
            _FUNCTIONS[func].blocks_per_sm(threads, dynamic_smem),
    ),
)


# --------------------------------------------------------------------------- RawModule

_ENTRY_POINT = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(')
def _gxx(*args: str) -> str:
    result = subprocess.run(["g++", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"emulated cupy: g++ {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _build(code: str, flags: list[str]) -> Path:
    """The shared library of ``code`` (cached on disk by its text, the flags, emu.h and
    every header in the include directories)."""
    emu_h = _HERE / "emu.h"
    headers = [emu_h] + sorted(h for f in flags if f.startswith("-I")
                               for h in Path(f[2:]).glob("*.cuh"))
    key = hashlib.sha256("\0".join([code, *flags, *(h.read_text() for h in headers)])
                         .encode()).hexdigest()[:20]
    lib = _BUILD / f"{key}.so"
    if lib.exists():
        return lib
    _BUILD.mkdir(parents=True, exist_ok=True)
    source = _BUILD / f"{key}.cpp"
    source.write_text(code)
    common = ["-std=c++17", "-x", "c++", "-include", str(emu_h), *flags]
    names = _ENTRY_POINT.findall(_gxx("-E", "-P", *common, str(source)))
    exports = _BUILD / f"{key}_exports.cpp"
    exports.write_text(f'#include "{source.name}"\n' + "".join(f"EMU_EXPORT({n})\n" for n in names))
    partial = _BUILD / f"{key}.{os.getpid()}.so"
    _gxx(*common, "-O1", "-fPIC", "-shared", str(exports), "-o", str(partial))
    partial.replace(lib)
    return lib


class RawModule:
    def __init__(self, code: str, options=(), enable_cooperative_groups: bool = False,
                 **kwargs):
        self._flags = [o for o in options if o.startswith(("-I", "-D"))]
        self._code = code
        self._cooperative = enable_cooperative_groups
        self._lib = ctypes.CDLL(str(_build(code, self._flags)))
        self._lib.emu_last_error.restype = ctypes.c_char_p
        self._lib.emu_fault_address.restype = ctypes.c_void_p

    def compile(self, log_stream=None) -> None:
        """Compiled already, when the module was made."""

    def get_function(self, name: str) -> "RawKernel":
        return RawKernel(self._lib, name, self)

    def resources(self, name: str) -> occupancy.Resources:
        """ptxas's registers and static shared memory of entry point ``name``."""
        return occupancy.resource_report(self._code, self._flags)[name]


# Function handles (``RawKernel.kernel.ptr``) -> their kernel, for the occupancy API.
_FUNCTIONS: dict = {}


def _dims(d, what: str) -> int:
    d = (d,) if isinstance(d, int) else tuple(d)
    if any(v != 1 for v in d[1:]):
        raise ValueError(f"emulated cupy: only 1-D launches are emulated, {what}={d}")
    return int(d[0])


# --------------------------------------------------------------------------- marshalling

def cupy_argument(arg) -> tuple[str, bytes]:
    """What CuPy 14 passes for one launch argument (cupy/cuda/function.pyx ``_pointer`` and
    cupy/_core/_scalar.pyx ``CScalar``): ("array", b"") for a device array, ("null", 8 zero
    bytes) for None, else (dtype name, the value's bytes): a Python bool as a 1-byte bool,
    an int as int64 (uint64 from 2**63 on), a float as float64, a complex as complex128, a
    NumPy scalar or a one-element NumPy array as its own dtype. Anything else raises as
    CuPy raises."""
    if isinstance(arg, ndarray):
        return "array", b""
    if arg is None:
        return "null", bytes(8)
    if isinstance(arg, np.ndarray):
        if arg.size != 1:
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {arg.shape} as a "
                            "kernel parameter. Only numpy.ndarrays of size one can be passed "
                            "by value.")
        return arg.dtype.name, arg.tobytes()
    kind = type(arg)
    if kind is bool:
        dtype = np.dtype(np.bool_)
    elif kind is float:
        dtype = np.dtype(np.float64)
    elif kind is complex:
        dtype = np.dtype(np.complex128)
    elif kind is int:
        dtype = np.dtype(np.uint64 if arg >= 1 << 63 else np.int64)
    elif isinstance(arg, np.generic):
        dtype = arg.dtype
    else:
        raise TypeError(f"Unsupported type {kind}")
    return dtype.name, np.array(arg, dtype).tobytes()  # out of range raises, as in CuPy


def _pointer_bytes(param: str, given: str, value: bytes, where: str) -> bool:
    """Whether an argument CuPy marshals as (``given``, ``value``) is a null pointer for a
    pointer parameter; raises if it is neither a device array nor null."""
    if given == "array":
        return False
    if given == "null" or (given in ("int64", "uint64") and value == bytes(8)):
        return True
    raise TypeError(f"{where}: expected a device array, got {given}; CuPy would pass "
                    f"{len(value)} bytes by value")


def _strided_rows(a: np.ndarray) -> bool:
    """Contiguous rows, each ``strides[0]`` bytes after the last: a matrix the kernel is
    given with its leading dimension."""
    return a.ndim >= 2 and len(a) > 0 and a.strides[0] > 0 and a[0].flags.c_contiguous


def _span(a: np.ndarray) -> tuple[int, int]:
    """[first, last) byte address of what a kernel given ``a``'s pointer may touch."""
    start = a.__array_interface__["data"][0]
    if a.size == 0:
        return start, start
    if a.flags.c_contiguous:
        return start, start + a.nbytes
    return start, start + (a.shape[0] - 1) * a.strides[0] + a[0].nbytes


class RawKernel:
    def __init__(self, lib, name: str, module: RawModule):
        try:
            self._launch = getattr(lib, f"emu_launch_{name}")
        except AttributeError:
            raise AttributeError(f"emulated cupy: no extern \"C\" kernel {name!r}") from None
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint, ctypes.c_uint,
                                 ctypes.c_size_t, ctypes.c_int]
        signature = getattr(lib, f"emu_signature_{name}")
        signature.restype = ctypes.c_char_p
        self.params = signature().decode().split(",") if signature() else []
        self.name = name
        self._lib = lib
        self._module = module
        self._max_dynamic_smem = occupancy.SMEM_DEFAULT_DYNAMIC
        self.kernel = types.SimpleNamespace(ptr=id(self))
        _FUNCTIONS[id(self)] = self

    @property
    def num_regs(self) -> int:
        return self._module.resources(self.name).registers

    @property
    def shared_size_bytes(self) -> int:
        return self._module.resources(self.name).static_smem

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._max_dynamic_smem

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, size: int) -> None:
        most = occupancy.target()["smem_per_block_optin"]
        if not 0 <= size <= most:
            raise ValueError(f"emulated cupy: {self.name}: max_dynamic_shared_size_bytes "
                             f"{size} is outside 0..{most} on the emulated GPU")
        self._max_dynamic_smem = int(size)

    def blocks_per_sm(self, threads: int, dynamic_smem: int) -> int:
        """What cuOccupancyMaxActiveBlocksPerMultiprocessor answers."""
        return occupancy.blocks_per_sm(self._module.resources(self.name), threads,
                                       dynamic_smem)[0]

    def _check_cooperative(self, grid: int, block: int, shared_mem: int) -> None:
        """A cooperative grid must fit on the emulated GPU at once. CuPy would shrink a grid
        that does not (with a warning) and cuLaunchCooperativeKernel refuses one; a shrunken
        grid is never what a persistent kernel wants, so the emulator refuses too."""
        gpu = occupancy.target()
        resources = self._module.resources(self.name)
        if resources.static_smem:
            raise RuntimeError(f"{self.name}: a cooperative kernel with static __shared__ "
                               "memory: the emulator runs its blocks at once and would share "
                               "it between them; use GPUCONV_BLOCK_SMEM")
        per_sm, limit = occupancy.blocks_per_sm(resources, block, shared_mem)
        if grid > per_sm * gpu["sms"]:
            raise RuntimeError(
                f"{self.name}<<<{grid}, {block}, {shared_mem}>>>: a cooperative grid larger "
                f"than the {per_sm} x {gpu['sms']} blocks an {gpu['name']} keeps resident "
                f"({resources.registers} registers per thread, {resources.static_smem} + "
                f"{shared_mem} bytes of shared memory per block; limited by {limit})")

    def __call__(self, grid, block, args, shared_mem: int = 0, stream=None):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments "
                            f"({', '.join(self.params)}), the launch passed {len(args)}")
        if shared_mem > self._max_dynamic_smem:
            raise RuntimeError(f"{self.name}: {shared_mem} bytes of dynamic shared memory, more "
                               f"than max_dynamic_shared_size_bytes ({self._max_dynamic_smem}): "
                               "the launch fails on a GPU (too many resources requested)")
        if self._module._cooperative:
            self._check_cooperative(grid, block, shared_mem)
        values, arrays = [], []
        for i, (param, arg) in enumerate(zip(self.params, args)):
            values.append(self._marshal(i, param, arg, arrays))
        capture = streams.issue(self.name)
        if capture is not None:  # checked now, run at each replay on the same arrays
            streams.record(capture, lambda: self._execute(grid, block, values, arrays,
                                                          shared_mem))
            return
        self._execute(grid, block, values, arrays, shared_mem)

    def _execute(self, grid: int, block: int, values: list, arrays: list,
                 shared_mem: int) -> None:
        streams.counters["launch"] += 1
        values = list(values)
        with _Guarded(arrays, self.name) as device:
            for i, a in arrays:
                values[i] = ctypes.c_void_p(device[i])
            argv = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
            if self._launch(argv, grid, block, shared_mem, int(self._module._cooperative)) != 0:
                message = self._lib.emu_last_error().decode()
                if message == "memory fault":
                    message = device.describe_fault(self._lib.emu_fault_address(),
                                                    self._lib.emu_fault_kind())
                raise RuntimeError(f"{self.name}<<<{grid}, {block}>>>: {message}")

    def _marshal(self, i: int, param: str, arg, arrays: list):
        """The ctypes value of argument ``i`` as CuPy passes it, checked against the
        parameter; device arrays are noted in ``arrays`` and get their pointer later."""
        where = f"{self.name} argument {i} ({param})"
        given, value = cupy_argument(arg)
        if param.endswith("*"):
            if _pointer_bytes(param, given, value, where):
                return ctypes.c_void_p(0)
            a = arg._a
            if a.dtype != np.dtype(param[:-1]):
                raise TypeError(f"{where}: array of {a.dtype}")
            if not (a.flags.c_contiguous or _strided_rows(a)):
                raise ValueError(f"{where}: array of shape {a.shape} and strides {a.strides} "
                                 "is neither C-contiguous nor contiguous rows at a row stride")
            arrays.append((i, a))
            return None
        if given != param:
            raise TypeError(f"{where}: got {type(arg).__name__} {arg!r}, which CuPy passes as "
                            f"{given} ({len(value)} bytes)")
        return ctypes.create_string_buffer(value, len(value))


# --------------------------------------------------------------------------- guarded memory

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
_PROT_NONE = 0
_launches = 0


class _Region:
    """One span of memory, copied for a launch into the middle of a fresh mapping whose first
    and last pages are inaccessible: [guard page][data pages][guard page]. ``at_end`` puts
    the span's last byte against the trailing guard page (a read or write past the end
    faults), else its first byte against the leading one (one before the start faults). The
    rest of the data pages is filled with GUARD_VALUE and checked after the launch."""

    def __init__(self, start: int, end: int, at_end: bool):
        self.start, self.size = start, end - start
        self.data = -(-self.size // PAGE) * PAGE
        self.total = self.data + 2 * PAGE
        self.map = _libc.mmap(None, self.total, mmap.PROT_READ | mmap.PROT_WRITE,
                              mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if self.map in (None, _MAP_FAILED):
            raise MemoryError(f"emulated cupy: mmap of {self.total} bytes failed")
        first = self.map + PAGE
        self.base = first + self.data - self.size if at_end else first
        ctypes.memset(first, GUARD_VALUE, self.data)
        ctypes.memmove(self.base, start, self.size)
        for guard in (self.map, first + self.data):
            if _libc.mprotect(guard, PAGE, _PROT_NONE) != 0:
                raise OSError(ctypes.get_errno(), "emulated cupy: mprotect failed")

    def slack_written(self) -> bool:
        """Whether the kernel wrote into the data pages outside the span."""
        first = self.map + PAGE
        slack = [(first, self.base - first),
                 (self.base + self.size, first + self.data - self.base - self.size)]
        return any(n and ctypes.string_at(at, n).count(GUARD_VALUE) != n for at, n in slack)

    def copy_back(self) -> None:
        ctypes.memmove(self.start, self.base, self.size)

    def release(self) -> None:
        _libc.munmap(self.map, self.total)


class _Guarded:
    """The launch's array arguments in guarded regions. Arrays whose memory overlaps (the
    same array twice, views of one buffer, rows at a stride) share one region, so the
    kernel sees what the caller set up. Launches alternate between regions that end at a
    guard page and regions that start at one, so each side of every array is checked."""

    def __init__(self, arrays: list, kernel: str):
        self.arrays, self.kernel = arrays, kernel

    def __enter__(self) -> "_Guarded":
        global _launches
        at_end = _launches % 2 == 0
        _launches += 1
        spans = sorted((*_span(a), i, a) for i, a in self.arrays)
        groups: list[list] = []
        for start, end, i, a in spans:
            if groups and start < groups[-1][1] and end > groups[-1][0]:
                groups[-1][1] = max(groups[-1][1], end)
                groups[-1][2].append((start, end, i, a))
            else:
                groups.append([start, end, [(start, end, i, a)]])
        self.regions, self.pointers, self.members = [], {}, []
        try:
            for start, end, members in groups:
                region = _Region(start, end, at_end)
                self.regions.append(region)
                self.members.append(members)
                for first, _, i, _ in members:
                    self.pointers[i] = region.base + (first - start)
        except BaseException:
            self._release()
            raise
        return self

    def __getitem__(self, i: int) -> int:
        return self.pointers[i]

    def __exit__(self, exc_type, *exc):
        try:
            for region, members in zip(self.regions, self.members):
                region.copy_back()
                if exc_type is None and region.slack_written():
                    a = members[0][3]
                    raise RuntimeError(f"{self.kernel}: wrote outside array argument of shape "
                                       f"{a.shape} ({a.dtype})")
        finally:
            self._release()
        return False

    def _release(self) -> None:
        for region in self.regions:
            region.release()
        self.regions = []

    def describe_fault(self, address: int | None, kind: int) -> str:
        """Which argument a faulting address lies outside of, and by how many bytes."""
        action = {1: "read", 2: "wrote"}.get(kind, "accessed")
        address = address or 0
        for region, members in zip(self.regions, self.members):
            if not region.map <= address < region.map + region.total:
                continue
            if address >= region.base + region.size:
                start, end, i, a = max(members, key=lambda m: m[1])
                where = f"{address - (region.base + end - region.start)} bytes past its end"
            else:
                start, end, i, a = members[0]
                where = f"{region.base + start - region.start - address} bytes before its start"
            return (f"{action} outside array argument {i} of shape {a.shape} ({a.dtype}): "
                    f"{where}")
        return f"{action} address {address:#x}, outside every array argument"


_this = sys.modules[__name__]
