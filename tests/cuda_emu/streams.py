"""Streams, events, pinned memory, memory pools and CUDA graph capture for the emulated CuPy,
and counters of every point where the host waits for the device or reads from it.

The emulator runs each operation when it is issued, so streams bring no concurrency here.
What this module models is what the host side of a training step costs and what CUDA
forbids while a stream is being captured:

- ``counters``: ``sync`` (the host waited for the device: ``Device/Stream/Event
  .synchronize``, every device-to-host read, a ``set`` without a stream), ``d2h``
  (device-to-host copies: ``get``, ``float()``/``int()``/``bool()`` of an array, ``item``,
  ``asnumpy``), ``h2d`` (host-to-device copies; ``h2d_pinned`` those from pinned memory on
  a stream, which run asynchronously), ``launch`` (kernels of ``kernels/*.cu``
  run, by a launch or a graph replay), ``graph_launch`` and ``capture``.
  ``counting()`` gives the counts of a block of code.
- Capture (``Stream.begin_capture()`` ... ``end_capture()`` -> ``Graph``): every device
  operation issued while a capture is open is *recorded, not run*, as on a GPU: a kernel
  launch or an in-place update (``a[...] = b``, ``a += b``, a ufunc with ``out=``, a
  method that writes its array) is kept as it was called; an operation that makes new
  arrays gets buffers that hold garbage (NaN, or 0xA5 bytes) until a replay fills them,
  and a view is a view. ``Graph.launch()`` re-runs the recorded operations in order on the
  same buffers. While a capture is open these raise, as CUDA does or as gpuconv's rules
  require: a device-to-host read or any synchronisation, a host-to-device copy of a host
  array, an operation on another stream than the capturing one (the legacy default stream
  included), a cuBLAS product before ``cublas.setWorkspace`` gave the handle a workspace,
  and an allocation from the default memory pool (memory a graph uses must belong to a pool
  that lives as long as the graph: ``cuda.using_allocator(MemoryPool().malloc)``).
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
from collections import Counter

import numpy as np

COUNTED = ("sync", "d2h", "h2d", "h2d_pinned", "launch", "graph_launch", "capture")
counters: Counter = Counter()
# cuBLAS products, which a capture records only with a workspace set on the handle.
CUBLAS_OPS = {"matmul", "dot", "tensordot", "einsum", "inner", "vdot", "gemmEx"}
# What only allocates (no kernel, nothing to replay).
ALLOCATIONS = (np.empty, np.empty_like)
# Bytes that stand for memory a capture allocated and no replay has written yet.
GARBAGE_BYTE = 0xA5

_ndarray = None  # fake_cupy.ndarray, bound by fake_cupy at import


def bind(ndarray_class) -> None:
    global _ndarray
    _ndarray = ndarray_class


@contextlib.contextmanager
def counting():
    """``with counting() as c:`` -- ``c`` holds the counts of the block when it ends."""
    before = Counter(counters)
    result: Counter = Counter()
    try:
        yield result
    finally:
        result.update({k: counters[k] - before[k] for k in COUNTED})


class CaptureError(RuntimeError):
    """What cudaErrorStreamCaptureUnsupported and friends raise in CuPy."""


# --------------------------------------------------------------------------- host waits

class DeviceSynchronized(RuntimeError):
    """``cupyx.DeviceSynchronized``: a synchronisation where ``allow_synchronize(False)``."""


_sync_allowed = [True]


@contextlib.contextmanager
def allow_synchronize(allow: bool):
    """``cupyx.allow_synchronize``: with False, a host synchronisation in the block raises."""
    _sync_allowed.append(bool(allow))
    try:
        yield
    finally:
        _sync_allowed.pop()


def _refuse_in_capture(what: str) -> None:
    if _capture is not None:
        raise CaptureError(f"emulated cupy: {what} while stream {_capture.stream.ptr} is "
                           "capturing (operation not permitted when stream is capturing)")


def _count_sync(what: str) -> None:
    if not _sync_allowed[-1]:
        raise DeviceSynchronized(f"emulated cupy: {what} synchronises the device where "
                                 "cupyx.allow_synchronize(False) forbids it")
    counters["sync"] += 1


def host_read(what: str) -> None:
    """A device-to-host copy that the host waits for."""
    _refuse_in_capture(what)
    _count_sync(what)
    counters["d2h"] += 1


def host_write(what: str, blocking: bool, pinned: bool = False) -> None:
    """A host-to-device copy; ``blocking`` when the host waits for it to finish, ``pinned``
    when it is an asynchronous copy from pinned memory."""
    _refuse_in_capture(what)
    counters["h2d"] += 1
    counters["h2d_pinned"] += pinned
    if blocking:
        _count_sync(what)


def synchronize(what: str) -> None:
    _refuse_in_capture(what)
    _count_sync(what)


# --------------------------------------------------------------------------- memory

class MemoryPool:
    """A memory pool: what allocates during a capture must be one that is not the default."""

    def __init__(self, allocator=None):
        self.malloc = _Allocator(self)

    def used_bytes(self) -> int:
        return 0

    def free_all_blocks(self, stream=None) -> None:
        pass


class _Allocator:
    def __init__(self, pool):
        self.pool = pool

    def __call__(self, size: int):
        return None


_DEFAULT_POOL = MemoryPool()
_allocators = [_DEFAULT_POOL.malloc]


def get_default_memory_pool() -> MemoryPool:
    return _DEFAULT_POOL


def set_allocator(allocator=None) -> None:
    _allocators[-1] = allocator or _DEFAULT_POOL.malloc


def get_allocator():
    return _allocators[-1]


@contextlib.contextmanager
def using_allocator(allocator=None):
    _allocators.append(allocator or _DEFAULT_POOL.malloc)
    try:
        yield
    finally:
        _allocators.pop()


def _check_allocation(what: str) -> None:
    if _capture is not None and _allocators[-1] is _DEFAULT_POOL.malloc:
        raise CaptureError(f"emulated cupy: {what} allocates from the default memory pool while "
                           "a stream is capturing; the graph's memory must come from a pool "
                           "that lives as long as the graph (cuda.using_allocator)")


class PinnedMemory(bytearray):
    """Page-locked host memory (``cuda.alloc_pinned_memory``): a copy from it is async."""

    @property
    def ptr(self) -> int:
        return np.frombuffer(self, np.uint8).ctypes.data if len(self) else 0

    def size(self) -> int:
        return len(self)


def alloc_pinned_memory(nbytes: int) -> PinnedMemory:
    return PinnedMemory(int(nbytes))


def is_pinned(host: np.ndarray) -> bool:
    base = host
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, PinnedMemory)


# --------------------------------------------------------------------------- streams

_stream_ids = itertools.count(2)


class Stream:
    """A CUDA stream; ``Stream.null`` (ptr 0) is the legacy default stream."""

    null: "Stream"

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int = 0):
        self.ptr = 0 if null else next(_stream_ids)
        self.device_id = 0

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return self.ptr

    def __enter__(self):
        _current.append(self)
        return self

    def __exit__(self, *exc):
        _current.pop()
        return False

    def use(self) -> "Stream":
        _current[-1] = self
        return self

    def synchronize(self) -> None:
        synchronize(f"Stream({self.ptr}).synchronize()")

    @property
    def done(self) -> bool:
        return True

    def record(self, event: "Event | None" = None) -> "Event":
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: "Event") -> None:
        issue("Stream.wait_event")

    def begin_capture(self, mode=None) -> None:
        global _capture
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _capture is not None:
            raise CaptureError("emulated cupy: a capture is already open")
        _capture = _Capture(self)
        counters["capture"] += 1

    def end_capture(self) -> "Graph":
        global _capture
        if _capture is None or _capture.stream is not self:
            raise CaptureError(f"emulated cupy: stream {self.ptr} is not capturing")
        graph, _capture = Graph(_capture.ops), None
        return graph

    def is_capturing(self) -> bool:
        return _capture is not None and _capture.stream is self


Stream.null = Stream(null=True)
_current = [Stream.null]


def get_current_stream(device_id: int = -1) -> Stream:
    return _current[-1]


class ExternalStream(Stream):
    def __init__(self, ptr: int, device_id: int = -1):
        self.ptr, self.device_id = int(ptr), 0


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False):
        import time
        self._clock = time.perf_counter
        self.time = None

    def record(self, stream: Stream | None = None) -> None:
        issue("Event.record")
        self.time = self._clock()

    @property
    def done(self) -> bool:
        return True

    def synchronize(self) -> None:
        synchronize("Event.synchronize()")


def elapsed_ms(start: Event, end: Event) -> float:
    return (end.time - start.time) * 1e3


# --------------------------------------------------------------------------- cuBLAS

class _Cublas:
    """``cupy.cuda.cublas``: what a capture needs (a workspace per handle), and ``gemmEx``
    with host-pointer scalars, as the bench's tensor-core ceilings call it."""

    HANDLE = 1
    # cublas_api.h's values, as CuPy exports them.
    CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
    CUBLAS_POINTER_MODE_HOST, CUBLAS_POINTER_MODE_DEVICE = 0, 1
    CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 77
    CUBLAS_GEMM_DEFAULT = -1
    # library_types.h's data types (cupy.cuda.runtime.CUDA_R_*) -> how the bits are read.
    DATA_TYPES = {0: np.float32, 2: np.float16, 14: "bfloat16"}

    def __init__(self):
        self.workspace = None
        self.pointer_mode = self.CUBLAS_POINTER_MODE_HOST

    def setWorkspace(self, handle: int, workspace: int, size: int) -> None:  # noqa: N802
        self.workspace = (int(workspace), int(size)) if size else None

    def getPointerMode(self, handle: int) -> int:  # noqa: N802
        return self.pointer_mode

    def setPointerMode(self, handle: int, mode: int) -> None:  # noqa: N802
        self.pointer_mode = mode

    def gemmEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb,  # noqa: N802
               beta, C, Ctype, ldc, computeType, algo) -> None:
        """C = alpha op(A) op(B) + beta C, column-major, as cublasGemmEx: operands of type
        Atype/Btype read from their addresses (truncated to tf32 under FAST_TF32, as the
        tensor cores ignore the low mantissa bits), exact products summed in float64, one
        rounding to Ctype (float32 only)."""
        if self.pointer_mode != self.CUBLAS_POINTER_MODE_HOST:
            raise NotImplementedError("emulated cuBLAS: gemmEx with device-pointer scalars")
        if Ctype != 0 or computeType not in (self.CUBLAS_COMPUTE_32F,
                                            self.CUBLAS_COMPUTE_32F_FAST_TF32):
            raise ValueError(f"emulated cuBLAS: CUBLAS_STATUS_NOT_SUPPORTED (Ctype {Ctype}, "
                             f"computeType {computeType})")
        rows = lambda trans, r, c: (r, c) if trans == self.CUBLAS_OP_N else (c, r)  # noqa: E731
        (am, ak), (bk, bn) = rows(transa, m, k), rows(transb, k, n)
        for name, ld, r in (("lda", lda, am), ("ldb", ldb, bk), ("ldc", ldc, m)):
            if ld < max(1, r):
                raise ValueError(f"emulated cuBLAS: CUBLAS_STATUS_INVALID_VALUE ({name} {ld} "
                                 f"< {r} rows)")
        a = _column_major(A, Atype, lda, am, ak, computeType)
        b = _column_major(B, Btype, ldb, bk, bn, computeType)
        a, b = (a if transa == self.CUBLAS_OP_N else a.T), (b if transb == self.CUBLAS_OP_N
                                                             else b.T)
        c = _host_view(C, np.float32, ldc * n).reshape(n, ldc).T[:m]
        scalars = [float(_host_view(p, np.float32, 1)[0]) for p in (alpha, beta)]

        def run():
            prior = c.astype(np.float64) if scalars[1] != 0 else 0.0
            c[...] = (scalars[0] * (a @ b) + scalars[1] * prior).astype(np.float32)

        capture = issue("gemmEx")
        if capture is not None:
            record(capture, run)
        else:
            run()


