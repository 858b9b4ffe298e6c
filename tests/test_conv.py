"""conv1d, conv2d, conv_transpose2d and their backward: every impl against the reference,
the reference against independent oracles (scipy.signal.correlate, the adjoint identity,
PyTorch when installed), gradients against finite differences, and argument validation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from support import assert_close, check_grads, impl_params, on_device_of, rng_for

from gpuconv import backend
from gpuconv.functional import (conv1d, conv1d_backward, conv2d, conv2d_backward,
                                conv2d_bias_act, conv_transpose2d, conv_transpose2d_backward)

DTYPES = ("float64", "float32")


# --------------------------------------------------------------------------- cases

def _random_arrays(key, dtype, *shapes):
    """Standard normal arrays of ``shapes`` (None for a None shape), seeded from ``key``."""
    rng = rng_for(key)
    return tuple(None if s is None else rng.standard_normal(s).astype(dtype) for s in shapes)


@dataclass(frozen=True)
class ConvCase:
    """x: (n, c, h, w), weight: (k, c/groups, *kernel)."""

    id: str
    n: int
    c: int
    hw: tuple
    k: int
    kernel: tuple
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True

    def args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, dtype="float64"):
        return _random_arrays(self.id, dtype, (self.n, self.c) + self.hw,
                              (self.k, self.c // self.groups) + self.kernel,
                              (self.k,) if self.bias else None)


CONV_CASES = [
    ConvCase("basic-odd", 2, 3, (7, 6), 4, (3, 3)),
    ConvCase("stride2-pad1-groups2-batch1-nonsquare", 1, 4, (9, 8), 6, (3, 2), 2, 1, 1, 2),
    ConvCase("stride3-pad2-dilation2", 2, 3, (11, 10), 5, (3, 3), 3, 2, 2),
    ConvCase("depthwise-multiplier2-mixed", 3, 4, (6, 7), 8, (3, 3), (1, 2), (0, 1), (2, 1), 4),
    ConvCase("depthwise-stride2", 2, 6, (8, 8), 6, (3, 3), 2, 1, 1, 6, False),
    ConvCase("1x1", 2, 5, (5, 5), 3, (1, 1)),
    ConvCase("same-even-kernel-groups2", 2, 2, (6, 9), 4, (2, 4), 1, "same", 1, 2),
    ConvCase("same-dilated-nobias", 1, 3, (7, 8), 2, (4, 3), 1, "same", (1, 2), 1, False),
    ConvCase("valid-kernel-fills-input", 2, 3, (5, 6), 4, (5, 6), 1, "valid"),
    ConvCase("stride-skips-last-rows", 2, 2, (8, 9), 3, (2, 2), 3, 0, 1, 1),
    ConvCase("one-input-channel", 3, 1, (9, 8), 6, (3, 3), 1, 1),
    # Kernel rows of four taps and more: the numpy impl's depthwise loops take them four
    # at a time (with a remainder), row stride 2 and column dilation included.
    ConvCase("one-input-channel-5x5", 2, 1, (12, 11), 6, (5, 5), 1, 2),
    ConvCase("depthwise-wide-kernel-rowstride2", 2, 3, (9, 14), 6, (3, 6), (2, 1), (1, 2),
             (1, 2), 3),
    ConvCase("depthwise-wide-kernel-dilated", 2, 2, (7, 16), 4, (2, 5), 1, (0, 2), (1, 2), 2),
    # 16 and 32 output channels: the numpy impl's direct forward (one or two SIMD vectors
    # of channels), with its pixel blocks of 5 and 10 cut short at the row's end.
    ConvCase("16-channels-stride-pad-dilation", 2, 3, (9, 23), 16, (3, 2), 2, (1, 2), (1, 2)),
    ConvCase("16-channels-batch1-odd", 1, 5, (7, 13), 16, (3, 3), 1, 1),
    ConvCase("32-channels-5x5", 2, 6, (14, 12), 32, (5, 5), 1, (0, 1)),
    # Channel vectors with stride 2: 48 channels (three vectors: three passes over the
    # image), 64 (four: two passes of two, each in tap chunks), and 16 with 144 taps (tap
    # chunks in float64).
    ConvCase("48-channels-stride2", 2, 48, (9, 11), 48, (3, 3), 2, 1),
    ConvCase("64-channels-stride2", 1, 64, (8, 8), 64, (3, 3), 2, 1),
    ConvCase("16-channels-144-taps-stride2", 2, 16, (9, 9), 16, (3, 3), 2, 1),
    # Unit-stride forwards on the row kernel (rows of 16 and 15 elements).
    ConvCase("16-channels-rows", 2, 3, (8, 16), 16, (3, 3), 1, 1),
    ConvCase("rows-6-channels-dilated", 2, 2, (10, 16), 6, (3, 2), 1, (2, 0), (2, 1)),
]

SMALL_CONV_CASES = [
    ConvCase("fd-stride2-pad1", 2, 2, (5, 4), 3, (3, 2), 2, 1),
    ConvCase("fd-dilation-groups", 1, 4, (5, 5), 2, (2, 2), 1, 1, 2, 2),
    ConvCase("fd-same-even", 1, 2, (4, 5), 2, (2, 3), 1, "same"),
    ConvCase("fd-depthwise", 2, 2, (4, 4), 4, (3, 3), (2, 1), 1, 1, 2),
]


@dataclass(frozen=True)
class TransposeCase:
    """x: (n, c, h, w), weight: (c, k/groups, *kernel), y: (n, k, ...)."""

    id: str
    n: int
    c: int
    hw: tuple
    k_per_group: int
    kernel: tuple
    stride: object = 1
    padding: object = 0
    output_padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True

    def args(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def arrays(self, dtype="float64"):
        return _random_arrays(self.id, dtype, (self.n, self.c) + self.hw,
                              (self.c, self.k_per_group) + self.kernel,
                              (self.k_per_group * self.groups,) if self.bias else None)


TRANSPOSE_CASES = [
    TransposeCase("stride2-pad1-outpad1", 2, 3, (4, 5), 2, (3, 3), 2, 1, 1),
    TransposeCase("mixed-groups2-batch1", 1, 4, (3, 4), 3, (2, 3), (3, 2), (0, 1), (2, 0), (1, 2),
                  2),
    TransposeCase("depthwise-dilation2", 2, 4, (5, 3), 1, (3, 3), 1, 1, 0, 2, 4),
    TransposeCase("outpad-below-dilation", 2, 2, (3, 3), 3, (3, 2), 1, 0, 1, 2, 1, False),
    TransposeCase("1x1-stride2", 1, 3, (4, 4), 2, (1, 1), 2, 0, 1),
]

SMALL_TRANSPOSE_CASES = [
    TransposeCase("fd-stride2", 1, 2, (3, 3), 2, (3, 2), 2, 1, 1),
    TransposeCase("fd-groups-dilation", 2, 2, (2, 3), 1, (2, 2), 1, 0, 1, 2, 2),
]


def _ids(cases):
    return [c.id for c in cases]


def _np(a):
    return None if a is None else backend.to_numpy(a)


def _reference_in_float64(fn, *arrays, **kwargs):
    arrays = tuple(None if a is None else a.astype(np.float64) for a in arrays)
    return fn(*arrays, **kwargs, impl="reference")


# --------------------------------------------------------------------------- impl vs reference

def _assert_grads_close(grads, refs, dtype):
    """(grad_input, grad_weight, grad_bias) match, in ``dtype``; None where ref is None."""
    for name, g, ref in zip(("grad_input", "grad_weight", "grad_bias"), grads, refs):
        assert (g is None) == (ref is None), name
        if ref is not None:
            assert g.dtype == np.dtype(dtype)
            assert_close(g, ref, dtype, name)


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("conv2d"))
def test_conv2d_matches_reference(impl, dtype, case):
    x, w, b = case.arrays(dtype)
    out = conv2d(*on_device_of(impl, "conv2d", x, w, b), **case.args(), impl=impl)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, _reference_in_float64(conv2d, x, w, b, **case.args()), dtype)


@pytest.mark.parametrize("activation", ["relu", "identity", "tanh"])
@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("conv2d_bias_act", devices=("cpu",)))
def test_conv2d_bias_act_matches_reference_on_the_cpu(impl, dtype, case, activation):
    """The CPU impls of the fused op (the numpy impl clamps for relu as it stores the
    output, and composes other activations); a NaN input pixel stays NaN through relu."""
    x, w, b = case.arrays(dtype)
    x[0, 0, 0, 0] = np.nan
    out = conv2d_bias_act(x, w, b, **case.args(), activation=activation, impl=impl)
    ref = _reference_in_float64(conv2d_bias_act, x, w, b, **case.args(), activation=activation)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    finite = ~np.isnan(ref)
    assert_close(np.where(finite, out, 0), np.where(finite, ref, 0), dtype)


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("conv2d_backward"))
def test_conv2d_backward_matches_reference(impl, dtype, case):
    x, w, b = case.arrays(dtype)
    gy = _reference_in_float64(conv2d, x, w, b, **case.args())
    gy = rng_for(case.id, "gy").standard_normal(gy.shape).astype(dtype)
    grads = conv2d_backward(*on_device_of(impl, "conv2d_backward", gy, x, w, b), **case.args(),
                            impl=impl)
    refs = _reference_in_float64(conv2d_backward, gy, x, w, b, **case.args())
    _assert_grads_close(grads, refs, dtype)


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("conv_transpose2d"))
def test_conv_transpose2d_matches_reference(impl, dtype, case):
    x, w, b = case.arrays(dtype)
    out = conv_transpose2d(*on_device_of(impl, "conv_transpose2d", x, w, b), **case.args(),
                           impl=impl)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, _reference_in_float64(conv_transpose2d, x, w, b, **case.args()), dtype)


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("conv_transpose2d_backward"))
def test_conv_transpose2d_backward_matches_reference(impl, dtype, case):
    x, w, b = case.arrays(dtype)
    gy = _reference_in_float64(conv_transpose2d, x, w, b, **case.args())
    gy = rng_for(case.id, "gy").standard_normal(gy.shape).astype(dtype)
    grads = conv_transpose2d_backward(
        *on_device_of(impl, "conv_transpose2d_backward", gy, x, w, b), **case.args(), impl=impl)
    refs = _reference_in_float64(conv_transpose2d_backward, gy, x, w, b, **case.args())
    _assert_grads_close(grads, refs, dtype)


@pytest.fixture
def numpy_conv_limits(monkeypatch):
    """The numpy conv module, for a test that patches its size limits: the views that keep
    kernel choices made under other limits are dropped before the test and after it."""
    from gpuconv.kernels.numpy_impl import conv as numpy_conv
    numpy_conv._cached_view.cache_clear()
    yield numpy_conv
    numpy_conv._cached_view.cache_clear()


def test_numpy_conv2d_chunking_does_not_change_results(numpy_conv_limits, monkeypatch):
    """The numpy impl sweeps the batch in chunks; 1, 2 and 3 images per chunk (the last
    chunk partial) give the result of a single chunk."""
    numpy_conv = numpy_conv_limits
    case = ConvCase("chunks", 5, 4, (6, 5), 6, (3, 2), (2, 1), 1, 1, 2)
    x, w, b = case.arrays()
    gy = np.random.default_rng(0).standard_normal((5, 6, 3, 6))
    whole = (conv2d(x, w, b, **case.args(), impl="numpy"),
             *conv2d_backward(gy, x, w, b, **case.args(), impl="numpy"))
    column_bytes = 4 * 3 * 2 * 3 * 7 * 8    # C*R*S * OH * Wq (wide rows) float64s per image
    for images in (1, 2, 3):
        monkeypatch.setattr(numpy_conv, "_CHUNK_BYTES", images * column_bytes)
        chunked = (conv2d(x, w, b, **case.args(), impl="numpy"),
                   *conv2d_backward(gy, x, w, b, **case.args(), impl="numpy"))
        for got, want in zip(chunked, whole):
            assert_close(got, want, "float64")


DIRECT_CASES = [c for c in CONV_CASES if c.id.startswith(("16-", "32-", "48-", "64-"))]


# The numpy impl's forward kernel per case and dtype (64-byte vectors): the row vectors
# where the strides are 1 and rows and row pairs fill 80% of their multiply-adds, else the
# channel vectors where K is a multiple of the lanes with enough taps, else the loops.
FORWARD_PATHS = {
    ("16-channels-stride-pad-dilation", "float32"): "channels",
    ("16-channels-stride-pad-dilation", "float64"): "channels",
    ("16-channels-batch1-odd", "float32"): "channels",
    ("16-channels-batch1-odd", "float64"): "channels",
    ("32-channels-5x5", "float32"): "channels",
    ("32-channels-5x5", "float64"): "loops",
    ("16-channels-rows", "float32"): "rows",
    ("16-channels-rows", "float64"): "rows",
    ("rows-6-channels-dilated", "float32"): "rows",
    ("rows-6-channels-dilated", "float64"): "rows",
    ("48-channels-stride2", "float32"): "channels",
    ("48-channels-stride2", "float64"): "loops",
    ("64-channels-stride2", "float32"): "channels",
    ("64-channels-stride2", "float64"): "loops",
    ("16-channels-144-taps-stride2", "float32"): "channels",
    ("16-channels-144-taps-stride2", "float64"): "channels",
}


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_direct_kernels_take_the_cases_meant_for_them(dtype):
    """The direct cases run the numpy impl's direct weight gradient in both dtypes, those
    with unit strides its direct grad_input too, and their forwards the kernels
    ``FORWARD_PATHS`` names, so that the reference comparisons above cover every path."""
    from gpuconv.kernels.numpy_impl import conv as numpy_conv, simd
    if simd.VECTOR_BYTES != 64:
        pytest.skip("the paths named are those of 64-byte vectors (AVX-512)")
    by_id = {c.id: c for c in CONV_CASES}
    for (case_id, case_dtype), path in FORWARD_PATHS.items():
        if case_dtype != dtype:
            continue
        case = by_id[case_id]
        x, w, _ = case.arrays(dtype)
        y = conv2d(x, w, None, **case.args(), impl="reference")
        pairs = [(a, a) if isinstance(a, int) else a
                 for a in (case.stride, case.padding, case.dilation)]
        # The ops' own view of the geometry, which keeps its choices per dtype.
        view = numpy_conv._view(x.shape, w.shape, *pairs, 1, y.shape[2:])
        assert numpy_conv._forward_path(view, np.dtype(dtype)) == path, case.id
        if case in DIRECT_CASES:
            assert numpy_conv._direct_fits(view, np.dtype(dtype), grad_weight=True), case.id
            unit_strides = case.stride == 1
            assert numpy_conv._direct_grad_input_fits(view, np.dtype(dtype)) == unit_strides


def test_a_geometry_has_one_view_and_relu_makes_another():
    from gpuconv.kernels.numpy_impl import conv as numpy_conv
    geometry = ((2, 3, 9, 9), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, (9, 9))
    view = numpy_conv._view(*geometry)
    assert numpy_conv._view(*(list(a) if isinstance(a, tuple) else a for a in geometry)) is view
    relu = numpy_conv._view(*geometry, relu=True)
    assert relu is not view and relu.relu and not view.relu


def test_one_geometry_in_both_dtypes_runs_each_dtypes_kernels(numpy_conv_limits):
    """The direct kernels' fits differ by dtype (K of one float64 vector is half a float32
    one, and so is a row of 3/4 of it); the view asked in float64 first keeps its choices
    apart from float32's, whose backward then matches the reference too."""
    from gpuconv.kernels.numpy_impl import simd
    numpy_conv = numpy_conv_limits
    lanes = simd.lanes(np.float64)
    k, h, w_ = lanes, 12, 3 * lanes // 4
    view = numpy_conv._view((2, 3, h, w_), (k, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, (h, w_))
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert numpy_conv._direct_fits(view, f64, grad_weight=True)
    assert not numpy_conv._direct_fits(view, f32, grad_weight=True)
    assert numpy_conv._direct_grad_input_fits(view, f64)
    assert not numpy_conv._direct_grad_input_fits(view, f32)
    rng = rng_for("one geometry, both dtypes")
    x, w, gy = (rng.standard_normal(shape) for shape in
                ((2, 3, h, w_), (k, 3, 3, 3), (2, k, h, w_)))
    for dtype in ("float64", "float32"):
        a = [t.astype(dtype) for t in (gy, x, w)]
        _assert_grads_close(conv2d_backward(*a, None, padding=1, impl="numpy"),
                            conv2d_backward(*a, None, padding=1, impl="reference"), dtype)


def _assert_same_nans_and_close(got, want, dtype, what):
    assert np.isnan(want).any() and not np.isinf(want).any(), what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    ok = ~np.isnan(want)
    assert_close(got[ok], want[ok], dtype, what)


@pytest.mark.parametrize("case", DIRECT_CASES, ids=_ids(DIRECT_CASES))
def test_numpy_direct_kernels_give_the_same_bits_on_any_thread_count(case, monkeypatch):
    """The direct forward and grad_input split the batch by images, each image's sums in
    one order: 1, 2 and 3 threads give the same bits. (The weight gradient's per-range
    partials depend on the ranges, as the GEMM path's do.)"""
    from gpuconv import threads
    monkeypatch.setattr(threads, "MIN_TASK_MACS", 16)    # a range per image or two
    x, w, b = case.arrays("float32")
    x = np.concatenate([x] * 3)                # at least three images
    gy = rng_for(case.id, "bits").standard_normal(
        conv2d(x, w, b, **case.args(), impl="reference").shape).astype(np.float32)
    before = threads.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            threads.set_num_threads(n)
            results.append((conv2d(x, w, b, **case.args(), impl="numpy"),
                            conv2d_backward(gy, x, w, b, **case.args(),
                                            output_mask=(True, False, False),
                                            impl="numpy")[0]))
    finally:
        threads.set_num_threads(before)
    for y, gx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(gx, results[0][1])


@pytest.mark.parametrize("threads_n", [1, 3])
def test_numpy_direct_paths_keep_inf_and_nan_where_the_windows_put_them(threads_n,
                                                                       monkeypatch):
    """An inf in the last row and column, which stride-2 windows skip, reaches neither the
    output nor the weight gradient; a NaN reaches exactly the outputs and weight-gradient
    taps whose windows read it; the pixels a row's last block computes past OW are never
    stored. Compared with the reference, NaN for NaN, on one thread and on three (images
    split between tasks)."""
    from gpuconv import threads
    monkeypatch.setattr(threads, "MIN_TASK_MACS", 16)    # one range per image
    rng = rng_for("direct-special")
    x = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    x[:, :, -1, :] = np.inf
    x[:, :, :, -1] = np.inf
    x[1, 2, 3, 4] = np.nan
    w = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    gy = rng.standard_normal((3, 16, 4, 4)).astype(np.float32)
    before = threads.get_num_threads()
    threads.set_num_threads(threads_n)
    try:
        y = conv2d(x, w, b, stride=2, padding=1, impl="numpy")
        _, gw, _ = conv2d_backward(gy, x, w, b, stride=2, padding=1,
                                   output_mask=(False, True, False), impl="numpy")
    finally:
        threads.set_num_threads(before)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    want_y = conv2d(x64, w64, b.astype(np.float64), stride=2, padding=1, impl="reference")
    _, want_gw, _ = conv2d_backward(gy.astype(np.float64), x64, w64, None, stride=2,
                                    padding=1, impl="reference")
    _assert_same_nans_and_close(y, want_y, "float32", "y")
    _assert_same_nans_and_close(gw, want_gw, "float32", "grad_weight")


@pytest.mark.parametrize("width, forward_path", [(16, "rows"), (17, "channels")])
@pytest.mark.parametrize("where", ["x", "w", "gy"])
def test_numpy_conv_with_unit_strides_puts_inf_and_nan_where_the_reference_does(
        where, width, forward_path):
    """A stride-1 convolution whose forward (along rows, or over channels), weight
    gradient and grad_input take the direct kernels (grad_input where the weight is
    finite): an inf or NaN in x, in the weight or in grad_output reaches exactly the
    outputs and gradients the reference's does (an inf weight must not meet grad_output's
    zero border)."""
    from gpuconv.kernels.numpy_impl import conv as numpy_conv
    rng = rng_for("direct-special-unit-" + where)
    x = rng.standard_normal((2, 4, 9, width)).astype(np.float32)
    w = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 16, 9, width)).astype(np.float32)
    view = numpy_conv._View(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1, (9, width))
    if numpy_conv.lanes(x.dtype) == 16:   # the paths of 64-byte vectors
        assert numpy_conv._forward_path(view, x.dtype) == forward_path
    arrays = {"x": x, "w": w, "gy": gy}
    arrays[where][0, 1, 2, 2] = np.inf
    arrays[where][1, 2, 1, 0] = np.nan
    with np.errstate(invalid="ignore"):   # NumPy's matmul warns of the NaN it makes
        got = (conv2d(x, w, None, padding=1, impl="numpy"),
               *conv2d_backward(gy, x, w, None, padding=1, impl="numpy")[:2])
        want = (conv2d(*(a.astype(np.float64) for a in (x, w)), None, padding=1,
                       impl="reference"),
                *conv2d_backward(*(a.astype(np.float64) for a in (gy, x, w)), None,
                                 padding=1, impl="reference")[:2])
    for name, g, r in zip(("y", "grad_input", "grad_weight"), got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=name)
        np.testing.assert_array_equal(np.isinf(g), np.isinf(r), err_msg=name)
        finite = np.isfinite(r)
        assert_close(g[finite], r[finite], "float32", name)


