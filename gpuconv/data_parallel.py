"""fit's data-parallel training step on the CPU: the batch cut into shards, each run by its
own process.

Why processes, not the thread pool: a training step is dozens of short kernels with Python
between them. Two threads each running half of LeNet-5's step (each kernel serial) ran
1.0-1.3x one thread: each shard waited for the GIL some 20-40 times per step, and on the
2-core development machine (a virtual machine) every such wake took 0.1-0.7 ms. Two
processes, each training on 64 images, ran 1.7-1.9x the images/s of one process on 128
(bench/NOTES.md, 2026-12-07). So a step with ``k`` shards is:

- the caller copies the parameters into shared memory, which the ``k - 1`` workers' models
  use as their parameters, and each worker's shard of the batch into that worker's input
  buffers, then tells the workers to start;
- every process runs forward, its shard's loss with ``reduction="sum"`` and
  ``backward_params`` with ``grad_output = 1 / divisor``, the *batch's* divisor of a mean
  (:meth:`gpuconv.nn.loss._Loss.mean_divisor`; 1 for a sum), so that the shards' gradients
  add up to the batch's. The caller runs shard 0 on the model itself, its kernels serial
  (:func:`gpuconv.threads.serial`); each worker writes its gradients into shared memory;
- the caller adds the workers' gradients into its parameters' ``.grad`` in worker order, and
  the batch's loss is the shards' sum over the divisor.

The result is the unsharded step's up to rounding (the shards' sums are added in another
order), and the same from run to run (the split is fixed). One level of parallelism holds:
inside each process every kernel runs on one thread. ``k`` is the gpuconv thread count,
or fewer so that each shard has at least ``MIN_SHARD_SAMPLES`` samples of the first batch.

Which steps may be sharded (:func:`blockers`; else the step runs on the thread pool as
before): on a POSIX system with more than one gpuconv thread, a model whose
``samples_independent`` is true as its code declares it (no batch statistics, no dropout
mask, no subclass computing otherwise: :func:`gpuconv.nn.module.independent`), no class
from ``__main__`` (a worker cannot import it), float32 or float64 NumPy parameters with an
array each, a gpuconv loss with reduction "mean" or "sum", and a batch whose trailing shape
and dtypes are the first batch's and which fits the workers' buffers (sized by it).

How a step is handed over (:class:`_Channel`): the caller writes the shard's size and
divisor, and whether it poisons new outputs (:func:`gpuconv.backend.poisoned`, which the
worker's shard then does too), into the worker's control words in the shared block and bumps
its step number there; the worker writes its loss sum, correct count and which parameters
got a gradient back the same way and bumps its done number. Each side spins on the other's
number, so neither pickles, unpickles or reads its socket between a bump and going on (a
socket reply cost 0.11 ms of cold Python per step: bench/NOTES.md, 2026-12-07). Each bump is
followed by a one-byte message on the socket, which wakes a side that stopped spinning and
carries errors, the closing and the workers' exit (end of file); a side that saw the bump in
memory reads that byte later, while it waits anyway. Watching memory relies on x86's
ordering of stores (the shard's data is visible before the number that announces it; NumPy,
BLAS and numba write with ordinary stores, and glibc's large copies fence their non-temporal
ones); on other processors each side waits for the byte instead, whose system calls order
memory.

The workers are Python processes started by :func:`start` with the caller's ``sys.path``,
each handed its end of a socket pair, the model and the loss (pickled once, without their
parameter arrays, which the workers map from the shared block, and without any saved
forward); they run in a session of their own (a terminal's Ctrl-C does not reach them), and
exit when the step is closed (``close``, which fit calls; one still starting is killed) or
when their socket closes, as it does when the calling process exits. A worker's error is
raised by the caller, with the worker's traceback as its cause, and the step's gradients
are left as they were before it.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pickle
import platform
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
import weakref
from multiprocessing import resource_tracker, spawn
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from . import backend, threads
from .nn.loss import _Loss
from .nn.module import accumulate_grad, independent, route_gradients

__all__ = ["ShardedStep", "ChosenStep", "start", "blockers", "correct_count",
           "is_class_target", "MIN_SHARD_SAMPLES", "TRIAL_STEPS"]

# Fewer samples per shard than this: no sharding. A LeNet-5 step costs about 3 ms whatever
# the batch (8 images: 3.3 ms; 64: 11.4 ms on one thread) and a sharded step adds about
# 1 ms (copies, handover, the optimizer alone), so a shard of fewer than 32 such images
# cannot gain; above it, the first steps' timing decides.
MIN_SHARD_SAMPLES = 32
# How long the workers may take to start (import gpuconv, map the block, load the model,
# one warm-up step) before fit gives up on sharding and trains in one process.
STARTUP_SECONDS = 120.0
# Steps of each kind timed before fit chooses between them (the first of each not counted).
TRIAL_STEPS = 5
# How long a closing worker may take to exit before it is killed.
CLOSE_SECONDS = 10.0
_POLL_SECONDS = 0.005
# How long the caller (for the workers' results) and a worker (for the next step) spin
# (:meth:`_Channel.wait`) before they sleep in a blocking read of the socket: waking a
# sleeping process took 0.1-0.7 ms on the 2-core virtual machine. A sharded LeNet-5 step
# (batch 128, 2 shards) took 15.12 / 17.45 ms without polling, 14.38 / 16.43 ms with 5 ms
# (two runs, 8 alternations each; 2 ms: 14.69 / 16.84). The polling core is one a shard
# uses.
SPIN_SECONDS = 0.005
# Whether a side may watch the other's step numbers in the shared block (see the module's
# docstring): x86 keeps stores in order as other cores see them.
_WATCH_MEMORY = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
# A worker's control words (int64, then one has-gradient flag per parameter) and values
# (float64) in the shared block.
_START, _SIZE, _DONE, _COUNT, _POISON, _HAS_GRAD = range(6)
_DIVISOR, _LOSS_SUM = range(2)
# The one-byte messages that follow a bump of the step number (caller) and of the done
# number (worker); every other message is a pickle.
_STEP, _STEP_DONE = b"s", b"d"
# Reads of the watched word between two polls of the socket (a system call of a few us):
# some 10 us of reads.
_READS_PER_POLL = 64
# Owed bytes (see _Channel.wait) a side lets pile up before it reads those that have
# arrived: a socket pair holds some 280 of them, and a full one blocks the other side's send.
_MAX_OWED = 16
_ALIGN = 64
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The worker's start: the caller's sys.path (so that it imports the same gpuconv and the
# model's modules), then the serve loop on the socket whose descriptor is argv[1].
_PATH_VARIABLE = "GPUCONV_WORKER_SYS_PATH"
_BOOTSTRAP = ("import json, os, sys; "
              f"sys.path[:] = json.loads(os.environ.pop({_PATH_VARIABLE!r})); "
              "from gpuconv.data_parallel import _serve; _serve(int(sys.argv[1]))")


# --------------------------------------------------------------------------- shared arrays

def _layout(arrays: dict[str, tuple[tuple, np.dtype]]) -> tuple[dict, int]:
    """Byte offsets in one block for named (shape, dtype) arrays, each 64-byte aligned."""
    offsets, size = {}, 0
    for name, (shape, dtype) in arrays.items():
        offsets[name] = (size, tuple(shape), np.dtype(dtype).str)
        size += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
    return offsets, max(size, _ALIGN)


def _views(buf, offsets: dict) -> dict[str, np.ndarray]:
    return {name: np.ndarray(shape, dtype, buffer=buf, offset=offset)
            for name, (offset, shape, dtype) in offsets.items()}


def _reserve(shm: SharedMemory) -> None:
    """Allocate the block's pages now (Linux), so that a full /dev/shm is an error here and
    not a SIGBUS at the first copy into it."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(shm._fd, 0, shm.size)   # noqa: SLF001 (no public descriptor)


