"""gpuconv's CPU threads: the default count (affinity and cgroup quota), the pool's contract,
and the numpy impls on several threads and in their splits (ranges, tiles, bands) against
the reference."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from support import assert_close

from gpuconv import functional as F, kernels, threads
from gpuconv.kernels.numpy_impl import conv as numpy_conv


@pytest.fixture
def pool_of():
    """Set the pool's size for one test (more threads than cores is fine), and put back
    the size the session used."""
    before = threads.get_num_threads()
    yield threads.set_num_threads
    threads.set_num_threads(before)


@pytest.fixture
def small_tasks(monkeypatch):
    """Tasks far smaller than the production thresholds, so small test arrays split."""
    monkeypatch.setattr(threads, "MIN_TASK_ELEMENTS", 16)
    monkeypatch.setattr(threads, "MIN_TASK_MACS", 16)
    monkeypatch.setattr(threads, "MIN_TASK_STREAM_ELEMENTS", 16)


# --------------------------------------------------------------------------- thread count

def _cgroup_v2(root, path: str, limits: dict) -> str:
    for rel, text in limits.items():
        d = root.joinpath(*[p for p in rel.split("/") if p])
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text)
    return f"0::{path}\n"


def test_cgroup_v2_quota_is_the_smallest_along_the_path(tmp_path):
    proc = _cgroup_v2(tmp_path, "/a/b", {"/": "max 100000", "/a": "250000 100000",
                                         "/a/b": "max 100000"})
    assert threads.cgroup_cpu_limit(proc, tmp_path) == 2.5
    proc = _cgroup_v2(tmp_path, "/a/b", {"/a/b": "50000 100000"})
    assert threads.cgroup_cpu_limit(proc, tmp_path) == 0.5


def test_cgroup_without_a_quota_is_unlimited(tmp_path):
    proc = _cgroup_v2(tmp_path, "/x", {"/x": "max 100000"})
    assert threads.cgroup_cpu_limit(proc, tmp_path) is None
    assert threads.cgroup_cpu_limit("", tmp_path) is None


def test_cgroup_v1_cfs_quota(tmp_path):
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("300000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert threads.cgroup_cpu_limit(proc, tmp_path) == 3.0
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(proc, tmp_path) is None


def test_default_threads_are_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("GPUCONV_NUM_THREADS", raising=False)
    affinity = len(__import__("os").sched_getaffinity(0))
    assert 1 <= threads.default_threads() == threads.available_cores() <= affinity
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a, **k: 0.3)
    assert threads.available_cores() == 1          # a fraction of a CPU still gets a thread
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a, **k: None)
    assert threads.available_cores() == affinity


def test_environment_and_set_num_threads_override_the_default(monkeypatch, pool_of):
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "5")
    assert threads.default_threads() == 5
    pool_of(3)
    assert threads.get_num_threads() == 3


@pytest.mark.parametrize("argv, env, expected", [
    (["--threads", "3"], None, 3),
    (["--threads", "3"], "5", 3),       # the flag beats the environment
    ([], "5", 5),
    ([], None, "cores"),
])
def test_cli_threads_flag_then_environment_then_the_cores(argv, env, expected, monkeypatch,
                                                          pool_of):
    """``gpuconv bench|train|eval`` runs on ``--threads``, else ``GPUCONV_NUM_THREADS``, else
    the cores this process may use, configured before the command's work starts."""
    from gpuconv import cli
    if env is None:
        monkeypatch.delenv("GPUCONV_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("GPUCONV_NUM_THREADS", env)
    pool_of(1)
    seen = []
    monkeypatch.setattr(cli, "_bench", lambda args: seen.append(threads.get_num_threads()) or 0)
    assert cli.main(["bench", "conv", *argv]) == 0
    assert seen == [threads.available_cores() if expected == "cores" else expected]


def test_set_num_threads_limits_blas_to_one_thread(pool_of):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pool_of(2)
    blas = threadpoolctl.threadpool_info()
    assert all(lib["num_threads"] == 1 for lib in blas if lib["user_api"] == "blas")


def test_set_num_threads_before_numpy_is_imported_still_limits_its_blas():
    """``import gpuconv`` does not import NumPy; the limit must not miss its BLAS."""
    import subprocess
    import sys
    code = ("import gpuconv; gpuconv.set_num_threads(2); import threadpoolctl; "
            "print(sorted({l['num_threads'] for l in threadpoolctl.threadpool_info() "
            "if l['user_api'] == 'blas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[1]"


# --------------------------------------------------------------------------- the pool

def test_parallel_for_runs_every_task_once_on_several_threads(pool_of):
    pool_of(3)
    seen, lock = [], threading.Lock()

    def task(i):
        time.sleep(0.002)              # long enough for the workers to take some tasks
        with lock:
            seen.append((i, threading.get_ident()))

    threads.parallel_for(40, task)
    assert sorted(i for i, _ in seen) == list(range(40))
    assert len({t for _, t in seen}) > 1


def test_parallel_for_reraises_a_task_error_after_the_others_finish(pool_of):
    pool_of(3)
    done = []

    def task(i):
        if i == 5:
            raise KeyError("task 5")
        done.append(i)

    with pytest.raises(KeyError, match="task 5"):
        threads.parallel_for(20, task)
    threads.parallel_for(4, done.append)           # the pool still works afterwards
    assert {0, 1, 2, 3} <= set(done)


@pytest.fixture
def spinning_pool(pool_of, monkeypatch):
    """A new pool of ``size`` threads whose idle workers spin ``idle`` seconds and whose
    caller spins ``wait`` seconds for the workers' tasks before it polls. Torn down before
    monkeypatch, which is torn down before pool_of: the session's pool is made anew with
    the real times."""
    def make(size: int, idle: float, wait: float) -> None:
        monkeypatch.setattr(threads, "IDLE_SPIN_SECONDS", idle)
        monkeypatch.setattr(threads, "WAIT_SPIN_SECONDS", wait)
        pool_of(1)                      # the next call makes a new pool with these times
        pool_of(size)
    yield make
    pool_of(1)


@pytest.mark.parametrize("idle, wait", [(1e-3, 1e-3), (0.0, 0.0), (1e-3, 0.0), (0.0, 1e-3)])
def test_jobs_back_to_back_run_every_task_once(idle, wait, spinning_pool):
    """Workers that spin, sleep, or do either between jobs and between tasks: every task of
    every job runs once, and a job returns only after all of its tasks have."""
    spinning_pool(3, idle, wait)
    rng = np.random.default_rng(0)
    for job in range(300):
        n = int(rng.integers(1, 9))
        out = np.zeros(n, np.int64)

        def task(i, out=out, delay=float(rng.choice([0.0, 0.0, 1e-4, 2e-3]))):
            if delay:
                time.sleep(delay)      # the GIL released, as a numba kernel releases it
            out[i] += 1

        threads.parallel_for(n, task)
        assert out.tolist() == [1] * n, f"job {job}"


def test_a_task_longer_than_the_callers_spin_is_waited_for(spinning_pool):
    spinning_pool(2, 1e-3, 1e-5)
    ended = []
    started = threading.Barrier(2, timeout=10)

    def task(i):
        started.wait()                 # both threads hold a task: the worker has one
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.05)           # the worker's task ends long after the caller's
        ended.append(i)

    threads.parallel_for(2, task)
    assert sorted(ended) == [0, 1]


def test_no_thread_spins_under_a_cpu_quota_smaller_than_the_threads(pool_of, monkeypatch):
    """Spinning would spend the quota the working threads need (the group is throttled)."""
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *_: 1.5)
    pool_of(1)
    pool_of(2)
    assert (threads._pool._idle_rounds, threads._pool._wait_rounds) == (0, 0)
    out = np.zeros(6)
    threads.parallel_for(6, lambda i: out.__setitem__(i, i))
    assert out.tolist() == list(range(6))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *_: 2.0)
    pool_of(1)
    pool_of(2)
    assert threads._pool._idle_rounds > 0 and threads._pool._wait_rounds > 0
    pool_of(1)   # pool_of's teardown makes the session's pool under the real quota