BAND_CASES = [
    ConvCase("bands-3x3-pad1", 2, 3, (13, 9), 4, (3, 3), 1, 1),
    ConvCase("bands-stride2-dilation2-groups2", 1, 4, (15, 11), 6, (3, 2), 2, 2, 2, 2),
    ConvCase("bands-1x1-stride3-skips-rows", 1, 2, (14, 7), 3, (1, 1), 3, 0),
    ConvCase("bands-5x5-stride1-pad0", 1, 2, (12, 12), 3, (5, 5), 1, 0, (2, 1)),
    # Padding wider than the kernel's reach: some bands hold no input row at all.
    ConvCase("bands-1x1-pad3", 1, 2, (5, 6), 3, (1, 1), 1, 3),
    ConvCase("bands-3x3-pad4-stride2", 2, 3, (4, 5), 2, (3, 3), 2, 4),
]


@pytest.mark.parametrize("threads_n", [1, 3])
@pytest.mark.parametrize("case", BAND_CASES, ids=_ids(BAND_CASES))
def test_numpy_conv_in_bands_of_one_image_matches_the_reference(case, threads_n,
                                                               numpy_conv_limits, monkeypatch):
    """An image whose column matrix is too large runs in bands of output rows (grad_input
    with each band's halo); every pass and the transposed convolution match the reference,
    on one thread and on three."""
    from gpuconv import threads
    numpy_conv = numpy_conv_limits
    monkeypatch.setattr(numpy_conv, "_DIRECT_MAX_IMAGE_BYTES", 0)  # the GEMM path, in bands
    monkeypatch.setattr(numpy_conv, "_CHUNK_BYTES", 1)       # bands of one output row ...
    monkeypatch.setattr(numpy_conv, "_BAND_ABOVE_BYTES", 1)  # ... for every image
    monkeypatch.setattr(numpy_conv, "_BAND_PER_HALO", 1)     # (grad_input: as many as its halo)
    before = threads.get_num_threads()
    threads.set_num_threads(threads_n)
    try:
        x, w, b = case.arrays()
        y = conv2d(x, w, b, **case.args(), impl="reference")
        gy = rng_for(case.id + "gy").standard_normal(y.shape)
        assert_close(conv2d(x, w, b, **case.args(), impl="numpy"), y, "float64", "y")
        got = conv2d_backward(gy, x, w, b, **case.args(), impl="numpy")
        want = conv2d_backward(gy, x, w, b, **case.args(), impl="reference")
        _assert_grads_close(got, want, "float64")
        wt = rng_for(case.id + "wt").standard_normal((case.k, case.c // case.groups) + case.kernel)
        t_args = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                      groups=case.groups)
        assert_close(conv_transpose2d(gy, wt, None, **t_args, impl="numpy"),
                     conv_transpose2d(gy, wt, None, **t_args, impl="reference"), "float64")
    finally:
        threads.set_num_threads(before)


@pytest.mark.parametrize("threads_n", [1, 3])
def test_numpy_depthwise_grad_weight_over_row_blocks_flushes_and_tasks(threads_n, monkeypatch):
    """The depthwise grad_weight sums lanes over blocks of wide rows (a partial last block
    here: 70 wide rows of 72, blocks of 3), moves them to float64 every few images (13
    images: several flushes), on channel ranges split between tasks (multiplier 2), in both
    the unit-stride runs (which take the lanes when the input holds an inf; here in the
    last channel, whose weight gradient is inf or NaN) and the strided rows; with unit
    strides and a finite input, it sums dot products over runs of the planes."""
    from gpuconv import threads
    monkeypatch.setattr(threads, "MIN_TASK_MACS", 16)
    before = threads.get_num_threads()
    threads.set_num_threads(threads_n)
    try:
        for stride, inf in ((1, False), (1, True), (2, False)):
            case = ConvCase(f"dw-blocks-s{stride}", 13, 3, (70, 70), 6, (3, 3), stride, 1, 1, 3)
            x, w, _ = case.arrays("float64")
            if inf:
                x[5, 2, 30, 40] = np.inf
            gy = conv2d(x, w, None, **case.args(), impl="reference")
            gy = rng_for(case.id, "gy").standard_normal(gy.shape)
            (_, got), (_, want) = (
                conv2d_backward(gy, x, w, None, **case.args(), output_mask=(False, True, False),
                                impl=impl)[:2] for impl in ("numpy", "reference"))
            finite = slice(0, 4) if inf else slice(None)   # (0, 4): input channels 0, 1
            assert_close(got[finite], want[finite], "float64")
            np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finally:
        threads.set_num_threads(before)


def test_numpy_conv_on_several_threads_is_deterministic():
    """Each tile writes its own rows and the grad_weight partials are added in task order:
    the same call twice on three threads gives the same bits."""
    from gpuconv import threads
    case = ConvCase("threads", 24, 6, (14, 14), 8, (5, 5))
    x, w, b = (a.astype(np.float32) for a in case.arrays())
    gy = rng_for("threads-gy").standard_normal((24, 8, 10, 10)).astype(np.float32)
    before = threads.get_num_threads()
    threads.set_num_threads(3)
    try:
        runs = [conv2d_backward(gy, x, w, b, impl="numpy") for _ in range(3)]
    finally:
        threads.set_num_threads(before)
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert np.array_equal(got, first)


def test_numpy_conv2d_on_a_large_image_keeps_its_working_memory_bounded():
    """(1, 3, 512, 512) with a 3x3 kernel: the whole image's column matrix would be 28 MiB;
    in bands, what the forward allocates beside its 8 MiB output (tracemalloc's peak, which
    sees NumPy's buffers) stays under 8 MiB on two threads."""
    import tracemalloc
    from gpuconv import threads
    x = rng_for("large").standard_normal((1, 3, 512, 512)).astype(np.float32)
    w = rng_for("large-w").standard_normal((8, 3, 3, 3)).astype(np.float32)
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    try:
        conv2d(x[:, :, :64, :64], w, padding=1, impl="numpy")   # compile outside the trace
        tracemalloc.start()
        y = conv2d(x, w, padding=1, impl="numpy")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        threads.set_num_threads(before)
    assert peak - y.nbytes < 8 << 20, f"{(peak - y.nbytes) / 2**20:.1f} MiB beside the output"
    assert_close(y, conv2d(x.astype(np.float64), w.astype(np.float64), padding=1,
                           impl="numpy"), "float32")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_numpy_conv2d_peak_memory_on_a_2048_image_is_at_most_1_2x_torch():
    """Issue 13's bound: conv2d forward on (1, 3, 2048, 2048) with a 3x3 kernel (16 output
    channels, padding 1, float32, two threads) raises the peak resident set of a fresh
    process by at most 1.2x what PyTorch's CPU convolution does (the 256 MiB output counts
    for both; the whole image's column matrix alone would be 432 MiB)."""
    pytest.importorskip("torch")
    from gpuconv.benchmark.peak_memory import conv2d_peak
    peaks = {impl: conv2d_peak(impl, (1, 3, 2048, 2048), (16, 3, 3, 3), 1, 2)["peak_rss_rise"]
             for impl in ("numpy", "torch")}
    assert peaks["numpy"] <= 1.2 * peaks["torch"], {k: v / 2**20 for k, v in peaks.items()}


# --------------------------------------------------------------------------- reference vs oracles

def _scipy_conv2d(x, w, b, stride, padding, dilation, groups):
    """conv2d from scipy.signal.correlate: one 2-d correlation per (image, out, in channel)
    with the dilated kernel, then the stride by slicing."""
    signal = pytest.importorskip("scipy.signal")
    kernel = w.shape[2:]
    stride = (stride,) * 2 if isinstance(stride, int) else stride
    dilation = (dilation,) * 2 if isinstance(dilation, int) else dilation
    if padding == "same":   # PyTorch: the odd one out of d*(k-1) goes to the bottom/right
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        pads = [(t // 2, t - t // 2) for t in totals]
    elif padding == "valid":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [(p, p) for p in ((padding,) * 2 if isinstance(padding, int) else padding)]
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    wd = np.zeros(w.shape[:2] + tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel)))
    wd[:, :, ::dilation[0], ::dilation[1]] = w
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    y = []
    for n in range(x.shape[0]):
        planes = []
        for o in range(w.shape[0]):
            g = o // kg
            acc = sum(signal.correlate(xp[n, g * cg + c], wd[o, c], mode="valid")
                      for c in range(cg))
            planes.append(acc[::stride[0], ::stride[1]] + (0 if b is None else b[o]))
        y.append(planes)
    return np.array(y)


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv2d_reference_matches_scipy_correlate(case):
    x, w, b = case.arrays()
    out = conv2d(x, w, b, **case.args(), impl="reference")
    assert_close(out, _scipy_conv2d(x, w, b, **case.args()), "float64")


ADJOINT_CASES = [c for c in TRANSPOSE_CASES if c.id != "outpad-below-dilation"]


@pytest.mark.parametrize("case", ADJOINT_CASES, ids=_ids(ADJOINT_CASES))
def test_conv_transpose2d_reference_is_adjoint_of_conv2d(case):
    """<conv2d(z, w), x> == <z, conv_transpose2d(x, w)> for every z of the output's shape."""
    x, w, _ = case.arrays()
    y = conv_transpose2d(x, w, None, **case.args(), impl="reference")
    z = rng_for(case.id, "z").standard_normal(y.shape)
    cz = conv2d(z, w, None, case.stride, case.padding, case.dilation, case.groups, impl="reference")
    assert cz.shape == x.shape
    lhs, rhs = np.vdot(cz, x), np.vdot(z, y)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
def test_conv_transpose2d_reference_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b = case.arrays()
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
        **case.args()).numpy()
    assert_close(conv_transpose2d(x, w, b, **case.args(), impl="reference"), want, "float64")


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c.padding == "same"],
                         ids=_ids([c for c in CONV_CASES if c.padding == "same"]))
