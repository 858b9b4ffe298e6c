"""How gpuconv's CPU kernels use the cores: one level of parallelism, one pool.

The model
---------
Every parallel CPU kernel splits its work into *tasks* (a chunk of images or a band of rows
of one convolution, a range of pooling planes, a block of GEMM rows, a range of elements)
and hands them to :func:`parallel_for`. Its pool is ``n - 1`` Python threads plus the
calling thread, and:

- **tasks are claimed, not assigned**: each thread takes the next unclaimed task until none
  is left, and the caller works too. A thread the OS has not scheduled yet (another process
  holds its core) claims nothing, and the call finishes without it: the call waits only for
  tasks that have started, not for a fixed share of the work as a static split does (a
  task a worker holds when another process preempts it still waits for that worker);
- **idle threads spin briefly, then sleep**: after a job a worker watches for the next one
  for ``IDLE_SPIN_SECONDS`` (1 ms) with the GIL released, then sleeps on its queue; the
  caller, its own tasks done, watches the workers' count of finished tasks the same way.
  On the 2-core development machine (a virtual machine) a sleeping thread took 0.1-0.7 ms
  to wake, and a job of two 100-microsecond tasks took longer on two threads than on one;
  with the spin it takes 141 against 195 us (:mod:`gpuconv._spin`). The worker spins
  through the serial Python between a step's parallel regions (LeNet-5's unsharded step
  at batch 64 on two threads: 3.49 ms with a 1 ms spin, 3.54 with 5 ms, 3.71 with 0.1 ms)
  and sleeps when the process stops calling gpuconv's kernels;
- **inside a task everything is serial**: the numba kernels are compiled with
  ``nogil=True`` and without ``parallel=True``, NumPy's copies, ufuncs and GEMMs release the
  GIL, and the BLAS library behind NumPy runs on one thread (set through threadpoolctl when
  the pool is first configured). So the pool's threads never wait on a second pool.

Why not numba's ``prange`` and BLAS's own threads: on the 2-core development machine both
pools busy-wait between calls (numba's OpenMP layer for GOMP_SPINCOUNT, OpenBLAS for
2^28 cycles); the CPU path alternates small GEMMs with numba copy loops, so each pool's
spinning threads took the core the other needed, and their static split of every region
waits at a barrier for a thread another process has descheduled. LeNet-5 training ran 2-4x
*slower* on two threads than on one (bench/NOTES.md has the measurements). OpenBLAS alone
at two threads made a LeNet convolution 6x slower, because its worker spins through the
serial numba work between GEMMs.

This pool's own spin is of another kind: there is no second pool for it to take a core
from, it spins only between its own jobs and at most 1 ms, and the caller's Python meanwhile
runs on a core of its own. It costs CPU time all the same: on a many-core machine every
worker that took part in the last job spins through the serial Python between jobs (on
cores the process was given), and a spinning thread spends a cgroup's CPU quota, so under a
quota smaller than the thread count the pool does not spin at all.

Training steps: processes, not threads
---------------------------------------
``fit``'s step on the CPU may instead run as shards of the batch in worker processes, at
most one per thread (:mod:`gpuconv.data_parallel`), every kernel in each process serial (in the
caller through :func:`serial`, in the workers on one thread): still one level, now over the
batch. A step is dozens of short kernels with Python between them, and two threads each
running half of it wait for each other's GIL dozens of times per step; two processes do
not wait at all.

The number of threads
---------------------
``set_num_threads(n)`` (or ``gpuconv.set_num_threads``), else ``GPUCONV_NUM_THREADS``,
else :func:`available_cores`: the cores this process may run on (its CPU affinity), capped
by its cgroup's CPU quota rounded up (a container limited to 2.5 CPUs gets 3 threads), so a
process in a 2-CPU container on a 64-core host uses 2 threads, not 64. The command line's
``--threads`` calls ``set_num_threads``.

Side effects, for the whole process, the first time gpuconv configures the pool (and each
time ``set_num_threads`` runs): the BLAS library that NumPy uses runs on one thread (a
program that wants threaded NumPy GEMMs of its own between gpuconv calls can raise it
again with threadpoolctl); and with glibc, malloc keeps freed memory for reuse instead of
returning it to the OS at once (``_keep_freed_memory``: up to 64 MiB, arrays up to 32 MiB
from the heap).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from pathlib import Path
from queue import SimpleQueue
from typing import Callable, Sequence

__all__ = ["set_num_threads", "get_num_threads", "ensure_configured", "default_threads",
           "available_cores", "cgroup_cpu_limit", "parallel_for", "serial", "split",
           "task_count", "elementwise", "matmul"]


# ----------------------------------------------------------------------------- thread count

def _cgroup_v2_quota(dirs: Sequence[Path]) -> float | None:
    """The smallest ``quota / period`` of the ``cpu.max`` files in ``dirs`` (None: no limit)."""
    limits = []
    for d in dirs:
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and int(period) > 0:
            limits.append(int(quota) / int(period))
    return min(limits, default=None)


def _cgroup_v1_quota(dirs: Sequence[Path]) -> float | None:
    """The same from cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: no limit)."""
    limits = []
    for d in dirs:
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text())
            period = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            limits.append(quota / period)
    return min(limits, default=None)


def _ancestors(root: Path, path: str) -> list[Path]:
    """``root/path`` and each of its parents up to ``root`` (a limit anywhere above applies)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(proc_cgroup: str, fs_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota (in CPUs) that this process's cgroup allows, or None when unlimited.

    ``proc_cgroup`` is the text of ``/proc/self/cgroup``; ``fs_root`` the cgroup mount.
    cgroup v2 (a ``0::/path`` line) reads ``cpu.max`` along the path; v1 reads the
    ``cpu`` controller's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``.
    """
    limits = []
    for line in proc_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            limits.append(_cgroup_v2_quota(_ancestors(fs_root, path)))
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                if (fs_root / mount).is_dir():
                    limits.append(_cgroup_v1_quota(_ancestors(fs_root / mount, path)))
                    break
    return min((x for x in limits if x is not None), default=None)


def _cgroup_quota() -> float | None:
    """This process's cgroup CPU quota in CPUs (:func:`cgroup_cpu_limit`), None when it has
    none or the cgroup cannot be read."""
    try:
        return cgroup_cpu_limit(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup CPU quota
    (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def default_threads() -> int:
    """``GPUCONV_NUM_THREADS`` if set, else :func:`available_cores`."""
    value = os.environ.get("GPUCONV_NUM_THREADS")
    if value is None:
        return available_cores()
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"GPUCONV_NUM_THREADS must be a positive int, got {value!r}") from None
    if n < 1:
        raise ValueError(f"GPUCONV_NUM_THREADS must be a positive int, got {value!r}")
    return n


# ----------------------------------------------------------------------------- the pool

class _Job:
    """``fn(i)`` for ``i < n``: tasks claimed one at a time by whichever thread asks next.
    ``done[0]`` counts the tasks the pool's workers have finished (atomic adds: a worker's
    last one after it has released the GIL, see :class:`_Pool`)."""

    def __init__(self, fn: Callable[[int], None], n: int, done):
        self.fn, self.n, self.done = fn, n, done
        self._next = itertools.count()   # next() is atomic under the GIL
        self.error: BaseException | None = None

    def claim(self) -> int | None:
        i = next(self._next)
        return i if i < self.n else None

    def run(self, i: int) -> None:
        """Task ``i``, unless an earlier one failed; its error is kept for the caller."""
        try:
            if self.error is None:
                self.fn(i)
        except BaseException as exc:   # raised by the caller once every task has ended
            self.error = self.error or exc


_local = threading.local()   # .in_task: this thread is running a task (no nested pools)


class _Pool:
    """``size - 1`` daemon worker threads and the calling thread (see the module's
    docstring).

    A job reaches worker ``k`` two ways: its queue (the job itself) and its word in
    ``_posted`` (a count of jobs, bumped after the job is queued). An idle worker spins on
    its word with the GIL released for ``IDLE_SPIN_SECONDS`` (:mod:`gpuconv._spin`), so
    that the next job of a step finds it awake, and then sleeps on its queue; either way it
    takes the job from the queue, which alone says what there is to do (the count only
    ends a spin; the worker takes it up again whenever its queue is empty). The caller runs
    tasks too, then spins, without the GIL, until the workers' count of finished tasks
    covers the tasks they claimed (``WAIT_SPIN_SECONDS``, then it polls). A worker counts
    its last task of a job only after releasing the GIL for its idle spin, so the caller,
    seeing the count, takes the GIL at once. Under a cgroup CPU quota smaller than the
    thread count nobody spins: a spinning thread would spend the quota the working ones
    need, and the whole group would be throttled.
    """

    def __init__(self, size: int):
        self.size = size
        self._queues: list[SimpleQueue] = []
        if size == 1:
            return
        from . import _spin   # numba: imported with the first pool of two threads or more

        self._spin = _spin
        _spin.warm_up()
        quota = _cgroup_quota()
        rate = 0.0 if quota is not None and quota < size else _spin.rounds_per_second()
        self._idle_rounds = int(rate * IDLE_SPIN_SECONDS)
        self._wait_rounds = int(rate * WAIT_SPIN_SECONDS)
        # One word per worker, each on a cache line of its own.
        self._posted = _spin.words((size - 1) * _WORDS_PER_LINE)
        for k in range(size - 1):
            q: SimpleQueue = SimpleQueue()
            threading.Thread(target=self._serve, args=(k, q), name=f"gpuconv-{k + 1}",
                             daemon=True).start()
            self._queues.append(q)

    def _serve(self, k: int, queue: SimpleQueue) -> None:
        _spin = self._spin
        _local.in_task = True
        posted, word, seen = self._posted, k * _WORDS_PER_LINE, 0
        owed: _Job | None = None   # the job whose last task this worker has not counted
        while True:
            if owed is None:
                _spin.wait_while(posted, word, seen, self._idle_rounds)
            else:
                _spin.add_then_wait_while(owed.done, 0, posted, word, seen,
                                          self._idle_rounds)
                owed = None
            job = queue.get()
            if job is None:
                return
            seen = seen + 1 if not queue.empty() else int(posted[word])
            i = job.claim()
            while i is not None:
                job.run(i)
                i = job.claim()
                if i is None:
                    owed = job
                else:
                    _spin.add(job.done, 0)

    def _post(self, k: int, job) -> None:
        self._queues[k].put(job)
        self._spin.add(self._posted, k * _WORDS_PER_LINE)

    def run(self, fn: Callable[[int], None], n: int) -> None:
        job = _Job(fn, n, self._spin.words(1))
        for k in range(min(n - 1, len(self._queues))):
            self._post(k, job)
        ran = 0
        _local.in_task = True
        try:
            while (i := job.claim()) is not None:
                job.run(i)
                ran += 1
        finally:
            _local.in_task = False
        theirs = n - ran   # claimed by workers, each running it now or done
        while self._spin.wait_until(job.done, 0, theirs, self._wait_rounds) != theirs:
            time.sleep(_POLL_SECONDS)
        if job.error is not None:
            raise job.error

    def close(self) -> None:
        for k in range(len(self._queues)):
            self._post(k, None)


# How long an idle worker spins for the next job before it sleeps, and how long the caller
# spins for the workers' last tasks before it polls (every _POLL_SECONDS).
IDLE_SPIN_SECONDS = 1e-3
WAIT_SPIN_SECONDS = 1e-3
_POLL_SECONDS = 1e-4
_WORDS_PER_LINE = 8   # int64 words in a 64-byte cache line




_state_lock = threading.Lock()
_pool: _Pool | None = None


def _limit_blas_to_one_thread() -> None:
    import numpy   # noqa: F401  (loads NumPy's BLAS, so that there is a library to limit)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


# glibc's malloc serves requests above M_MMAP_THRESHOLD (128 KiB, raised as large blocks
# are freed) with fresh mappings and gives the top of its heap back to the OS once more than
# M_TRIM_THRESHOLD is free there, so each new array of a training step's activations and
# gradients starts on pages the kernel must fault in and zero. Keeping freed memory for
# reuse removed 97% of the page faults of a LeNet-5 training step and 8% of its CPU time on
# one thread, 17% on two (medians of 4-5 runs on the loaded 2-core machine; bench/NOTES.md).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_MMAP_ABOVE = 1 << 25     # arrays up to 32 MiB come from the heap
_MALLOC_KEEP = 1 << 26           # up to 64 MiB of freed heap is kept for reuse


def _keep_freed_memory() -> None:
    """Tune glibc's malloc as above (nothing happens with another C library)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MALLOC_MMAP_ABOVE)
    mallopt(_M_TRIM_THRESHOLD, _MALLOC_KEEP)