def test_a_pool_that_fails_to_start_leaves_the_old_one_working(pool_of, monkeypatch):
    pool_of(2)

    def fail(self, size):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(threads._Pool, "__init__", fail)
        with pytest.raises(KeyboardInterrupt):
            threads.set_num_threads(3)
    assert threads.get_num_threads() == 2
    both = threading.Barrier(2, timeout=10)   # broken unless a live worker takes a task
    threads.parallel_for(2, lambda i: both.wait())


def test_the_spin_primitives_see_another_threads_writes():
    from numba import njit

    from gpuconv import _spin

    @njit(nogil=True)
    def add_many(counter, times):      # adds side by side with the other thread's
        for _ in range(times):
            _spin._increment(counter, 0)

    words = np.zeros(8, np.int64)
    counter = np.zeros(1, np.int64)
    add_many(counter, 0)               # compiled before the threads start

    def adder():
        add_many(counter, 1_000_000)
        words[0] = 7                   # an ordinary store, as the pool's caller makes

    t = threading.Thread(target=adder)
    t.start()
    add_many(counter, 1_000_000)
    assert _spin.wait_while(words, 0, 0, int(5 * _spin.rounds_per_second())) == 7
    t.join()
    assert counter[0] == 2_000_000     # no add lost between the two threads
    _spin.add(counter, 0)
    assert _spin.add_then_wait_while(counter, 0, words, 0, 7, 10) == 7
    assert counter[0] == 2_000_002
    assert _spin.wait_until(words, 0, 7, 1) == 7
    assert _spin.wait_until(words, 0, 8, 10) == 7     # gives up after its rounds


