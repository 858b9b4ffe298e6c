"""Shared parts of the pytest-benchmark wrappers ``bench/bench_<family>.py``.

Each wrapper times the same pass the ``gpuconv bench`` harness times (the public op with
``impl=`` forced, from :mod:`gpuconv.benchmark.cases`), on the cases of one suite in
``bench/suites/<family>.json``: ``quick`` by default, so that CI runs every wrapper once
(``--benchmark-disable`` is in the project's pytest options), or the suite named by
``GPUCONV_BENCH_SUITE`` (``cpu`` for the sizes of bench/RESULTS.md). Before it is timed,
each result is checked against the reference in float64.

Timed run: ``GPUCONV_BENCH_SUITE=cpu .venv/bin/python -m pytest bench --benchmark-enable``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from gpuconv import benchmark, threads
from gpuconv.benchmark.cases import SUITE_PASSES
from gpuconv.testing import TOL

SUITE = os.environ.get("GPUCONV_BENCH_SUITE", "quick")

threads.set_num_threads(threads.default_threads())


def pass_params(family: str) -> list:
    """pytest params ``(case, pass)`` over every case of the suite and each of its passes."""
    return [pytest.param(case, p, id=f"{case['label']}-{p.name}")
            for case in benchmark.load_suite(family, SUITE)
            for p in SUITE_PASSES[family](case)]


def _inputs(p):
    inputs64 = p.make(np.random.default_rng(0))
    inputs = tuple(a.astype(np.float32) if a.dtype.kind == "f" else a for a in inputs64)
    return inputs64, inputs


def _check(result, p, inputs64) -> None:
    err = benchmark._max_err(result, p.call(inputs64, "reference"))
    assert err <= TOL["float32"], f"{p.op} {p.name}: relative error {err:.2e}"


def bench_gpuconv(benchmark_fixture, case: dict, p, impl: str) -> None:
    """Check, then time, ``impl`` on the pass."""
    inputs64, inputs = _inputs(p)
    if p.prepare is not None:
        inputs = p.prepare(inputs, impl)
    _check(p.call(inputs, impl), p, inputs64)
    benchmark_fixture.group = f"{case['label']} {p.name}"
    benchmark_fixture(p.call, inputs, impl)


def bench_array_reference(benchmark_fixture, case: dict, p) -> None:
    """Check, then time, the pass in plain NumPy calls (im2col + BLAS)."""
    if p.array_call is None:
        pytest.skip(f"{p.op} has no array-library reference")
    inputs64, inputs = _inputs(p)
    _check(p.array_call(inputs), p, inputs64)
    benchmark_fixture.group = f"{case['label']} {p.name}"
    benchmark_fixture(p.array_call, inputs)


def bench_torch(benchmark_fixture, case: dict, p) -> None:
    """Time PyTorch's CPU kernels on the pass, with gpuconv's thread count."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads.default_threads())
    _, inputs = _inputs(p)
    closure = p.torch_call(torch, tuple(torch.from_numpy(a) for a in inputs))
    benchmark_fixture.group = f"{case['label']} {p.name}"
    benchmark_fixture(closure)


def benchmark_tests(family: str) -> tuple:
    """The three tests of ``bench/bench_<family>.py``: the numpy impl, the array-library
    reference (skipped where the family has none) and PyTorch, over the suite's passes."""
    passes = pytest.mark.parametrize("case, p", pass_params(family))

    @passes
    def test_numpy_impl(benchmark, case, p):
        bench_gpuconv(benchmark, case, p, "numpy")

    @passes
    def test_array_reference(benchmark, case, p):
        bench_array_reference(benchmark, case, p)

    @passes
    def test_torch(benchmark, case, p):
        bench_torch(benchmark, case, p)

    return test_numpy_impl, test_array_reference, test_torch
