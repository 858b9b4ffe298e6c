"""Checks of values that live on the GPU, made without making the host wait.

Argument checks that need only shapes and dtypes run on the host before any launch, on every
device. A check that needs the *values* of a GPU array (are the class targets inside
``[0, C)``? are the max-pool indices inside their plane?) would make the host wait for the
device at every call, so that a small network could never queue work ahead of the GPU.
On the GPU these checks therefore run inside the kernels: a kernel that meets a bad value
leaves its output well defined (the position is skipped, never read out of bounds) and
records the fact in a small device array of error flags. The host reads the flags where it
reads the device anyway -- ``gpuconv.train.fit`` once per epoch and at its progress
updates, ``evaluate`` at its end -- or when asked, with :func:`check`, and then raises the
``ValueError`` that the eager check would have raised, saying that it was found later.

``set_eager(True)`` (or ``GPUCONV_EAGER_CHECKS=1`` in the environment, or ``with
eager(): ...``) makes the value checks run on the host at each call instead, as on the CPU:
the error points at the offending call, at the cost of one synchronisation per check. A
CUDA graph capture refuses eager checks (a capture may not synchronise).

Flags are per device, one row per check: ``[seen, value, bound, extra]`` (int64), where a
kernel that finds a bad value writes ``seen = 1`` and the value, bound and extra (an
``ignore_index``) it saw; several bad values race benignly, each row stays one of them.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from . import backend

__all__ = ["DeviceCheckError", "CHECKS", "eager", "set_eager", "eager_checks", "check", "read"]

# One row per check: (op, message). The message is formatted with the row's value, bound
# and extra; it repeats the eager check's wording so that both read alike.
CHECKS = {
    "cross_entropy.target": ("cross_entropy", "target values must lie in [0, {bound}) or "
                             "equal ignore_index={extra}; found {value}"),
    "cross_entropy_backward.target": ("cross_entropy_backward", "target values must lie in "
                                      "[0, {bound}) or equal ignore_index={extra}; found "
                                      "{value}"),
    "nll_loss.target": ("nll_loss", "target values must lie in [0, {bound}) or equal "
                        "ignore_index={extra}; found {value}"),
    "nll_loss_backward.target": ("nll_loss_backward", "target values must lie in [0, {bound}) "
                                 "or equal ignore_index={extra}; found {value}"),
    "class_loss.mean_weight": ("cross_entropy/nll_loss", "reduction='mean' divided by zero: all "
                               "targets are ignored (ignore_index={extra}) or the class weights "
                               "of the non-ignored targets sum to zero"),
    "max_pool2d_backward.indices": ("max_pool2d_backward", "indices must lie in [0, {bound}) "
                                    "(a flat position in an input plane); found {value}"),
}
_ROWS = {name: i for i, name in enumerate(CHECKS)}
_WORDS = 4
_eager = os.environ.get("GPUCONV_EAGER_CHECKS", "0") == "1"
_flags: dict = {}
_DEVICE_CHECKED: set = set()


class DeviceCheckError(ValueError):
    """A value check that a kernel made on the device failed; raised by the next read."""


def eager() -> bool:
    """True when the value checks of GPU arrays run on the host at each call."""
    return _eager


def set_eager(enabled: bool) -> None:
    """Run the value checks of GPU arrays on the host at each call (True), or on the device
    with the flags read later (False, the default)."""
    global _eager
    _eager = bool(enabled)


@contextlib.contextmanager
def eager_checks(enabled: bool = True):
    """``with eager_checks(): ...`` -- :func:`set_eager` for the block."""
    old = _eager
    set_eager(enabled)
    try:
        yield
    finally:
        set_eager(old)


def checked_on_device(op: str, impl: str) -> None:
    """Declare that implementation ``impl`` of ``op`` checks the values on the device (its
    launcher passes the error rows of :func:`slot` to its kernels)."""
    _DEVICE_CHECKED.add((op, impl))


def on_host(op: str, impl: str | None, array) -> bool:
    """Whether the value checks of a call of ``op`` on ``array`` must run now on the host:
    for host arrays, in eager mode, and for an implementation that does not check on the
    device (which then costs a synchronisation)."""
    if _eager or backend.device_of(array) != "cuda":
        return True
    from . import kernels

    return (op, kernels.select(op, impl, array).name) not in _DEVICE_CHECKED


def _device_flags():
    cp = backend.cupy_or_none()
    device = cp.cuda.Device().id
    flags = _flags.get(device)
    if flags is None:
        # From the default pool: the flags outlive every graph (prepare() makes them before
        # a capture).
        with cp.cuda.using_allocator(cp.get_default_memory_pool().malloc):
            flags = _flags[device] = cp.zeros((len(CHECKS), _WORDS), np.int64)
    return flags


def slot(name: str):
    """The device row (4 int64) that the kernels of check ``name`` write to."""
    return _device_flags()[_ROWS[name]]


def prepare() -> None:
    """Allocate the flags of the current device now (before a CUDA graph capture)."""
    if backend.gpu_available():
        _device_flags()


def read(*arrays) -> list[np.ndarray]:
    """Host copies of the GPU ``arrays`` and of the error flags, in one device-to-host copy
    (one synchronisation); raises :class:`DeviceCheckError` when a flag is set (and clears
    the flags). Host arrays are copied as they are."""
    if not arrays or backend.device_of(arrays[0]) != "cuda":
        return [np.array(a) for a in arrays]
    cp = backend.cupy_or_none()
    flags = _flags.get(cp.cuda.Device().id)
    parts = [a.reshape(-1).view(np.uint8) for a in arrays]
    if flags is not None:
        parts.append(flags.reshape(-1).view(np.uint8))
    host = cp.concatenate(parts).get()
    out, at = [], 0
    for a in arrays:
        out.append(host[at:at + a.nbytes].view(a.dtype).reshape(a.shape))
        at += a.nbytes
    if flags is not None:
        _raise_if_set(host[at:].view(np.int64).reshape(flags.shape), flags)
    return out


def check() -> None:
    """Read the error flags of the current GPU (one synchronisation) and raise
    :class:`DeviceCheckError` for the first one set; a no-op without a GPU."""
    cp = backend.cupy_or_none()
    flags = _flags.get(cp.cuda.Device().id) if cp is not None and backend.gpu_available() \
        else None
    if flags is not None:
        _raise_if_set(flags.get(), flags)


def _raise_if_set(host_flags: np.ndarray, flags) -> None:
    rows = np.flatnonzero(host_flags[:, 0])
    if not rows.size:
        return
    flags.fill(0)
    name = list(CHECKS)[rows[0]]
    op, message = CHECKS[name]
    value, bound, extra = (int(v) for v in host_flags[rows[0], 1:])
    raise DeviceCheckError(
        f"{op}: " + message.format(value=value, bound=bound, extra=extra)
        + " (checked on the GPU by a launch since the last check; gpuconv.device_checks"
          ".set_eager(True) checks at each call instead)")