def test_nested_parallel_for_runs_inline(pool_of):
    pool_of(2)
    out = np.zeros((4, 4))

    def row(i):
        threads.parallel_for(4, lambda j: out.__setitem__((i, j), i * 4 + j))

    threads.parallel_for(4, row)
    assert np.array_equal(out.ravel(), np.arange(16))


def test_split_covers_the_range_in_near_equal_parts(pool_of):
    pool_of(3)
    for total, min_size in [(10, 1), (100, 7), (5, 10), (1, 1)]:
        parts = threads.split(total, min_size, 2)
        assert [i for r in parts for i in r] == list(range(total))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert len(parts) == 1 or min(map(len, parts)) >= min_size
    assert threads.split(0, 1) == []


# --------------------------------------------------------------------------- ops on the pool

def _rng():
    return np.random.default_rng(13)


@pytest.mark.parametrize("op, args", [
    ("relu", lambda r: (r.standard_normal((3, 50)),)),
    ("relu_backward", lambda r: (r.standard_normal((3, 50)), r.standard_normal((3, 50)))),
    ("sigmoid", lambda r: (r.standard_normal((7, 11)),)),
    ("tanh_backward", lambda r: (r.standard_normal(99), r.standard_normal(99), None)),
    ("elu", lambda r: (r.standard_normal((4, 25)), 0.7)),
    ("leaky_relu_backward", lambda r: (r.standard_normal(80), r.standard_normal(80), 0.1)),
])
def test_elementwise_ops_in_ranges_match_the_reference(op, args, pool_of, small_tasks):
    pool_of(3)
    a = args(_rng())
    want = kernels.dispatch(op, "reference", *a)
    got = kernels.dispatch(op, "numpy", *(x.astype(np.float32) if isinstance(x, np.ndarray)
                                          else x for x in a))
    assert_close(got, want, "float32", op)


def test_linear_in_row_blocks_matches_the_reference(pool_of, small_tasks):
    pool_of(3)
    r = _rng()
    x, w, b, g = (r.standard_normal(s) for s in [(2, 19, 6), (5, 6), (5,), (2, 19, 5)])
    assert_close(F.linear(x, w, b, impl="numpy"), F.linear(x, w, b, impl="reference"),
                 "float64")
    for got, want in zip(F.linear_backward(g, x, w, b, impl="numpy"),
                         F.linear_backward(g, x, w, b, impl="reference")):
        assert_close(got, want, "float64")