def test_conv2d_same_padding_matches_torch(case):
    """PyTorch puts the odd row/column of 'same' padding at the bottom/right."""
    torch = pytest.importorskip("torch")
    x, w, b = case.arrays()
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                      torch.from_numpy(b) if b is not None else None,
                                      **case.args()).numpy()
    assert_close(conv2d(x, w, b, **case.args(), impl="reference"), want, "float64")


# --------------------------------------------------------------------------- finite differences

def _check_backward_by_fd(forward, backward, op, x, w, b, args, impl):
    """The impl's backward against central differences of its forward, with the scalar
    sum(forward(x, w, b) * gy) for a random gy; inputs go to the impl's device each call."""
    def run(fn, *arrays):
        return fn(*on_device_of(impl, op, *arrays), **args, impl=impl)

    gy = rng_for("fd-gy", x.shape, w.shape).standard_normal(_np(run(forward, x, w, b)).shape)
    gx, gw, gb = run(backward, gy, x, w, b)
    inputs = {"input": x, "weight": w} | ({} if b is None else {"bias": b})
    analytic = {"input": _np(gx), "weight": _np(gw), "bias": _np(gb)}
    check_grads(lambda: float(np.sum(_np(run(forward, x, w, b)) * gy)), analytic, inputs)


@pytest.mark.parametrize("case", SMALL_CONV_CASES, ids=_ids(SMALL_CONV_CASES))
@pytest.mark.parametrize("impl", impl_params("conv2d_backward", include_reference=True))
def test_conv2d_backward_matches_finite_differences(impl, case):
    x, w, b = case.arrays()
    _check_backward_by_fd(conv2d, conv2d_backward, "conv2d_backward", x, w, b, case.args(),
                          impl)


