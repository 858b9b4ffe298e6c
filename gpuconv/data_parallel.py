"""fit's data-parallel training step on the CPU: the batch cut into shards, one per core, each
run by its own process.

Why processes, not the thread pool: a training step is dozens of short kernels with Python
between them. Two threads each running half of LeNet-5's step (each kernel serial) ran
1.0-1.2x one thread: each shard waited for the GIL some 40 times per step, and on the 2-core
development machine (a virtual machine) every such wake took 0.1-0.7 ms. Two processes, each
training on 64 images, ran 1.7-1.9x the images/s of one process on 128 (bench/NOTES.md,
2026-12-07). So a step with ``k = threads.get_num_threads()`` shards is:

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
order). One level of parallelism holds: inside each process every kernel runs on one thread.

Which steps are sharded (else the step runs as before, on the thread pool): on a POSIX
system with more than one gpuconv thread, a model whose ``samples_independent`` is true (no
batch statistics, no dropout mask: :attr:`gpuconv.nn.Module.samples_independent`), a
gpuconv loss with reduction "mean" or "sum", NumPy arrays, and a batch of at least
``MIN_SHARD_SAMPLES`` samples per shard whose trailing shape and dtypes are the first
batch's (the workers' buffers are sized by it; a larger batch also runs unsharded).

The workers are ``python -m gpuconv.data_parallel`` processes started by the first step
(``start``), each handed its end of a socket pair, the model (its structure and layers,
pickled: the same gpuconv classes on both sides) and the loss; they exit when the step is
closed (``ShardedStep.close``, which fit calls) or when their socket closes, as it does when
the calling process exits. A worker's error is raised by the caller, with the worker's
traceback as its cause.
"""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import traceback
import warnings
import weakref
from collections import OrderedDict
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from . import threads

__all__ = ["ShardedStep", "ChosenStep", "start", "MIN_SHARD_SAMPLES", "TRIAL_STEPS"]

# Fewer samples per shard than this: the step runs unsharded. A LeNet-5 step has about 3 ms
# of cost per step whatever the batch (8 images: 3.3 ms; 64: 11.4 ms on one thread) and a
# sharded step adds about 1.5 ms (copies, handover, the optimizer alone), so a shard of
# fewer than 32 such images cannot gain; above it, the first steps' timing decides.
MIN_SHARD_SAMPLES = 32
# How long a worker may take to start (import gpuconv, load the model) before fit gives up
# on sharding and trains in one process.
STARTUP_SECONDS = 120.0
# Steps of each kind timed before fit chooses between them.
TRIAL_STEPS = 5
_POLL_SECONDS = 0.005
_ALIGN = 64


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


def _fresh_copy(module):
    """``module``'s structure with its own Parameter objects (sharing the arrays) and no
    saved forward: what is pickled for a worker (its arrays are replaced there)."""
    from .nn.module import Parameter

    clone = copy.copy(module)
    state = clone.__dict__
    state["_parameters"] = OrderedDict(
        (k, None if p is None else Parameter(p.data)) for k, p in module._parameters.items())
    state["_buffers"] = OrderedDict(module._buffers)
    state["_modules"] = OrderedDict(
        (k, None if m is None else _fresh_copy(m)) for k, m in module._modules.items())
    state["_ctx"] = None
    return clone


def _summing(loss_fn):
    """A copy of ``loss_fn`` that sums (shards of a mean are sums over the batch's divisor)."""
    summing = _fresh_copy(loss_fn)
    summing.reduction = "sum"
    return summing


def correct_count(out, y) -> int:
    """How many samples of scores ``out`` (N, C, ...) have their largest score at their
    class: ``y`` holds class indices (N, ...), or scores of ``out``'s shape (one-hot or
    soft targets: their largest); 0 for other targets (a regression's)."""
    guess = np.argmax(out, axis=1)
    if np.issubdtype(y.dtype, np.integer) and y.shape == guess.shape:
        return int(np.sum(guess == y))
    if y.shape == out.shape:
        return int(np.sum(guess == np.argmax(y, axis=1)))
    return 0