@pytest.mark.parametrize("m, k, n", [(7, 1, 5), (1, 1, 9), (6, 0, 4), (1, 13, 1), (40, 3, 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["contiguous", "views"])
def test_matmul_of_any_inner_size_matches_the_float64_product(m, k, n, dtype, layout, pool_of,
                                                             small_tasks):
    """``views``: ``a`` a transposed array and ``out`` a strided view, as the linear
    backward passes them."""
    pool_of(3)
    r = _rng()
    a, b = r.standard_normal((m, k)), r.standard_normal((k, n))
    a_in = a.astype(dtype) if layout == "contiguous" else a.T.astype(dtype).T
    whole = np.full((m, 2 * n if layout == "views" else n), np.nan, dtype)
    out = whole if layout == "contiguous" else whole[:, ::2]
    assert threads.matmul(a_in, b.astype(dtype), out) is out
    assert_close(out, a @ b, dtype, f"({m}, {k}) @ ({k}, {n})")


@pytest.mark.parametrize("a, b, out", [((3, 1), (3, 4), (3, 4)), ((1, 1), (1, 4), (3, 4))])
def test_matmul_rejects_operands_that_do_not_make_its_output(a, b, out):
    with pytest.raises(ValueError):
        threads.matmul(np.ones(a), np.ones(b), np.empty(out))


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_in_plane_ranges_matches_the_reference(kind, pool_of, small_tasks):
    pool_of(3)
    x = _rng().standard_normal((3, 5, 9, 8))
    gy = _rng().standard_normal((3, 5, 5, 4))
    if kind == "max":
        got, want = (F.max_pool2d(x, 3, 2, 1, return_indices=True, impl=i)
                     for i in ("numpy", "reference"))
        grads = [F.max_pool2d_backward(gy, x, 3, 2, 1, indices=got[1], impl=i)
                 for i in ("numpy", "reference")]
        got, want = got[0], want[0]
    else:
        got, want = (F.avg_pool2d(x, 3, 2, 1, impl=i) for i in ("numpy", "reference"))
        grads = [F.avg_pool2d_backward(gy, x, 3, 2, 1, impl=i) for i in ("numpy", "reference")]
    assert_close(got, want, "float64")
    assert_close(*grads, "float64")


@pytest.mark.parametrize("bidirectional, layers", [(False, 1), (True, 2)])
def test_lstm_split_over_the_batch_matches_the_reference(bidirectional, layers, pool_of,
                                                          monkeypatch):
    from gpuconv.kernels.numpy_impl import rnn as numpy_rnn
    monkeypatch.setattr(numpy_rnn, "_MIN_BATCH_PER_TASK", 2)
    pool_of(3)
    r = _rng()
    T, B, I, H, D = 4, 7, 3, 5, 2 if bidirectional else 1
    x = r.standard_normal((T, B, I))
    params = _lstm_params(r, layers, D, I, H)
    gy = r.standard_normal((T, B, D * H))
    want = F.lstm(x, None, params, num_layers=layers, bidirectional=bidirectional,
                  impl="reference")
    reserve = F.Reserve()
    got = F.lstm(x, None, params, num_layers=layers, bidirectional=bidirectional,
                 reserve=reserve, impl="numpy")
    assert_close(got[0], want[0], "float64")
    pool_of(1)     # the backward follows the forward's split, whatever the pool does now
    kwargs = dict(num_layers=layers, bidirectional=bidirectional)
    grads = F.lstm_backward(gy, None, None, x, None, params, **kwargs, reserve=reserve,
                            impl="numpy")
    refs = F.lstm_backward(gy, None, None, x, None, params, **kwargs, impl="reference")
    assert_close(grads[0], refs[0], "float64", "grad x")
    for g, ref in zip(grads[-1], refs[-1]):
        assert_close(g, ref, "float64", "grad params")


def _lstm_params(r, layers: int, D: int, I: int, H: int) -> list:
    params = []
    for layer in range(layers):
        for _ in range(D):
            params += [r.standard_normal(s) / H for s in
                       [(4 * H, I if layer == 0 else D * H), (4 * H, H), (4 * H,), (4 * H,)]]
    return params


def _child_sum(_):
    out = np.zeros(8)
    threads.parallel_for(8, lambda i: out.__setitem__(i, i))
    return out.sum()


def test_a_forked_child_makes_its_own_pool(pool_of):
    import multiprocessing
    pool_of(2)
    threads.parallel_for(2, lambda i: None)       # the parent's workers exist
    with multiprocessing.get_context("fork").Pool(1) as children:
        assert children.map(_child_sum, [0]) == [28.0]