@pytest.mark.parametrize("case", SMALL_TRANSPOSE_CASES, ids=_ids(SMALL_TRANSPOSE_CASES))
@pytest.mark.parametrize("impl", impl_params("conv_transpose2d_backward", include_reference=True))
def test_conv_transpose2d_backward_matches_finite_differences(impl, case):
    x, w, b = case.arrays()
    _check_backward_by_fd(conv_transpose2d, conv_transpose2d_backward,
                          "conv_transpose2d_backward", x, w, b, case.args(), impl)


# --------------------------------------------------------------------------- drawn shapes

@st.composite
def drawn_conv(draw):
    groups, cg, kg = (draw(st.integers(1, 3)) for _ in range(3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 9))
               for d, k, p in zip(dilation, kernel, padding))
    return ConvCase(f"drawn-{draw(st.integers(0, 2**31))}", draw(st.integers(1, 3)), groups * cg,
                    hw, groups * kg, kernel, stride, padding, dilation, groups,
                    draw(st.booleans()))


@pytest.mark.parametrize("impl", impl_params("conv2d"))
@settings(max_examples=15)
@given(case=drawn_conv())
def test_conv2d_matches_reference_on_drawn_shapes(impl, case):
    x, w, b = case.arrays()
    assert_close(conv2d(*on_device_of(impl, "conv2d", x, w, b), **case.args(), impl=impl),
                 conv2d(x, w, b, **case.args(), impl="reference"), "float64")


