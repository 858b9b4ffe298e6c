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
- **idle threads sleep** on a lock, never spin, so between two parallel regions the cores
  are free for the serial NumPy work around them (and for other processes);
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
import math
import os
import threading
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


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup CPU quota
    (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota = cgroup_cpu_limit(Path("/proc/self/cgroup").read_text())
    except OSError:
        quota = None
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
    """``fn(i)`` for ``i < n``: tasks claimed one at a time by whichever thread asks next."""

    def __init__(self, fn: Callable[[int], None], n: int):
        self.fn, self.n = fn, n
        self._lock = threading.Lock()
        self._claimed = self._finished = 0
        self._all_finished = threading.Event()
        self.error: BaseException | None = None

    def _claim(self) -> int | None:
        with self._lock:
            if self._claimed == self.n:
                return None
            self._claimed += 1
            return self._claimed - 1

    def work(self) -> None:
        """Run tasks until none is left unclaimed."""
        while (i := self._claim()) is not None:
            try:
                if self.error is None:
                    self.fn(i)
            except BaseException as exc:   # handed to the caller by wait()
                self.error = self.error or exc
            with self._lock:
                self._finished += 1
                if self._finished == self.n:
                    self._all_finished.set()

    def wait(self) -> None:
        """Block (sleeping) until every task has finished; re-raise a task's error."""
        self._all_finished.wait()
        if self.error is not None:
            raise self.error


_local = threading.local()   # .in_task: this thread is running a task (no nested pools)


class _Pool:
    """``size - 1`` daemon worker threads, each blocked on its own queue until a job comes."""

    def __init__(self, size: int):
        self.size = size
        self._queues: list[SimpleQueue] = []
        for k in range(size - 1):
            q: SimpleQueue = SimpleQueue()
            threading.Thread(target=self._serve, args=(q,), name=f"gpuconv-{k + 1}",
                             daemon=True).start()
            self._queues.append(q)

    @staticmethod
    def _serve(queue: SimpleQueue) -> None:
        _local.in_task = True
        while True:
            job = queue.get()
            if job is None:
                return
            job.work()

    def run(self, fn: Callable[[int], None], n: int) -> None:
        job = _Job(fn, n)
        for q in self._queues[:n - 1]:
            q.put(job)
        _local.in_task = True
        try:
            job.work()
        finally:
            _local.in_task = False
        job.wait()

    def close(self) -> None:
        for q in self._queues:
            q.put(None)


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
        _limit_blas_to_one_thread()
        _keep_freed_memory()
        if _pool is not None and _pool.size == n:
            return
        if _pool is not None:
            _pool.close()
        _pool = _Pool(n)


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
# Work below these sizes stays one task. A handover costs about 10-30 microseconds on a
# bare machine, but more on the 2-core development machine, a virtual machine: there a call
# with two 100-microsecond tasks took 259 on two threads (the worker started after 89, the
# caller woke 69 after the last task ended); bench/NOTES.md, 2026-12-07. With 2^21
# multiply-adds and 2^16 elements per task (about 40 and 50 us of work), LeNet-5's training
# step on two threads ran slower than on one up to batch 64 (batch 32: 3.86 against 3.48 ms;
# 64: 5.38 against 5.26); with these, as fast (3.26 / 3.27, 4.89 / 4.93), and batch 128
# kept its gain (7.95 against 8.56).
MIN_TASK_ELEMENTS = 1 << 18      # elementwise work: elements per task
MIN_TASK_MACS = 1 << 23          # GEMMs: multiply-adds per task
# Work at memory speed (a scatter into a zeroed plane, a sum, relu): a few times less time
# per element than the elementwise kernels, so a task needs this many elements (0.2-0.5
# ms of such work here) to pay for its handover. With MIN_TASK_ELEMENTS, cifar_max_3x3_s2's
# backward (524K elements, split in two) took 0.30-0.36 ms on two threads against 0.24-0.32
# on one, timed in one process.
MIN_TASK_STREAM_ELEMENTS = 1 << 20


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
