"""CUDA graphs for gpuconv: capture a training step once, replay it per batch.

A small network's step is a few dozen short kernels; launched one by one from Python, each
costs more host time than GPU time. Captured into a CUDA graph (CuPy's stream capture) the
whole step is one launch. What the capture needs, and this module provides:

- **Static memory.** Everything the captured kernels touch must keep its address from one
  replay to the next. Arrays made during the capture come from a memory pool that belongs
  to the graph (:class:`StepGraph`), so nothing outside reuses their blocks; inputs are
  copied into buffers made before the capture.
- **No host work inside.** A capture records the launches without running them: no value
  may be read back, no host array copied in. :func:`upload` makes a device array from a
  host array anyway -- inside a capture it allocates the array and copies the values in
  right after the capture ends (the captured kernels read the array only at replay).
- **Device-side state.** What changes from step to step without the host (the learning
  rate a scheduler sets, an optimizer's step count, dropout's Philox offset) lives in device
  memory, where a replay reads it. Dropout masks come from :class:`PhiloxStream` offsets,
  which a replay advances through a device counter.
- **Streams.** A capture cannot run on the legacy default stream. :func:`side_stream` runs a
  block on a stream of its own, ordered after the work already queued on the current stream
  and before the work queued after the block, with events (no host synchronisation).
- **cuBLAS.** A cuBLAS call inside a capture must not allocate its workspace; one is set on
  the handle before the capture (:func:`prepare_cublas`).
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Any, Callable

import numpy as np

from . import backend

__all__ = ["capturing", "upload", "side_stream", "StepGraph", "PhiloxStream", "prepare_cublas",
           "CUBLAS_WORKSPACE_BYTES"]

# cuBLAS's recommended workspace on Hopper (smaller GPUs want less; a larger one is harmless).
CUBLAS_WORKSPACE_BYTES = 32 << 20

_capture: "_Capture | None" = None
_workspaces: dict = {}


class _Capture:
    def __init__(self):
        self.uploads: list = []   # (device array, host array) to copy after the capture
        self.alive: list = []     # uploaded arrays, kept as long as the graph


def capturing() -> bool:
    """True while :class:`StepGraph` captures (inside ``StepGraph.capture``)."""
    return _capture is not None


def upload(host: np.ndarray):
    """A device copy of ``host``: asynchronous (CuPy stages it through pinned memory), and
    inside a capture deferred to the end of the capture, the array kept alive with the
    graph."""
    cp = backend.cupy_or_none()
    if _capture is None:
        return cp.asarray(host)
    device = cp.empty(host.shape, host.dtype)
    _capture.uploads.append((device, np.array(host)))
    _capture.alive.append(device)
    return device


@contextlib.contextmanager
def side_stream(stream=None):
    """Run the block on ``stream`` (a new non-blocking stream by default) after the work
    already queued on the current stream; the current stream then waits for the block's
    work. Yields the stream. Only events: the host never waits."""
    cp = backend.cupy_or_none()
    outer = cp.cuda.get_current_stream()
    stream = stream or cp.cuda.Stream(non_blocking=True)
    stream.wait_event(outer.record())
    try:
        with stream:
            yield stream
    finally:
        outer.wait_event(stream.record())


def prepare_cublas() -> None:
    """Give the current device's cuBLAS handle a workspace that lives as long as the
    process, so that a cuBLAS call inside a capture allocates nothing."""
    cp = backend.cupy_or_none()
    device = cp.cuda.Device().id
    if device in _workspaces:
        return
    try:
        from cupy_backends.cuda.libs import cublas
    except ImportError:  # CuPy's emulation in the tests
        cublas = cp.cuda.cublas
    with cp.cuda.using_allocator(cp.get_default_memory_pool().malloc):
        workspace = cp.empty(CUBLAS_WORKSPACE_BYTES, np.uint8)
    cublas.setWorkspace(cp.cuda.device.get_cublas_handle(), workspace.data.ptr,
                        CUBLAS_WORKSPACE_BYTES)
    _workspaces[device] = workspace


# --------------------------------------------------------------------------- Philox offsets

_streams: "weakref.WeakSet[PhiloxStream]" = weakref.WeakSet()


class PhiloxStream:
    """Where dropout masks come from: a Philox key ``(seed, offset)``, the offset counting
    the masks drawn. A capture bakes the offset it saw into the graph; each replay must draw
    the next ones, so the captured kernels add ``delta[0]``, a device counter that
    :class:`StepGraph` sets before each replay to how far the offset has moved since the
    capture. Outside replays ``delta`` is 0 and nobody reads it."""

    def __init__(self, seed: int):
        self.seed, self.offset = int(seed), 0
        self._delta: dict = {}
        _streams.add(self)

    def reset(self, seed: int) -> None:
        self.seed, self.offset = int(seed), 0

    def draw(self) -> tuple[int, int, Any]:
        """``(seed, offset, delta)`` for the next mask: ``delta`` is the device counter
        inside a capture, None otherwise."""
        offset, self.offset = self.offset, self.offset + 1
        return self.seed, offset, self.delta() if capturing() else None

    def delta(self):
        cp = backend.cupy_or_none()
        device = cp.cuda.Device().id
        if device not in self._delta:
            with cp.cuda.using_allocator(cp.get_default_memory_pool().malloc):
                self._delta[device] = cp.zeros(1, np.uint64)
        return self._delta[device]


def _philox_offsets() -> dict:
    return {stream: stream.offset for stream in list(_streams)}


# --------------------------------------------------------------------------- the step graph

class StepGraph:
    """One captured step: ``capture(step)`` records ``step()`` (not run), ``replay()`` runs
    it again on the same buffers. Must be used on a non-default stream (``side_stream``).
    Each replay draws from every :class:`PhiloxStream` as many offsets as the captured step
    drew, so that replays get the masks that eager steps would have got."""

    def __init__(self):
        cp = backend.cupy_or_none()
        self._pool = cp.cuda.MemoryPool()
        self._graph = None
        self._alive: list = []
        self._draws: dict = {}

    def capture(self, step: Callable[[], Any]) -> Any:
        """Record ``step()`` into the graph; returns what it returned (arrays that the
        replays will fill). The step must not read device values back."""
        global _capture
        from . import device_checks

        cp = backend.cupy_or_none()
        stream = cp.cuda.get_current_stream()
        if stream.ptr == 0:
            raise RuntimeError("StepGraph.capture: the current stream is the legacy default "
                               "stream; capture inside graphs.side_stream()")
        prepare_cublas()
        device_checks.prepare()
        before = _philox_offsets()
        for philox in before:
            philox.delta()  # allocated now, outside the capture
        _capture = _Capture()
        try:
            with cp.cuda.using_allocator(self._pool.malloc):
                stream.begin_capture()
                try:
                    result = step()
                finally:
                    self._graph = stream.end_capture()
        finally:
            capture, _capture = _capture, None
            # The capture ran no kernel: what it drew, each replay draws again.
            self._draws = {}
            for philox, offset in before.items():
                if philox.offset != offset:
                    self._draws[philox] = (offset, philox.offset - offset)
                    philox.offset = offset
        for device, host in capture.uploads:
            device[...] = cp.asarray(host)
        self._alive = capture.alive + [result]
        return result

    def replay(self) -> None:
        """Run the captured step once more (one launch)."""
        for philox, (captured_at, draws) in self._draws.items():
            philox.delta().fill(philox.offset - captured_at)
        self._graph.launch(stream=backend.cupy_or_none().cuda.get_current_stream())
        for philox, (_, draws) in self._draws.items():
            philox.offset += draws