def _host_view(address: int, dtype, count: int) -> np.ndarray:
    """``count`` elements of ``dtype`` at ``address`` (the emulated device is host memory)."""
    nbytes = count * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype)


def _column_major(address: int, data_type: int, ld: int, r: int, c: int,
                  compute_type: int) -> np.ndarray:
    """The r x c column-major matrix at ``address`` (leading dimension ``ld``), float64."""
    kind = _Cublas.DATA_TYPES[data_type]
    if kind == "bfloat16":
        bits = _host_view(address, np.uint16, ld * c).astype(np.uint32) << np.uint32(16)
        values = bits.view(np.float32)
    else:
        values = _host_view(address, kind, ld * c).astype(np.float32)
    if compute_type == _Cublas.CUBLAS_COMPUTE_32F_FAST_TF32:
        values = (values.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)
    return values.reshape(c, ld).T[:r].astype(np.float64)


cublas = _Cublas()


def get_cublas_handle() -> int:
    return _Cublas.HANDLE


# --------------------------------------------------------------------------- capture

class _Capture:
    def __init__(self, stream: Stream):
        self.stream = stream
        self.ops: list = []


_capture: _Capture | None = None


def issue(what: str) -> _Capture | None:
    """Called before every device operation: the open capture it joins, or None to run it.
    Refuses an operation on another stream than the capturing one."""
    if _capture is None:
        return None
    if get_current_stream() is not _capture.stream:
        raise CaptureError(f"emulated cupy: {what} issued on stream {get_current_stream().ptr} "
                           f"while stream {_capture.stream.ptr} is capturing (the legacy "
                           "default stream may not be used during a capture)")
    if what.split()[-1].removeprefix("cupy.") in CUBLAS_OPS and cublas.workspace is None:
        raise CaptureError(f"emulated cupy: {what} (cuBLAS) captured before "
                           "cublas.setWorkspace gave the handle a workspace")
    return _capture