@pytest.mark.parametrize("impl", impl_params("conv2d_backward"))
@settings(max_examples=15)
@given(case=drawn_conv())
def test_conv2d_backward_matches_reference_on_drawn_shapes(impl, case):
    x, w, b = case.arrays()
    out_shape = conv2d(x, w, b, **case.args(), impl="reference").shape
    gy = rng_for(case.id, "gy").standard_normal(out_shape)
    grads = conv2d_backward(*on_device_of(impl, "conv2d_backward", gy, x, w, b), **case.args(),
                            impl=impl)
    _assert_grads_close(grads, conv2d_backward(gy, x, w, b, **case.args(), impl="reference"),
                        "float64")


# --------------------------------------------------------------------------- conv1d

def _conv1d_oracle(x, w, b, stride, padding, dilation, groups):
    """y[n, o, l] = b[o] + sum_{c, j} x_pad[n, g*cg + c, l*stride + j*dilation] * w[o, c, j]."""
    k = w.shape[2]
    if padding == "same":
        total = dilation * (k - 1)
        pads = (total // 2, total - total // 2)
    else:
        pads = (padding, padding)
    xp = np.pad(x, ((0, 0), (0, 0), pads))
    out_len = (xp.shape[2] - dilation * (k - 1) - 1) // stride + 1
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    y = np.zeros((x.shape[0], w.shape[0], out_len))
    for o in range(w.shape[0]):
        g = o // kg
        for j in range(k):
            taps = xp[:, g * cg:(g + 1) * cg, j * dilation::stride][:, :, :out_len]
            y[:, o] += np.einsum("ncl,c->nl", taps, w[o, :, j])
        y[:, o] += 0 if b is None else b[o]
    return y


def _conv1d_id(args):
    return "-".join(f"{k}{v}" for k, v in args.items())


CONV1D_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=2, dilation=3, groups=2),
    dict(stride=1, padding="same", dilation=1, groups=1),
    dict(stride=3, padding=1, dilation=1, groups=4),
]


