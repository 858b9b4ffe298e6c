"""Shared test helpers: the tolerance table, error measures, impl parametrisation and
finite differences. Tests import it as ``from support import ...``."""
from __future__ import annotations

import contextlib
import dataclasses
import zlib

import numpy as np
import pytest

from gpuconv import backend, kernels, testing
from gpuconv.kernels.numba_cuda import simulator_enabled
from gpuconv.testing import TOL  # noqa: F401  (the one per-dtype tolerance table)

# Central finite differences in float64: step and the agreement required.
FD_EPS = 1e-6
FD_TOL = 1e-6


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64, asserting equal shapes and finite outputs."""
    out, ref = backend.to_numpy(out), backend.to_numpy(ref)
    assert out.shape == ref.shape, f"shape {out.shape} != reference shape {ref.shape}"
    assert np.all(np.isfinite(out)), "output has NaN/inf (unwritten or overflowed elements)"
    return testing.rel_err(out, ref)


def assert_close(out, ref, dtype, what: str = "") -> None:
    """Relative error within the tolerance of ``dtype`` (a dtype or a TOL key)."""
    key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    err = rel_err(out, ref)
    assert err <= TOL[key], f"{what} relative error {err:.3e} > {TOL[key]:.0e} ({key})"


def check_against_reference(out, ref, dtype, what: str = "") -> None:
    """``out`` (on any device) has ``dtype`` and is close to ``ref``; None where ref is None."""
    if ref is None:
        assert out is None, f"{what}: expected None"
        return
    out = backend.to_numpy(out)
    assert out.dtype == np.dtype(dtype), f"{what}: dtype {out.dtype}, expected {dtype}"
    assert_close(out, ref, dtype, what)


def rounded(a, dtype):
    """``a`` in ``dtype``, and the same values in float64 for the reference (None passes)."""
    if a is None:
        return None, None
    low = a.astype(dtype)
    return low, low.astype(np.float64)


def impl_params(op: str, *, include_reference: bool = False,
                devices: tuple[str, ...] = ("cpu", "cuda")) -> list:
    """pytest params over the registered impls of ``op`` that run on one of ``devices``;
    GPU ones carry the ``gpu`` mark and skip where they cannot run. A test restricts
    ``devices`` to ``("cpu",)`` when what it checks is a property of NumPy arrays (strides
    of a view, finite differences that mutate the inputs in place)."""
    params = []
    for impl in kernels.implementations(op):
        if (impl.name == "reference" and not include_reference) or impl.device not in devices:
            continue
        marks = []
        if impl.device == "cuda":
            marks.append(pytest.mark.gpu)
        if not impl.is_available():
            marks.append(pytest.mark.skip(reason=_unavailable(impl)))
        params.append(pytest.param(impl.name, marks=marks, id=impl.name))
    return params


def _unavailable(impl) -> str:
    """Why ``impl`` skips here, in words shared by all its tests (the summary groups them)."""
    if impl.device != "cuda":
        return f"{impl.name} cannot run on this machine"
    if impl.name.startswith("numba_cuda"):
        return ("numba_cuda impls need a GPU (without one they run under numba's CUDA "
                "simulator: the @simulator params, tests/test_numba_cuda*.py)")
    return ("CUDA C impls need a GPU (without one they run against the emulated CuPy: "
            "tests/test_cuda_emulated.py)")


def with_impls(cases, ids, op, *, include_reference: bool = False,
               devices: tuple[str, ...] = ("cpu", "cuda")) -> list:
    """pytest params over (case, impl) for each case and every impl of its op; ``op`` is an
    op name or a function from a case to its op name."""
    op_of = op if callable(op) else lambda case: op
    return [pytest.param(case, p.values[0], marks=p.marks, id=f"{case_id}-{p.id}")
            for case, case_id in zip(cases, ids)
            for p in impl_params(op_of(case), include_reference=include_reference,
                                 devices=devices)]


def on_device_of(impl_name: str, op: str, *arrays):
    """Move NumPy test inputs to the device the impl runs on (None passes through); the test
    skips where the impl does not take the inputs' dtype (cuda_igemm has no float64)."""
    impl = next(i for i in kernels.implementations(op) if i.name == impl_name)
    unsupported = {str(a.dtype) for a in arrays
                   if a is not None and a.dtype.kind == "f" and not impl.supports(a.dtype)}
    if unsupported:
        pytest.skip(f"{impl_name} does not take {', '.join(sorted(unsupported))} arrays")
    out = tuple(None if a is None else backend.to_device(a, impl.device)
                if impl.device == "cuda" else a for a in arrays)
    return out if len(out) != 1 else out[0]


def numerical_grad(f, x: np.ndarray, eps: float = FD_EPS) -> np.ndarray:
    """d f(x) / dx by central differences, element by element (float64, small x)."""
    assert x.dtype == np.float64
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    assert flat.base is x or flat is x or np.shares_memory(flat, x)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def check_grads(loss, analytic: dict, inputs: dict, tol: float = FD_TOL) -> None:
    """Compare analytic gradients with finite differences.

    ``loss()`` evaluates a scalar from the arrays in ``inputs`` (mutated in place);
    ``analytic[name]`` is the gradient of that scalar with respect to ``inputs[name]``.
    """
    for name, x in inputs.items():
        num = numerical_grad(loss, x)
        err = rel_err(analytic[name], num)
        assert err <= tol, f"gradient of {name}: relative error {err:.3e} > {tol:.0e}"