# --------------------------------------------------------------------------- the caller's side

def blockers(model, loss_fn) -> list[str]:
    """Why the training step of ``model`` and ``loss_fn`` cannot be sharded (empty: it can)."""
    from .nn.loss import _Loss

    reasons = []
    if threads.get_num_threads() < 2:
        reasons.append("one gpuconv thread")
    if os.name != "posix":
        reasons.append("not a POSIX system")
    if not model.samples_independent:
        reasons.append("the model mixes samples (batch norm in training, dropout, or a layer "
                       "that does not declare samples_independent)")
    if not isinstance(loss_fn, _Loss) or loss_fn.reduction not in ("mean", "sum"):
        reasons.append("the loss is not a gpuconv loss reduced by mean or sum")
    params = list(model.parameters())
    if not params or not all(isinstance(p.data, np.ndarray) for p in params):
        reasons.append("the parameters are not NumPy arrays")
    return reasons


class _Worker:
    """One worker process, its connection and its views of the shared block."""

    def __init__(self, index: int, setup: dict):
        here, there = socket.socketpair()
        env = dict(os.environ, GPUCONV_NUM_THREADS="1")
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                          env.get("PYTHONPATH")]))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gpuconv.data_parallel", str(there.fileno())],
                pass_fds=(there.fileno(),), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL)
        finally:
            there.close()
        self.index = index
        self.conn = Connection(here.detach())
        self.conn.send({**setup, "worker": index})

    def check_ready(self) -> None:
        """Read the worker's answer to its setup: "ready", or its error raised here."""
        reply = self.result()
        if reply[0] != "ready":
            raise RuntimeError(f"data-parallel worker {self.index} answered {reply[0]!r}")

    def result(self):
        """The worker's reply to a step: ("done", loss_sum, correct, has_grad) or an error
        raised here."""
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            code = self.process.poll()
            raise RuntimeError(f"data-parallel worker {self.index} exited during a training "
                               f"step (exit code {code})") from None
        if reply[0] == "error":
            _, exc, text = reply
            raise exc from RuntimeError(f"in data-parallel worker {self.index}:\n{text}")
        return reply

    def close(self) -> None:
        try:
            self.conn.send(("close",))
        except OSError:
            pass
        self.conn.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _shutdown(workers: list, shm: SharedMemory) -> None:
    for w in workers:
        w.close()
    try:
        shm.close()
    except BufferError:   # a view is still alive somewhere; the mapping goes with it
        pass
    shm.unlink()


