"""Shared test helpers: the tolerance table, error measures, impl parametrisation and
finite differences. Tests import it as ``from support import ...``."""
from __future__ import annotations

import contextlib
import zlib

import numpy as np
import pytest

from gpuconv import backend, kernels, testing
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
            marks.append(pytest.mark.skip(reason=f"{impl.name} cannot run here"))
        params.append(pytest.param(impl.name, marks=marks, id=impl.name))
    return params


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
