"""The numba_cuda kernels under the CUDA simulator (CI has no GPU): each impl's function is
called directly on NumPy arrays and compared with the reference impl in float64.

The simulator runs every CUDA thread as a Python thread, so shapes are tiny. On a GPU
machine these impls are tested on CuPy arrays by the family test files instead."""
import numpy as np
import pytest

from gpuconv import kernels
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import assert_close, rng_for

pytestmark = pytest.mark.skipif(not simulator_enabled(),
                                reason="runs under NUMBA_ENABLE_CUDASIM=1 (set by conftest without a GPU)")


def _impl(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


def _numba_impls(op: str) -> list:
    return [i.name for i in kernels.implementations(op) if i.name.startswith("numba_cuda")]


# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CONV_CASES = [
    (1, 2, 5, 6, 3, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (2, 4, 7, 5, 4, 3, 2, (2, 1), (0, 1), (1, 2), 2),
    (1, 3, 6, 6, 3, 3, 3, (2, 2), (1, 1), (1, 1), 3),   # depthwise
    (2, 2, 4, 4, 2, 1, 1, (1, 1), (0, 0), (1, 1), 1),   # 1x1
]


def _conv_inputs(case, dtype, with_bias=True):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    rng = rng_for("numba_conv", case)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, R, S))
    b = rng.standard_normal(K) if with_bias else None
    cast = (lambda a: None if a is None else a.astype(dtype))
    return cast(x), cast(w), cast(b), (x, w, b), (stride, padding, dilation, groups)


# conv2d_backward's output_mask: every gradient (input, weight, bias).
ALL_GRADS = (True, True, True)


@pytest.mark.parametrize("impl", _numba_impls("conv2d"))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_numba_cuda_conv2d_matches_reference(impl, dtype, case):
    x, w, b, ref_in, args = _conv_inputs(case, dtype)
    out = _impl("conv2d", impl)(x, w, b, *args)
    ref = _impl("conv2d", "reference")(*ref_in, *args)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("impl", _numba_impls("conv2d_backward"))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_numba_cuda_conv2d_backward_matches_reference(impl, dtype, case):
    x, w, b, (x64, w64, _), args = _conv_inputs(case, dtype)
    y = _impl("conv2d", "reference")(x64, w64, None, *args)
    gy = rng_for("numba_conv_gy", case).standard_normal(y.shape)
    out = _impl("conv2d_backward", impl)(gy.astype(dtype), x, w, ALL_GRADS, *args)
    ref = _impl("conv2d_backward", "reference")(gy, x64, w64, ALL_GRADS, *args)
    for name, o, r in zip(("grad_x", "grad_weight", "grad_bias"), out, ref):
        assert_close(o, r, dtype, name)


@pytest.mark.parametrize("impl", _numba_impls("conv2d_backward"))
@pytest.mark.parametrize("mask", [(True, False, False), (False, True, True)], ids=str)
def test_numba_cuda_conv2d_backward_computes_only_the_masked_gradients(impl, mask):
    case = CONV_CASES[0]
    x, w, _, _, args = _conv_inputs(case, "float64")
    gy = rng_for("numba_conv_mask", case).standard_normal(
        _impl("conv2d", "reference")(x, w, None, *args).shape)
    out = _impl("conv2d_backward", impl)(gy, x, w, mask, *args)
    ref = _impl("conv2d_backward", "reference")(gy, x, w, ALL_GRADS, *args)
    for name, need, o, r in zip(("grad_x", "grad_weight", "grad_bias"), mask, out, ref):
        if need:
            assert_close(o, r, "float64", name)
        else:
            assert o is None, name


# --------------------------------------------------------------------------- launching on a GPU

def test_a_gpu_launch_queues_on_cupys_stream_and_imports_arrays_without_a_sync(monkeypatch):
    """The launch path that a GPU takes, with numba's and CuPy's stream objects recorded
    instead of created (no GPU here): the kernel gets CuPy's current stream, and every
    CuPy array goes through ``as_cuda_array(..., sync=False)``; other arguments as they are.
    Never run on a GPU (see the README's status of the GPU paths)."""
    from gpuconv import backend
    from gpuconv.kernels.numba_cuda import _numba

    class DeviceArray:  # a stand-in CuPy array: only its device matters here
        pass

    calls, imported = [], []

    class Kernel:
        def __getitem__(self, config):
            return lambda *args: calls.append((config, args))

    stream_of_cupy = type("Stream", (), {"ptr": 7})()
    fake_cupy = type("cupy", (), {"cuda": type("cuda", (), {
        "get_current_stream": staticmethod(lambda: stream_of_cupy)})})
    monkeypatch.setattr(_numba, "simulator_enabled", lambda: False)
    monkeypatch.setattr(backend, "cupy_or_none", lambda: fake_cupy)
    monkeypatch.setattr(backend, "device_of",
                        lambda a: "cuda" if isinstance(a, DeviceArray) else "cpu")
    monkeypatch.setattr(_numba.cuda, "external_stream", lambda ptr: ("external", ptr),
                        raising=False)
    monkeypatch.setattr(_numba.cuda, "as_cuda_array",
                        lambda a, sync=True: imported.append(sync) or ("imported", a),
                        raising=False)
    _numba._numba_stream.cache_clear()
    a, b = DeviceArray(), DeviceArray()
    _numba.launch(Kernel(), 3, 128, (a, 2.5, b, True), shared_mem=64)
    _numba._numba_stream.cache_clear()
    assert calls == [((3, 128, ("external", 7), 64),
                      (("imported", a), 2.5, ("imported", b), True))]
    assert imported == [False, False]