class ShardedStep:
    """The data-parallel step of one model and loss (see the module's docstring); made by
    :func:`start`. ``step(x, y)`` returns ``(loss, correct)`` or None (run it unsharded);
    ``close()`` stops the workers (also done when the object is collected)."""

    def __init__(self, model, loss_fn, shards: int, x, y):
        self.model, self.loss_fn, self.shards = model, loss_fn, shards
        self.summing = _summing(loss_fn)
        self.params = list(model.parameters())
        self.capacity = -(-len(x) // shards)       # samples per worker shard
        self.x_like = (tuple(x.shape[1:]), x.dtype)
        self.y_like = (tuple(y.shape[1:]), y.dtype)
        arrays = {f"param{i}": (p.shape, p.dtype) for i, p in enumerate(self.params)}
        for j in range(1, shards):
            arrays.update({f"grad{j}.{i}": (p.shape, p.dtype)
                           for i, p in enumerate(self.params)})
            arrays[f"x{j}"] = ((self.capacity,) + self.x_like[0], x.dtype)
            arrays[f"y{j}"] = ((self.capacity,) + self.y_like[0], y.dtype)
        offsets, size = _layout(arrays)
        self._shm = SharedMemory(create=True, size=size)
        self.views = _views(self._shm.buf, offsets)
        setup = {"model": _fresh_copy(model), "loss": self.summing, "shm": self._shm.name,
                 "offsets": offsets, "params": len(self.params)}
        self.workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _shutdown, self.workers, self._shm)
        self._started = time.monotonic()
        self._waiting = []
        try:
            for j in range(1, shards):
                self.workers.append(_Worker(j, setup))
        except BaseException:
            self.close()
            raise
        self._waiting = list(self.workers)

    def ready(self) -> bool:
        """Whether every worker has started (without waiting); raises a worker's setup
        error, or TimeoutError after ``STARTUP_SECONDS``."""
        while self._waiting and self._waiting[0].conn.poll():
            self._waiting.pop(0).check_ready()
        if self._waiting and time.monotonic() - self._started > STARTUP_SECONDS:
            raise TimeoutError(f"a worker did not start in {STARTUP_SECONDS:.0f} s")
        return not self._waiting

    def close(self) -> None:
        """Stop the workers and free the shared block (once; later calls do nothing)."""
        self.views = {}
        self._finalizer()

    def _takes(self, x, y) -> bool:
        return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
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
        batch's loss and the number of rows of the output whose largest score is at class
        ``y``), or None when this batch is not sharded."""
        if not self._takes(x, y) or (divisor := self._divisor(y)) is None:
            return None
        n, k = len(x), self.shards
        bounds = [n * j // k for j in range(k + 1)]
        for i, p in enumerate(self.params):
            np.copyto(self.views[f"param{i}"], p.data)
        for j, w in enumerate(self.workers, 1):
            size = bounds[j + 1] - bounds[j]
            np.copyto(self.views[f"x{j}"][:size], x[bounds[j]:bounds[j + 1]])
            np.copyto(self.views[f"y{j}"][:size], y[bounds[j]:bounds[j + 1]])
            w.conn.send(("step", size, divisor))
        try:
            with threads.serial():
                out = self.model(x[:bounds[1]])
                total = float(self.summing(out, y[:bounds[1]]))
                self.model.backward_params(self.summing.backward(1.0 / divisor))
            correct = correct_count(out, y[:bounds[1]])
        finally:
            replies = [_reply_or_error(w) for w in self.workers]
        from .nn.module import accumulate_grad

        for w, reply in zip(self.workers, replies):
            if isinstance(reply, BaseException):
                raise reply
            _, loss_sum, count, has_grad = reply
            total += loss_sum
            correct += count
            for i, p in enumerate(self.params):
                if has_grad[i]:
                    accumulate_grad(p, self.views[f"grad{w.index}.{i}"])
        return total / divisor, correct


def _reply_or_error(worker: _Worker):
    """The worker's reply, or the error it raised (so that every worker is heard from
    before any error is raised, and the next step starts in step)."""
    try:
        return worker.result()
    except Exception as exc:   # re-raised by step after every worker has answered
        return exc


def _not_started(exc: BaseException) -> None:
    warnings.warn(f"fit: the data-parallel step's worker processes did not start "
                  f"({type(exc).__name__}: {exc}); training runs in this process",
                  RuntimeWarning, stacklevel=4)


def _median(times: list) -> float:
    return float(np.median(times[-TRIAL_STEPS:]))


class ChosenStep:
    """fit's CPU step, sharded or not (``run``).

    With ``always`` false the choice is measured: the workers start beside the first steps,
    which run unsharded; then steps of the first batch's shape are timed, ``TRIAL_STEPS``
    unsharded and ``TRIAL_STEPS`` sharded (after one more sharded step, in which each
    worker loads its kernels), and whichever has the smaller median runs from then on (the
    workers stop if it is the unsharded step). Both give the same gradients up to rounding.
    With ``always`` the first step waits for the workers and every step that can be sharded
    is.
    """

    def __init__(self, sharded: ShardedStep, x, y, always: bool):
        self.sharded, self.always = sharded, always
        self.shape = (tuple(x.shape), tuple(y.shape))
        self.times: dict[bool, list] = {False: [], True: []}
        self.chosen: bool | None = None   # True: sharded; None: still measuring

    def run(self, x, y, unsharded):
        """The step's forward and backward of ``(x, y)``: ``(loss, correct)``. ``unsharded(x,
        y)`` runs them in this process and returns ``(loss, out)``."""
        sharded = self.sharded is not None and self._sharding(x, y)
        t0 = time.perf_counter()
        done = self.sharded.step(x, y) if sharded else None
        if done is None:
            loss, out = unsharded(x, y)
            done = loss, correct_count(out, y)
        if self.chosen is None and (tuple(x.shape), tuple(y.shape)) == self.shape:
            self.times[sharded].append(time.perf_counter() - t0)
            self._choose()
        return done

    def _sharding(self, x, y) -> bool:
        """Whether this step runs sharded."""
        if self.always or self.chosen:
            if self.always and not self.sharded.ready():
                self._wait()
            return True
        try:
            ready = self.sharded.ready()
        except Exception as exc:
            _not_started(exc)
            self._stop()
            return False
        # While measuring: sharded once the workers are ready, until it has its trials
        # (the first step of each kind, which loads kernels, is not counted).
        return ready and len(self.times[True]) <= TRIAL_STEPS

    def _wait(self) -> None:
        try:
            while not self.sharded.ready():
                time.sleep(_POLL_SECONDS)
        except Exception as exc:
            _not_started(exc)
            self._stop()

    def _choose(self) -> None:
        if self.always or min(len(t) for t in self.times.values()) <= TRIAL_STEPS:
            return
        self.chosen = _median(self.times[True]) < _median(self.times[False])
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
    """The CPU step for ``model`` and ``loss_fn`` (:class:`ChosenStep`; its workers' buffers
    sized by the first batch ``(x, y)``), or None when it cannot be sharded
    (:func:`blockers`, or a first batch of fewer than ``MIN_SHARD_SAMPLES`` per shard) or
    its workers do not start (a warning says why; training goes on in one process)."""
    shards = threads.get_num_threads()
    if (blockers(model, loss_fn) or not isinstance(x, np.ndarray) or x.ndim < 2
            or len(x) < shards * MIN_SHARD_SAMPLES):
        return None
    try:
        sharded = ShardedStep(model, loss_fn, shards, x, y)
    except Exception as exc:
        _not_started(exc)
        return None
    return ChosenStep(sharded, x, y, always)


# --------------------------------------------------------------------------- the worker's side

def _serve(conn: Connection) -> None:
    setup = conn.recv()
    try:
        threads.set_num_threads(1)
        model, loss_fn = setup["model"], setup["loss"]
        shm = SharedMemory(name=setup["shm"])
        # The caller created the block and unlinks it; this process only maps it (Python
        # 3.11's SharedMemory would otherwise unlink it when this process exits).
        resource_tracker.unregister(shm._name, "shared_memory")
        views = _views(shm.buf, setup["offsets"])
        params = list(model.parameters())
        for i, p in enumerate(params):
            p.data = views[f"param{i}"]
        j = setup["worker"]
        grads = [views[f"grad{j}.{i}"] for i in range(len(params))]
        x_all, y_all = views[f"x{j}"], views[f"y{j}"]
    except Exception as exc:
        _send_error(conn, exc)
        return
    _warm_up(model, loss_fn, x_all, y_all)
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            break
        if message[0] == "close":
            break
        _, size, divisor = message
        try:
            x, y = x_all[:size], y_all[:size]
            out = model(x)
            loss_sum = float(loss_fn(out, y))
            model.backward_params(loss_fn.backward(1.0 / divisor))
            has_grad = []
            for p, g in zip(params, grads):
                has_grad.append(p.grad is not None)
                if p.grad is not None:
                    np.copyto(g, p.grad)
                    p.grad = None
            conn.send(("done", loss_sum, correct_count(out, y), has_grad))
        except Exception as exc:
            for p in params:
                p.grad = None
            _send_error(conn, exc)
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
        conn.send(("error", exc, text))
    except Exception:
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), text))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