@pytest.mark.parametrize("args", CONV1D_CASES, ids=_conv1d_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", impl_params("conv2d", include_reference=True))
def test_conv1d_matches_oracle(impl, dtype, args):
    rng = rng_for("conv1d", str(args))
    x = rng.standard_normal((2, 4, 13))
    w = rng.standard_normal((4, 4 // args["groups"], 4))
    b = rng.standard_normal(4)
    out = conv1d(*on_device_of(impl, "conv2d", x.astype(dtype), w.astype(dtype), b.astype(dtype)),
                 **args, impl=impl)
    assert out.dtype == np.dtype(dtype) and out.ndim == 3
    assert_close(out, _conv1d_oracle(x, w, b, **args), dtype)


@pytest.mark.parametrize("args", CONV1D_CASES, ids=_conv1d_id)
@pytest.mark.parametrize("impl", impl_params("conv2d_backward", include_reference=True))
def test_conv1d_backward_matches_finite_differences(impl, args):
    rng = rng_for("conv1d-fd", str(args))
    x = rng.standard_normal((2, 4, 7))
    w = rng.standard_normal((4, 4 // args["groups"], 2))
    b = rng.standard_normal(4)
    _check_backward_by_fd(conv1d, conv1d_backward, "conv2d_backward", x, w, b, args, impl)


@pytest.mark.parametrize("impl", impl_params("conv2d_backward", include_reference=True))
def test_conv2d_backward_of_an_empty_batch_is_zero(impl):
    x, w = np.ones((0, 2, 5, 5)), np.ones((3, 2, 3, 3))
    gx, gw, gb = conv2d_backward(*on_device_of(impl, "conv2d_backward", np.ones((0, 3, 3, 3)),
                                               x, w, np.ones(3)), impl=impl)
    assert gx.shape == x.shape
    assert np.array_equal(_np(gw), np.zeros_like(w)) and np.array_equal(_np(gb), np.zeros(3))


# Pairwise over the three flags: each alone, each pair, and none.
OUTPUT_MASKS = [(True, False, False), (False, True, False), (False, False, True),
                (True, True, False), (False, True, True), (True, False, True),
                (False, False, False)]


# Each mask on one of a dilated, a depthwise and a 'same'-with-even-kernel case, in turn.
MASK_CASES = [(mask, CONV_CASES[(2, 3, 6)[i % 3]]) for i, mask in enumerate(OUTPUT_MASKS)]


@pytest.mark.parametrize("mask, case", MASK_CASES, ids=[
    "".join("xwb"[i] if f else "-" for i, f in enumerate(m)) + "-" + c.id for m, c in MASK_CASES])
@pytest.mark.parametrize("impl", impl_params("conv2d_backward", include_reference=True))
def test_conv2d_backward_computes_exactly_the_gradients_in_output_mask(impl, mask, case):
    x, w, b = case.arrays("float64")
    gy = rng_for(case.id, "gy").standard_normal(conv2d(x, w, b, **case.args()).shape)
    args = on_device_of(impl, "conv2d_backward", gy, x, w, b)
    full = conv2d_backward(*args, **case.args(), impl=impl)
    part = conv2d_backward(*args, **case.args(), output_mask=mask, impl=impl)
    for name, need, got, want in zip(("grad_input", "grad_weight", "grad_bias"), mask, part,
                                     full):
        if need:
            assert_close(got, want, "float64", name)
        else:
            assert got is None, f"{name} was computed though output_mask={mask}"


def test_conv1d_backward_without_bias_returns_none():
    x, w = np.ones((1, 2, 5)), np.ones((3, 2, 2))
    gx, gw, gb = conv1d_backward(np.ones((1, 3, 4)), x, w)
    assert gb is None and gx.shape == x.shape and gw.shape == w.shape


# --------------------------------------------------------------------------- layouts

def _strided(a):
    """The same values as ``a`` in a negatively strided, non-contiguous view."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a[..., ::-1]
    return big[..., -2::-2]


@pytest.mark.parametrize("impl", impl_params("conv2d_backward", include_reference=True))
def test_conv2d_accepts_non_contiguous_and_negative_strides(impl):
    case = CONV_CASES[1]
    x, w, b = case.arrays("float32")
    gy = rng_for("layout").standard_normal((1, 6, 5, 5)).astype("float32")
    assert not _strided(x).flags.c_contiguous and _strided(x).strides[-1] < 0
    args = on_device_of(impl, "conv2d_backward", gy, x, w, b)
    views = on_device_of(impl, "conv2d_backward", *map(_strided, (gy, x, w, b)))
    want = (conv2d(*args[1:], **case.args(), impl=impl),
            *conv2d_backward(*args, **case.args(), impl=impl))
    got = (conv2d(*views[1:], **case.args(), impl=impl),
           *conv2d_backward(*views, **case.args(), impl=impl))
    for g, ref in zip(got, want):
        assert_close(g, ref, "float32")


@pytest.mark.parametrize("impl", impl_params("conv_transpose2d_backward", include_reference=True))
def test_conv_transpose2d_accepts_non_contiguous_and_negative_strides(impl):
    case = TRANSPOSE_CASES[1]
    x, w, b = case.arrays("float32")
    gy = rng_for("layout-t").standard_normal(
        conv_transpose2d(x, w, b, **case.args(), impl="reference").shape).astype("float32")
    args = on_device_of(impl, "conv_transpose2d_backward", gy, x, w, b)
    views = on_device_of(impl, "conv_transpose2d_backward", *map(_strided, (gy, x, w, b)))
    want = (conv_transpose2d(*args[1:], **case.args(), impl=impl),
            *conv_transpose2d_backward(*args, **case.args(), impl=impl))
    got = (conv_transpose2d(*views[1:], **case.args(), impl=impl),
           *conv_transpose2d_backward(*views, **case.args(), impl=impl))
    for g, ref in zip(got, want):
        assert_close(g, ref, "float32")


# --------------------------------------------------------------------------- validation

X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 2, 3, 3))
WT = np.zeros((4, 3, 3, 3))

INVALID = [
    ("input-rank", lambda: conv2d(X[0, 0], W), ValueError, "input must have 3 or 4 dimensions"),
    ("weight-rank", lambda: conv2d(X, W[0]), ValueError, "weight must have 4 dimensions"),
    ("bias-rank", lambda: conv2d(X, W, np.zeros((6, 1)), groups=2), ValueError,
     "bias must have 1 dimensions"),
    ("bias-length", lambda: conv2d(X, W, np.zeros(5), groups=2), ValueError,
     r"bias must have shape \(6,\)"),
    ("empty-spatial-input", lambda: conv2d(X[:, :, :0], W, padding=2, groups=2), ValueError,
     "has an empty spatial dimension"),
    ("no-output-channels", lambda: conv2d(X, W[:0], groups=2), ValueError,
     "has no output channels"),
    ("conv1d-input-rank", lambda: conv1d(X, W), ValueError, "input must have 2 or 3 dimensions"),
    ("channels-mismatch", lambda: conv2d(X, W), ValueError, "input has 4 channels"),
    ("out-channels-not-divisible", lambda: conv2d(X, np.zeros((6, 1, 3, 3)), groups=4), ValueError,
     r"output channels \(weight.shape\[0\]\) \(6\) must be divisible by groups"),
    ("in-channels-not-divisible", lambda: conv2d(X, np.zeros((6, 4, 3, 3)), groups=3), ValueError,
     r"input channels \(4\) must be divisible by groups"),
    ("groups-zero", lambda: conv2d(X, W, groups=0), ValueError, "groups must be a positive int"),
    ("kernel-larger-than-padded-input", lambda: conv2d(X, np.zeros((6, 4, 7, 3))), ValueError,
     "spans more than the padded input"),
    ("dilated-kernel-larger", lambda: conv2d(X, np.zeros((6, 4, 3, 3)), padding=1, dilation=4),
     ValueError, "spans more than the padded input"),
    ("stride-zero", lambda: conv2d(X, W, stride=0, groups=2), ValueError, "stride must be >= 1"),
    # An array where an int belongs is named by its shape, not printed whole.
    ("stride-an-array", lambda: conv2d(X, W, stride=np.ones((40, 40), np.int64), groups=2),
     TypeError, r"stride must be an int or a sequence of 2 ints, got an array of shape "
                r"\(40, 40\) and dtype int64$"),
    ("dilation-zero", lambda: conv2d(X, W, dilation=(1, 0), groups=2), ValueError,
     "dilation must be >= 1"),
    ("negative-padding", lambda: conv2d(X, W, padding=-1, groups=2), ValueError,
     "padding must be >= 0"),
    ("bad-padding-string", lambda: conv2d(X, W, padding="full", groups=2), ValueError,
     "padding must be an int, a sequence of 2 ints, 'valid' or 'same'"),
    ("same-with-stride", lambda: conv2d(X, W, stride=2, padding="same", groups=2), ValueError,
     "padding='same' needs stride 1"),
    ("integer-input", lambda: conv2d(X.astype(np.int64), W, groups=2), TypeError,
     "input must have a floating-point dtype"),
    ("complex-weight", lambda: conv2d(X, W.astype(np.complex128), groups=2), TypeError,
     "weight must have a floating-point dtype"),
    ("dtype-mismatch", lambda: conv2d(X, W.astype(np.float32), groups=2), TypeError,
     "weight has dtype float32 but input has dtype float64"),
    ("grad-output-shape", lambda: conv2d_backward(np.zeros((2, 6, 3, 3)), X, W, groups=2),
     ValueError, r"grad_output must have shape \(2, 6, 4, 4\)"),
    ("output-mask-length", lambda: conv2d_backward(np.zeros((2, 6, 4, 4)), X, W, groups=2,
                                                   output_mask=(True, False)),
     ValueError, r"output_mask must be three bools \(input, weight, bias\)"),
    ("output-padding-too-large", lambda: conv_transpose2d(X, WT, stride=2, output_padding=2),
     ValueError, "output_padding .* must be smaller than either stride"),
    ("transpose-channels-mismatch", lambda: conv_transpose2d(X, np.zeros((3, 3, 3, 3))), ValueError,
     "input has 4 channels"),
    ("transpose-padding-string", lambda: conv_transpose2d(X, WT, padding="same"), ValueError,
     "no 'same'/'valid'"),
    ("transpose-output-not-positive", lambda: conv_transpose2d(X[:, :, :1, :1], WT, padding=2),
     ValueError, "output size .* is not positive"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()