def record(capture: _Capture, replay) -> None:
    capture.ops.append(replay)


class Graph:
    """A captured sequence of operations; ``launch`` re-runs them on the same buffers."""

    def __init__(self, ops: list):
        self._ops = list(ops)

    def launch(self, stream: Stream | None = None) -> None:
        capture = issue("Graph.launch")
        if capture is not None:
            record(capture, self._replay)
            return
        self._replay()
        counters["graph_launch"] += 1

    def _replay(self) -> None:
        for op in self._ops:
            op()

    def __len__(self) -> int:
        return len(self._ops)


def _device_arrays(tree) -> list:
    if isinstance(tree, _ndarray):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [a for e in tree for a in _device_arrays(e)]
    if isinstance(tree, dict):
        return [a for e in tree.values() for a in _device_arrays(e)]
    return []


def _substitute(tree, copies: dict):
    if isinstance(tree, _ndarray):
        return copies[id(tree)]
    if isinstance(tree, (tuple, list)):
        return type(tree)(_substitute(e, copies) for e in tree)
    if isinstance(tree, dict):
        return {k: _substitute(v, copies) for k, v in tree.items()}
    return tree


def _host_arrays(result) -> list:
    if isinstance(result, (np.ndarray, np.generic)):
        return [np.asarray(result)]
    if isinstance(result, (tuple, list)):
        return [a for e in result for a in _host_arrays(e)]
    return []