def check_module_grads(module, x: np.ndarray, grad_output: np.ndarray,
                       params: list[str] | None = None) -> None:
    """A module's backward against central finite differences of
    ``sum(module(x) * grad_output)``: the gradients of the named parameters (default: all)
    and the input's where the backward returns one (not for integer inputs such as token
    ids). Checking the first layer's weights covers every layer's backward on the way."""
    module(x)
    grad_x = module.backward(grad_output)
    named = dict(module.named_parameters())
    chosen = {n: named[n] for n in (params or named)}
    analytic = {n: p.grad for n, p in chosen.items()}
    inputs = {n: p.data for n, p in chosen.items()}
    if grad_x is not None:
        analytic["input"], inputs["input"] = grad_x, x
    check_grads(lambda: float(np.sum(module(x) * grad_output)), analytic, inputs)


def rng_for(*key) -> np.random.Generator:
    """A generator seeded from the test's parameters, so each case is reproducible."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@contextlib.contextmanager
def device_counts(forbid_sync: bool = False):
    """``with device_counts() as c:`` -- what the block made the host and device do. Under
    the CUDA emulator ``c`` counts it exactly when the block ends (``c["sync"]``, ``"d2h"``,
    ``"h2d"``, ``"launch"``, ``"graph_launch"``, ``"capture"``; tests/cuda_emu/streams.py);
    on a GPU ``c`` is None, and in both a synchronisation that CuPy declares raises where
    ``forbid_sync`` (``cupyx.allow_synchronize(False)``)."""
    import cupyx

    cp = backend.cupy_or_none()
    with contextlib.ExitStack() as stack:
        if forbid_sync:
            stack.enter_context(cupyx.allow_synchronize(False))
        if getattr(cp, "__version__", "") == "0.0-emulated":
            from cuda_emu import streams

            yield stack.enter_context(streams.counting())
        else:
            yield None


# ---------------------------------------------------------------------------- every impl

# Suffix of a param that runs a numba_cuda impl on NumPy arrays under numba's simulator.
SIMULATED = "@simulator"


def every_impl_params(op: str) -> list:
    """pytest params over every impl of ``op`` that can be exercised on this machine: those of
    :func:`impl_params` (the reference included; CUDA C impls run under the emulator in the
    ``gpu`` pass), plus each numba_cuda impl under numba's CUDA simulator. Pass the param to
    :func:`run_impl`."""
    params = impl_params(op, include_reference=True)
    for impl in kernels.implementations(op):
        if impl.name.startswith("numba_cuda"):
            params.append(pytest.param(
                impl.name + SIMULATED, id=impl.name + SIMULATED, marks=pytest.mark.skipif(
                    not simulator_enabled(), reason="needs numba's CUDA simulator")))
    return params


@contextlib.contextmanager
def _numba_cuda_on_numpy():
    """For the block, the numba_cuda impls (registered for CuPy arrays) take NumPy arrays
    through the public ops, as they do under the simulator when called directly."""
    kernels.implementations("relu")  # loads the registry
    saved = {op: dict(impls) for op, impls in kernels._REGISTRY.items()}
    try:
        for impls in kernels._REGISTRY.values():
            for name, impl in impls.items():
                if name.startswith("numba_cuda"):
                    impls[name] = dataclasses.replace(impl, device="cpu",
                                                      is_available=lambda: True)
        yield
    finally:
        for op, impls in saved.items():
            kernels._REGISTRY[op] = impls


def _to_numpy_tree(out):
    if isinstance(out, (tuple, list)):
        return type(out)(_to_numpy_tree(o) for o in out)
    return None if out is None or isinstance(out, (int, float)) else backend.to_numpy(out)


def run_impl(param: str, op: str, fn, *arrays):
    """``fn(*arrays, impl=name)`` with the arrays (NumPy, None passes) on the device of the
    impl a param of :func:`every_impl_params` names; results come back as NumPy arrays."""
    name = param.removesuffix(SIMULATED)
    if param.endswith(SIMULATED):
        with _numba_cuda_on_numpy():
            return _to_numpy_tree(fn(*arrays, impl=name))
    moved = [on_device_of(name, op, a) for a in arrays]
    return _to_numpy_tree(fn(*moved, impl=name))


def assert_same_values(out, ref, dtype, what: str = "") -> None:
    """``out`` equals ``ref`` where it matters for special values: NaN in the same places, the
    same infinities with the same signs, and the finite values within the tolerance of
    ``dtype`` (relative to the finite part of ``ref``). None must match None."""
    if ref is None or out is None:
        assert out is None and ref is None, f"{what}: {out!r} vs {ref!r}"
        return
    out, ref = np.asarray(backend.to_numpy(out)), np.asarray(ref)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    nan_out, nan_ref = np.isnan(out), np.isnan(ref)
    assert np.array_equal(nan_out, nan_ref), (
        f"{what}: NaN at {np.argwhere(nan_out & ~nan_ref).tolist()[:5]} where the expected "
        f"value is not NaN, not NaN at {np.argwhere(nan_ref & ~nan_out).tolist()[:5]}")
    inf_out, inf_ref = np.isinf(out), np.isinf(ref)
    assert np.array_equal(inf_out, inf_ref) and np.array_equal(out[inf_out], ref[inf_ref]), (
        f"{what}: infinities differ: {out[inf_out | inf_ref]} vs {ref[inf_out | inf_ref]}")
    finite = np.isfinite(ref)
    if finite.any():
        key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
        err = testing.rel_err(out[finite], ref[finite])
        assert err <= TOL[key], f"{what}: finite values differ, relative error {err:.2e}"