def set_num_threads(n: int) -> None:
    """Run gpuconv's CPU kernels on ``n`` threads (the caller and ``n - 1`` workers), and the
    BLAS library behind NumPy on one thread per caller (process-wide, through threadpoolctl).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    global _pool
    with _state_lock:
        _keep_freed_memory()
        if _pool is None or _pool.size != n:
            new = _Pool(n)   # first: making it can fail (numba's compile, an interrupt)
            if _pool is not None:
                _pool.close()
            _pool = new
        # After the pool: its spin functions' compilation loads numba, which may load
        # another BLAS library (SciPy's).
        _limit_blas_to_one_thread()


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's worker threads: it makes its own pool."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _the_pool() -> _Pool:
    ensure_configured()
    return _pool


def ensure_configured() -> None:
    """Set the default thread count (and BLAS at one thread) unless a count is set."""
    if _pool is None:
        set_num_threads(default_threads())


def get_num_threads() -> int:
    """The threads gpuconv's CPU kernels use (configuring the default on first use): 1
    inside a task or a :func:`serial` block, where they run on the calling thread."""
    size = _the_pool().size
    return 1 if getattr(_local, "in_task", False) else size


def parallel_for(n: int, fn: Callable[[int], None]) -> None:
    """Call ``fn(i)`` for every ``i`` in ``range(n)``, on the pool's threads, in any order;
    return when all calls have returned, re-raising the first error.

    ``fn`` must release the GIL for most of its time (nogil numba kernels, NumPy calls on
    large arrays) and must not write where another task reads or writes. Called from inside
    a task, or with one thread or one task, it runs the calls in order on this thread.
    """
    pool = _the_pool()
    if n <= 1 or pool.size == 1 or getattr(_local, "in_task", False):
        for i in range(n):
            fn(i)
        return
    pool.run(fn, n)


@contextlib.contextmanager
def serial():
    """Within the block, :func:`parallel_for` on this thread runs its calls in order here, as
    inside a task: for work that is already one of several running side by side (a shard of
    fit's data-parallel step, whose other shards run in worker processes on the other
    cores)."""
    was = getattr(_local, "in_task", False)
    _local.in_task = True
    try:
        yield
    finally:
        _local.in_task = was


def split(total: int, min_size: int, tasks_per_thread: int = 1) -> list[range]:
    """``range(total)`` cut into contiguous ranges, for :func:`parallel_for`: up to
    ``tasks_per_thread`` per thread, none shorter than ``min_size`` (so a small job stays
    one task and pays no handover), sizes differing by at most one."""
    if total <= 0:
        return []
    if total < 2 * min_size:   # one task whatever the threads (most calls of a small step)
        return [range(total)]
    count = task_count(total, min_size, tasks_per_thread)
    bounds = [total * k // count for k in range(count + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def task_count(work: int, min_work: int, tasks_per_thread: int = 1) -> int:
    """How many tasks to cut ``work`` into: up to ``tasks_per_thread`` per thread, none
    smaller than ``min_work``, and past one per thread a multiple of the thread count
    (equal tasks on whichever thread is free: three on two threads end no sooner than four,
    later than two)."""
    n = get_num_threads()
    count = max(1, min(n * tasks_per_thread, work // max(1, min_work)))
    return count - count % n if count > n else count


# ----------------------------------------------------------------------------- helpers
# Work below these sizes stays one task. With spinning workers a job of two tasks ends some
# 40-47 us after its tasks would with a free handover on the 2-core development machine, a
# virtual machine: two tasks of 25 us took 72 us against 53 in order, of 50 us 91 against
# 100, of 100 us 141 against 195 (bench/NOTES.md, 2026-12-08). LeNet-5's unsharded training
# step on two threads against one, over the minimums below halved and doubled (2^20 .. 2^23
# multiply-adds, with the element counts alongside): batch 32 1.00-1.05x, 64 1.00-1.17x,
# 128 1.14-1.34x; these gave 1.02x, 1.17x and 1.32x (2^23 and 2^18, the minimums of the
# sleeping pool: 1.00x, 1.00x, 1.14x).
MIN_TASK_ELEMENTS = 1 << 15      # elementwise work: elements per task
MIN_TASK_MACS = 1 << 21          # GEMMs: multiply-adds per task
# Work at memory speed (a scatter into a zeroed plane, a sum, relu): a few times less time
# per element than the elementwise kernels, so a task needs four times the elements.
MIN_TASK_STREAM_ELEMENTS = 1 << 17


def elementwise(fn: Callable, out, *arrays, streaming: bool = False, **params):
    """``fn(*arrays, out=out, **params)`` in flat ranges on the pool when every array has
    ``out``'s shape and all are C-contiguous (one call otherwise); returns ``out``.
    ``streaming``: ``fn`` runs at memory speed (relu), so the ranges are longer
    (``MIN_TASK_STREAM_ELEMENTS``).

    ``fn`` computes each element from the same element of its inputs and writes only
    ``out``, so any cut of the ranges gives the same result.
    """
    flat = all(a.shape == out.shape and a.flags.c_contiguous for a in (out, *arrays))
    minimum = MIN_TASK_STREAM_ELEMENTS if streaming else MIN_TASK_ELEMENTS
    ranges = split(out.size, minimum) if flat else []
    if len(ranges) <= 1:
        fn(*arrays, out=out, **params)
        return out
    parts = [a.reshape(-1) for a in (out, *arrays)]

    def task(t: int) -> None:
        r = slice(ranges[t].start, ranges[t].stop)
        fn(*(a[r] for a in parts[1:]), out=parts[0][r], **params)

    parallel_for(len(ranges), task)
    return out


def matmul(a, b, out):
    """``out[...] = a @ b`` for 2-D arrays, the rows of ``out`` cut into blocks, one GEMM
    per block on the pool (BLAS itself runs on one thread); returns ``out``."""
    import numpy as np

    m, k = a.shape
    n = b.shape[1]
    if k == 1 and b.shape[0] == 1 and out.shape == (m, n):
        # An outer product. NumPy's matmul takes its own loop, not BLAS, for an inner size
        # of 1: LeNet-5's batch-1 linear grad_weight, (120, 1) @ (1, 400), took 72 us that
        # way and 17 us as a broadcast multiply (which gives the same products). The shapes
        # are checked first, as matmul checks them: a multiply would broadcast a mismatch.
        return np.multiply(a, b, out=out)
    rows = split(m, max(8, -(-MIN_TASK_MACS // max(1, k * n))))
    if len(rows) <= 1:
        return np.matmul(a, b, out=out)
    parallel_for(len(rows), lambda t: np.matmul(a[rows[t].start:rows[t].stop], b,
                                                out=out[rows[t].start:rows[t].stop]))
    return out