def _garbage(like: np.ndarray) -> np.ndarray:
    buf = np.empty(like.shape, like.dtype)
    if buf.dtype.kind in "fc":
        buf[...] = np.nan
    else:
        buf.view(np.uint8).reshape(-1)[...] = GARBAGE_BYTE
    return buf


def capture_call(capture: _Capture, what: str, fn, args, kwargs, unwrap, wrap):
    """Record ``fn(*args, **kwargs)`` (device arrays in them) into ``capture``.

    It is first tried on copies of its device arguments, which tells whether it writes to
    an argument (then it is recorded, the arguments left as they are). Otherwise it runs on
    the real arguments: a result that is a view of one of them is returned as it is
    (nothing to record), new arrays are replaced by garbage-filled buffers that the replay
    computes into."""
    inputs = _device_arrays((args, kwargs))
    # The launch takes its arguments as they are now: a list the host changes later (a
    # list of states it appends to) must not change what the replay computes.
    same = {id(a): a for a in inputs}
    args, kwargs = _substitute(args, same), _substitute(kwargs, same)
    copies = {id(a): _ndarray(np.array(a._a, order="K", copy=True)) for a in inputs}
    trial = fn(*unwrap(_substitute(args, copies)), **unwrap(_substitute(kwargs, copies)))
    if any(copies[id(a)]._a.tobytes() != a._a.tobytes() for a in inputs):
        record(capture, lambda: fn(*unwrap(args), **unwrap(kwargs)))
        by_copy = {id(copies[id(a)]._a): a for a in inputs}
        return _map_results(trial, lambda r: by_copy.get(id(r)) or wrap(r))
    result = fn(*unwrap(args), **unwrap(kwargs))
    outputs = _host_arrays(result)
    if any(np.shares_memory(r, a._a) for r in outputs for a in inputs):
        return wrap(result)
    if not isinstance(result, (np.ndarray, np.generic, tuple, list)):
        raise CaptureError(f"emulated cupy: {what} returned a host value "
                           f"({type(result).__name__}) while a stream is capturing")
    _check_allocation(what)
    buffers = [_garbage(r) for r in outputs]
    if fn in ALLOCATIONS:  # CuPy's empty allocates and launches nothing: no replay
        return wrap(buffers[0])

    def replay():
        for buf, r in zip(buffers, _host_arrays(fn(*unwrap(args), **unwrap(kwargs)))):
            buf[...] = r

    record(capture, replay)
    found = iter(buffers)
    return _map_results(result, lambda r: _ndarray(next(found)))


def _map_results(result, convert):
    if isinstance(result, (np.ndarray, np.generic)):
        return convert(result)
    if isinstance(result, (tuple, list)):
        return type(result)(_map_results(e, convert) for e in result)
    return result