def _attach(name: str) -> SharedMemory:
    """Map the caller's block without handing it to a resource tracker: before Python 3.13
    every SharedMemory opened is registered with one (a tracker process per worker), which
    unlinks it when the process exits; the caller owns and unlinks the block."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return SharedMemory(name=name)
    finally:
        resource_tracker.register = register


# --------------------------------------------------------------------------- what travels

class _SetupPickler(pickle.Pickler):
    """Pickles the model and loss with each parameter array as ``("param", i)`` and each
    module's saved forward as ``("dropped",)``: the worker maps its arrays from the block,
    and object identity (tied weights, layers referred to twice) is kept."""

    def __init__(self, file, arrays: dict[int, int], dropped: set[int]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._arrays, self._dropped = arrays, dropped

    def persistent_id(self, obj):
        i = self._arrays.get(id(obj))
        if i is not None:
            return ("param", i)
        if id(obj) in self._dropped:
            return ("dropped",)
        return None


class _SetupUnpickler(pickle.Unpickler):
    def __init__(self, file, arrays: list):
        super().__init__(file)
        self._arrays = arrays

    def persistent_load(self, pid):
        return self._arrays[pid[1]] if pid[0] == "param" else None


def _setup_bytes(model, loss_fn, params: list) -> bytes:
    arrays = {id(p.data): i for i, p in enumerate(params)}
    dropped = {id(m._ctx) for m in (*model.modules(), loss_fn) if m._ctx is not None}
    buf = io.BytesIO()
    _SetupPickler(buf, arrays, dropped).dump((model, loss_fn))
    return buf.getvalue()


def _summing(loss_fn):
    """A copy of ``loss_fn`` that sums (shards of a mean are sums over the batch's divisor)."""
    summing = copy.copy(loss_fn)
    summing.reduction = "sum"
    object.__setattr__(summing, "_ctx", None)
    return summing


def is_class_target(out, y) -> bool:
    """Whether ``y`` holds integer class indices (N, ...) for scores ``out`` (N, C, ...)."""
    return (np.dtype(y.dtype).kind in "iu" and out.ndim >= 2
            and tuple(y.shape) == (out.shape[0],) + tuple(out.shape[2:]))


def correct_count(out, y) -> int | None:
    """How many samples of scores ``out`` (N, C, ...) have their largest score at their class
    ``y`` (N, ...); None when ``y`` is not class indices (nothing to count)."""
    if not is_class_target(out, y):
        return None
    return int(np.count_nonzero(out.argmax(axis=1) == y))


def _add_counts(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


# --------------------------------------------------------------------------- the caller's side

def blockers(model, loss_fn) -> list[str]:
    """Why the training step of ``model`` and ``loss_fn`` cannot be sharded (empty: it can)."""
    reasons = []
    if threads.get_num_threads() < 2:
        reasons.append("one gpuconv thread")
    if os.name != "posix":
        reasons.append("not a POSIX system")
    if getattr(sys, "frozen", False) or not spawn.get_executable():
        reasons.append("no Python interpreter to start workers with")
    if not independent(model):
        reasons.append("the model mixes samples (batch norm in training, dropout, or a layer "
                       "or subclass that does not declare samples_independent)")
    if not (isinstance(loss_fn, _Loss) and independent(loss_fn)
            and loss_fn.reduction in ("mean", "sum")):
        reasons.append("the loss is not a gpuconv loss reduced by mean or sum")
    if any(type(m).__module__ == "__main__" for m in (*model.modules(), loss_fn)):
        reasons.append("a module's class is defined in __main__ (a script or notebook), "
                       "which a worker cannot import")
    params = list(model.parameters())
    if not params or not all(isinstance(p.data, np.ndarray) and p.data.dtype in _DTYPES
                             for p in params):
        reasons.append("the parameters are not float32 or float64 NumPy arrays")
    if len({id(p.data) for p in params}) != len(params):
        reasons.append("two parameters share one array")
    return reasons


class _Channel:
    """One side's end of the step handover with one worker (see the module's docstring):
    ``ctl`` and ``val`` the worker's control words and values in the shared block, ``conn``
    the socket, ``watched`` the word this side waits on (``_DONE`` for the caller, ``_START``
    for the worker)."""

    def __init__(self, conn: Connection, ctl: np.ndarray, val: np.ndarray, watched: int):
        self.conn, self.ctl, self.val, self.watched = conn, ctl, val, watched
        self.owed = 0   # one-byte messages whose bump this side saw in memory, not yet read

    def signal(self, word: int, number: int, byte: bytes) -> None:
        """Set ``word`` to ``number`` (after everything written before it), then send
        ``byte``."""
        self.ctl[word] = number
        self.conn.send_bytes(byte)

    def wait(self, number: int, spin: float) -> bytes | None:
        """Return None once the other side has set the watched word to ``number``, or the
        pickled message it sent instead (an error, the closing); end of file raises
        EOFError. Spins for ``spin`` seconds, then sleeps on the socket; the one-byte
        messages of earlier bumps are read here, where this side waits anyway."""
        deadline = time.perf_counter() + spin
        ctl, conn, word = self.ctl, self.conn, self.watched
        while True:
            if _WATCH_MEMORY:
                for _ in range(_READS_PER_POLL):
                    if ctl[word] == number:
                        self.owed += 1
                        if self.owed > _MAX_OWED:   # else the other side's sends would block
                            self._read_owed()
                        return None
            if conn.poll():
                data = conn.recv_bytes()
                if self.owed:   # an earlier bump's byte: they arrive in order
                    assert len(data) == 1, "a message overtook a step's byte"
                    self.owed -= 1
                elif len(data) == 1:   # this bump's byte (its words are visible now)
                    return None
                else:
                    return data
            elif time.perf_counter() > deadline:
                conn.poll(None)

    def _read_owed(self) -> None:
        """Read the owed bytes that have arrived (the rest are read by later waits)."""
        while self.owed and self.conn.poll():
            assert len(self.conn.recv_bytes()) == 1, "a message overtook a step's byte"
            self.owed -= 1


class _Worker:
    """One worker process and its connection."""

    def __init__(self, index: int):
        here, there = socket.socketpair()
        env = dict(os.environ, GPUCONV_NUM_THREADS="1")
        env[_PATH_VARIABLE] = json.dumps(sys.path)
        try:
            self.process = subprocess.Popen(
                [spawn.get_executable(), "-c", _BOOTSTRAP, str(there.fileno())],
                pass_fds=(there.fileno(),), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            here.close()
            raise
        finally:
            there.close()
        self.index = index
        self.conn = Connection(here.detach())
        self.channel: _Channel | None = None   # and the views below: attach()
        self.x = self.y = None
        self.grads: list = []

    def attach(self, views: dict, params: int) -> None:
        """Take this worker's views of the shared block (its handover words, input buffers
        and gradients)."""
        j = self.index
        self.channel = _Channel(self.conn, views[f"ctl{j}"], views[f"val{j}"], _DONE)
        self.x, self.y = views[f"x{j}"], views[f"y{j}"]
        self.grads = [views[f"grad{j}.{i}"] for i in range(params)]

    def detach(self) -> None:
        self.channel, self.x, self.y, self.grads = None, None, None, []

    def exited(self) -> RuntimeError:
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"data-parallel worker {self.index} exited (exit code {code})")

    def result(self):
        """The worker's next pickled reply; its error, or its exit, raised here."""
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            raise self.exited() from None
        return self._checked(reply)

    def finished(self, step: int, spin: float) -> tuple:
        """The worker's results of step number ``step``: ``("done", loss_sum, correct,
        has_grad)``; its error, or its exit, raised here."""
        try:
            data = self.channel.wait(step, spin)
        except (EOFError, OSError):
            raise self.exited() from None
        if data is not None:   # an error, pickled
            return self._checked(pickle.loads(data))
        ctl, val = self.channel.ctl, self.channel.val
        count = int(ctl[_COUNT])
        return ("done", float(val[_LOSS_SUM]), None if count < 0 else count,
                (ctl[_HAS_GRAD:] != 0).tolist())

    def _checked(self, reply):
        if reply[0] == "error":
            _, exc, text = reply
            raise exc from RuntimeError(f"in data-parallel worker {self.index}:\n{text}")
        return reply


def _shutdown(pid: int, workers: list, starting: list, shm: SharedMemory) -> None:
    """Stop the workers (all told first, then waited for against one deadline; those still
    starting, which read nothing yet, killed) and free the block; nothing in a forked
    child, whose parent owns both."""
    if os.getpid() != pid:
        return
    for w in workers:
        w.detach()   # its views of the block, which would keep the mapping open
    for w in workers:
        if w in starting:
            w.process.kill()
        else:
            try:
                w.conn.send(("close",))
            except OSError:
                pass
        w.conn.close()
    deadline = time.monotonic() + CLOSE_SECONDS
    for w in workers:
        try:
            w.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()
    try:
        shm.close()
    except BufferError:   # a view is still alive somewhere; the mapping goes with it
        pass
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


class ShardedStep:
    """The data-parallel step of one model and loss in ``shards`` shards (see the module's
    docstring), its buffers sized by the first batch ``(x, y)``. The workers start at once;
    ``ready()`` says when they have. ``step(x, y)`` returns ``(loss, correct)`` (correct None
    for targets that are not class indices), or None when the batch does not fit (run it
    unsharded); ``close()`` stops the workers (also done
    when the object is collected)."""

    def __init__(self, model, loss_fn, shards: int, x, y):
        self.model, self.loss_fn, self.shards = model, loss_fn, shards
        self.summing = _summing(loss_fn)
        self.params = list(model.parameters())
        setup = _setup_bytes(model, loss_fn, self.params)   # before any process exists
        self.capacity = -(-len(x) // shards)       # samples per worker shard
        self.x_like = (tuple(x.shape[1:]), x.dtype)
        self.y_like = (tuple(y.shape[1:]), y.dtype)
        arrays = {f"param{i}": (p.shape, p.dtype) for i, p in enumerate(self.params)}
        for j in range(1, shards):
            arrays.update({f"grad{j}.{i}": (p.shape, p.dtype)
                           for i, p in enumerate(self.params)})
            arrays[f"ctl{j}"] = ((_HAS_GRAD + len(self.params),), np.int64)
            arrays[f"val{j}"] = ((2,), np.float64)
            arrays[f"x{j}"] = ((self.capacity,) + self.x_like[0], x.dtype)
            arrays[f"y{j}"] = ((self.capacity,) + self.y_like[0], y.dtype)
        offsets, size = _layout(arrays)
        self._shm = SharedMemory(create=True, size=size)
        self.views = _views(self._shm.buf, offsets)
        self.workers: list[_Worker] = []
        self._waiting: list[_Worker] = []   # started, not yet ready
        self._finalizer = weakref.finalize(self, _shutdown, os.getpid(), self.workers,
                                           self._waiting, self._shm)
        self._started = time.monotonic()
        self._broken = False
        self.spin = SPIN_SECONDS
        self._step_number = 0
        self._param_views = [self.views[f"param{i}"] for i in range(len(self.params))]
        try:
            _reserve(self._shm)
            for j in range(1, shards):
                self.workers.append(_Worker(j))
                self._waiting.append(self.workers[-1])
                self.workers[-1].attach(self.views, len(self.params))
            for w in self.workers:
                w.conn.send({"shm": self._shm.name, "offsets": offsets, "worker": w.index,
                             "params": len(self.params), "spin": self.spin})
                w.conn.send_bytes(setup)
        except BaseException:
            self.close()
            raise

    def ready(self) -> bool:
        """Whether every worker has started (without waiting); raises a worker's start-up
        error, or TimeoutError after ``STARTUP_SECONDS``."""
        while self._waiting and self._waiting[0].conn.poll():
            reply = self._waiting[0].result()
            if reply[0] != "ready":
                raise RuntimeError(f"data-parallel worker {self._waiting[0].index} answered "
                                   f"{reply[0]!r} to its start")
            self._waiting.pop(0)
        if self._waiting and time.monotonic() - self._started > STARTUP_SECONDS:
            raise TimeoutError(f"a worker did not start in {STARTUP_SECONDS:.0f} s")
        return not self._waiting

    def close(self) -> None:
        """Stop the workers and free the shared block (once; later calls do nothing)."""
        self.views, self._param_views = {}, []
        self._broken = True   # a later step runs unsharded
        self._finalizer()

    def _takes(self, x, y) -> bool:
        return (not self._broken and isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                and x.ndim >= 2 and y.ndim >= 1 and len(y) == len(x)
                and len(x) >= self.shards * MIN_SHARD_SAMPLES
                and -(-len(x) // self.shards) <= self.capacity
                and (tuple(x.shape[1:]), x.dtype) == self.x_like
                and (tuple(y.shape[1:]), y.dtype) == self.y_like)

    def _divisor(self, y) -> float | None:
        if self.loss_fn.reduction == "sum":
            return 1.0
        try:
            divisor = self.loss_fn.mean_divisor(y)
        except (IndexError, TypeError, ValueError):   # a bad target: the unsharded step says
            return None
        return divisor if divisor > 0 else None

    def step(self, x, y):
        """Forward, loss and backward of the batch ``(x, y)``, shard by shard; the
        parameters' ``.grad`` get the batch's gradients. Returns ``(loss, correct)`` (the
        batch's loss and :func:`correct_count`), or None when this batch is not sharded.
        On an error (the caller's shard's or a worker's) the gradients stay as they were
        and the error is raised."""
        if not self._takes(x, y) or (divisor := self._divisor(y)) is None:
            return None
        n, k = len(x), self.shards
        bounds = [n * j // k for j in range(k + 1)]
        before = ([None if p.grad is None else p.grad.copy() for p in self.params]
                  if any(p.grad is not None for p in self.params) else None)
        for p, view in zip(self.params, self._param_views):
            np.copyto(view, p.data)
        self._start_workers(x, y, bounds, divisor)
        error = None
        try:
            with threads.serial():
                out = self.model(x[:bounds[1]])
                total = float(self.summing(out, y[:bounds[1]]))
                self.model.backward_params(self.summing.backward(1.0 / divisor))
            correct = correct_count(out, y[:bounds[1]])
        except Exception as exc:   # raised below, once every worker has answered
            error = exc
        finally:
            replies = self._replies()
        error = error or next((r for r in replies if isinstance(r, BaseException)), None)
        if error is not None:
            for p, g in zip(self.params, before or [None] * len(self.params)):
                p.grad = g
            raise error
        for w, (_, loss_sum, count, has_grad) in zip(self.workers, replies):
            total += loss_sum
            correct = _add_counts(correct, count)
            for p, grad, has in zip(self.params, w.grads, has_grad):
                if has:
                    accumulate_grad(p, grad)
        return total / divisor, correct

    def _start_workers(self, x, y, bounds: list, divisor: float) -> None:
        try:
            self._step_number += 1
            for j, w in enumerate(self.workers, 1):
                size = bounds[j + 1] - bounds[j]
                np.copyto(w.x[:size], x[bounds[j]:bounds[j + 1]])
                np.copyto(w.y[:size], y[bounds[j]:bounds[j + 1]])
                w.channel.ctl[_SIZE] = size
                w.channel.ctl[_POISON] = backend.poisoning()
                w.channel.val[_DIVISOR] = divisor
                w.channel.signal(_START, self._step_number, _STEP)
        except BaseException:   # some workers are running a step no one will read
            self._break()
            raise

    def _replies(self) -> list:
        """Every worker's reply (or the error it raised), so that none is left unread."""
        replies = []
        try:
            for w in self.workers:
                try:
                    replies.append(w.finished(self._step_number, self.spin))
                except Exception as exc:   # re-raised by step
                    replies.append(exc)
        except BaseException:   # interrupted: replies left unread, the workers out of step
            self._break()
            raise
        return replies

    def _break(self) -> None:
        self._broken = True
        self.close()


def _not_started(exc: BaseException) -> None:
    warnings.warn(f"fit: the data-parallel step's worker processes did not start "
                  f"({type(exc).__name__}: {exc}); training runs in this process",
                  RuntimeWarning, stacklevel=2)


class ChosenStep:
    """fit's CPU step, sharded or not (``run``).

    With ``always`` false the choice is measured: while the workers start (beside the first
    steps, which run unsharded) nothing is timed; then steps of the first batch's shape
    alternate between the two kinds, each timed, until each kind has ``TRIAL_STEPS`` after
    its first, and whichever has the faster best step runs from then on (the workers stop if
    it is the unsharded step). The best, not the median: another process or the other
    kind's threads only ever slow a step down, and in a bench run at two threads three of
    five sharded steps took 10-14 ms against 6-7 for the rest, so that the median once chose
    the unsharded step at two-thirds of the sharded speed. With ``always`` the first step
    waits for the workers and every step that can be sharded is.
    """

    def __init__(self, sharded: ShardedStep, x, y, always: bool):
        self.sharded = sharded
        self.shape = (tuple(x.shape), tuple(y.shape))
        self.times: dict[bool, list] = {False: [], True: []}
        self.chosen: bool | None = True if always else None   # None: still measuring
        if always:
            self._wait()

    def run(self, x, y, unsharded):
        """The step's forward and backward of ``(x, y)``: ``(loss, correct)``. ``unsharded(x,
        y)`` runs them in this process and returns ``(loss, out)``."""
        timed = self.chosen is None and self._ready() and (
            (tuple(x.shape), tuple(y.shape)) == self.shape)
        t0 = time.perf_counter()
        done = None
        if self.sharded is not None and (self.chosen or timed and self._sharded_next()):
            done = self.sharded.step(x, y)
        ran_sharded = done is not None
        if done is None:
            loss, out = unsharded(x, y)
            done = loss, correct_count(out, y)
        if timed:
            self.times[ran_sharded].append(time.perf_counter() - t0)
            self._choose()
        return done

    def _ready(self) -> bool:
        if self.sharded is None:
            return False
        try:
            return self.sharded.ready()
        except Exception as exc:
            _not_started(exc)
            self._stop()
            return False

    def _sharded_next(self) -> bool:
        """Alternate, the kind with fewer timed steps first."""
        return len(self.times[True]) <= len(self.times[False])

    def _wait(self) -> None:
        while self.sharded is not None and not self._ready():
            time.sleep(_POLL_SECONDS)

    def _choose(self) -> None:
        if min(len(t) for t in self.times.values()) <= TRIAL_STEPS:
            return
        best = {kind: min(t[1:]) for kind, t in self.times.items()}
        self.chosen = best[True] < best[False]
        if not self.chosen:
            self._stop()

    def _stop(self) -> None:
        if self.sharded is not None:
            self.sharded.close()
        self.sharded, self.chosen = None, False

    def close(self) -> None:
        """Stop the workers, if any."""
        self._stop()


def start(model, loss_fn, x, y, always: bool = False) -> ChosenStep | None:
    """The CPU step for ``model`` and ``loss_fn`` (:class:`ChosenStep`), its workers'
    buffers sized by the first batch ``(x, y)``; None when it cannot be sharded
    (:func:`blockers`, or a first batch of fewer than ``2 * MIN_SHARD_SAMPLES`` samples) or
    its workers do not start (a warning says why; training goes on in one process)."""
    if blockers(model, loss_fn) or not isinstance(x, np.ndarray) or x.ndim < 2:
        return None
    shards = min(threads.get_num_threads(), len(x) // MIN_SHARD_SAMPLES)
    if shards < 2:
        return None
    try:
        sharded = ShardedStep(model, loss_fn, shards, x, y)
    except Exception as exc:
        _not_started(exc)
        return None
    try:
        chosen = ChosenStep(sharded, x, y, always)
    except BaseException:   # interrupted while waiting for the workers
        sharded.close()
        raise
    return chosen if chosen.sharded is not None else None


# --------------------------------------------------------------------------- the worker's side

def _serve(fd: int) -> None:
    """A worker's life: map the block, load the model, warm up, then run steps until told
    to close or until the socket closes (then quietly: the caller has stopped)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the caller decides when workers stop
    conn = Connection(fd)
    try:
        _work(conn)
    except (EOFError, OSError):
        pass


def _work(conn: Connection) -> None:
    try:
        meta = conn.recv()
        threads.set_num_threads(1)
        shm = _attach(meta["shm"])
        views = _views(shm.buf, meta["offsets"])
        arrays = [views[f"param{i}"] for i in range(meta["params"])]
        model, loss_fn = _SetupUnpickler(io.BytesIO(conn.recv_bytes()), arrays).load()
        loss_fn.reduction = "sum"
        params = list(model.parameters())
        if len(params) != len(arrays) or any(p.data is not a for p, a in zip(params, arrays)):
            raise RuntimeError("the model's parameters did not come back as the caller's")
        j = meta["worker"]
        grads = [views[f"grad{j}.{i}"] for i in range(len(params))]
        x_all, y_all = views[f"x{j}"], views[f"y{j}"]
        channel = _Channel(conn, views[f"ctl{j}"], views[f"val{j}"], _START)
    except Exception as exc:
        _send_error(conn, exc)
        return
    _warm_up(model, loss_fn, x_all, y_all)
    route_gradients(params, grads)   # each step's gradients straight into the block
    conn.send(("ready",))
    ctl, val = channel.ctl, channel.val
    step = 0
    while True:
        if channel.wait(step + 1, meta["spin"]) is not None:   # the closing
            break
        step += 1
        try:
            size, divisor = int(ctl[_SIZE]), float(val[_DIVISOR])
            x, y = x_all[:size], y_all[:size]
            with backend.poisoned() if ctl[_POISON] else contextlib.nullcontext():
                out = model(x)
                loss_sum = float(loss_fn(out, y))
                model.backward_params(loss_fn.backward(1.0 / divisor))
            for i, (p, g) in enumerate(zip(params, grads)):
                ctl[_HAS_GRAD + i] = p.grad is not None
                if p.grad is not None and p.grad is not g:   # not routed (another dtype)
                    np.copyto(g, p.grad)
            count = correct_count(out, y)
            ctl[_COUNT] = -1 if count is None else count
            val[_LOSS_SUM] = loss_sum
            channel.signal(_DONE, step, _STEP_DONE)
        except Exception as exc:   # the done number stays: the caller reads this instead
            _send_error(conn, exc)
        finally:
            for p in params:
                p.grad = None
    # The block stays mapped until the process exits: the model's arrays are views of it.


def _warm_up(model, loss_fn, x, y) -> None:
    """One step on the (zeroed) input buffers, so that the kernels are loaded before the
    first real step (its result is dropped; an error here is the real step's to report)."""
    try:
        loss_fn(model(x), y)
        model.backward_params(loss_fn.backward(1.0))
    except Exception:   # noqa: BLE001 (reported by the first real step, if it recurs)
        pass
    for p in model.parameters():
        p.grad = None


def _send_error(conn: Connection, exc: Exception) -> None:
    """Send ``exc`` and its traceback (as a RuntimeError of its text when it cannot be
    pickled)."""
    text = traceback.format_exc()
    try:
        pickle.loads(pickle.dumps(exc))   # an exception the caller could not rebuild
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    conn.send(("error", exc, text))
