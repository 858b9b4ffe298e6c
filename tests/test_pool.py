"""Max, average and adaptive average pooling (1D and 2D) and their backward: every impl
against the reference, the reference against PyTorch when installed, gradients against
finite differences, PyTorch's tie and NaN rule for max-pool indices, and argument validation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from support import assert_close, check_grads, impl_params, on_device_of, rng_for

from gpuconv import backend
from gpuconv.functional import (adaptive_avg_pool1d, adaptive_avg_pool1d_backward,
                                adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool1d,
                                avg_pool1d_backward, avg_pool2d, avg_pool2d_backward, max_pool1d,
                                max_pool1d_backward, max_pool2d, max_pool2d_backward)

DTYPES = ("float64", "float32")


# --------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class PoolCase:
    """One call of a pooling op: the input shape and the keyword arguments after it."""

    id: str
    shape: tuple
    kwargs: dict = field(default_factory=dict)

    def x(self):
        return rng_for(self.id).standard_normal(self.shape)

    def tie_free_x(self):
        """Distinct values spaced 1 apart, so a finite-difference step never moves an argmax."""
        n = int(np.prod(self.shape))
        return rng_for(self.id, "perm").permutation(n).reshape(self.shape).astype(np.float64)


def _case(id, shape, **kwargs):
    return pytest.param(PoolCase(id, shape, kwargs), id=id)


MAX2D = [
    _case("k2-default-stride", (2, 3, 8, 8), kernel_size=2),
    _case("k3-s2-p1-batch1-odd", (1, 2, 7, 9), kernel_size=3, stride=2, padding=1),
    _case("rect-ceil-hanging", (2, 1, 9, 7), kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
          ceil_mode=True),
    _case("dilation2", (1, 3, 10, 11), kernel_size=3, stride=2, padding=1, dilation=2),
    _case("stride-gt-kernel-ceil-mixed-dilation", (2, 2, 6, 7), kernel_size=2, stride=3,
          padding=1, dilation=(2, 1), ceil_mode=True),
    _case("k4-s3-p2-ceil", (3, 2, 5, 5), kernel_size=4, stride=3, padding=2, ceil_mode=True),
    _case("height1", (1, 1, 1, 9), kernel_size=(1, 3), stride=(1, 2), padding=(0, 1),
          ceil_mode=True),
    _case("k1-s2", (2, 2, 5, 6), kernel_size=1, stride=2),
    _case("unbatched-overlap", (3, 6, 5), kernel_size=3, stride=1, padding=1),
]
MAX1D = [
    _case("1d-k3-s2-p1-d2-ceil", (2, 3, 11), kernel_size=3, stride=2, padding=1, dilation=2,
          ceil_mode=True),
    _case("1d-k2-p1-batch1", (1, 2, 9), kernel_size=2, padding=1),
    _case("1d-unbatched-k4-s3-ceil", (3, 10), kernel_size=4, stride=3, padding=2, ceil_mode=True),
]
AVG2D = [
    _case("k2-default-stride", (2, 3, 8, 8), kernel_size=2),
    _case("k3-s2-p1-exclude-pad-batch1", (1, 2, 7, 9), kernel_size=3, stride=2, padding=1,
          count_include_pad=False),
    _case("rect-ceil-hanging", (2, 1, 9, 7), kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
          ceil_mode=True),
    _case("ceil-exclude-pad", (2, 2, 6, 7), kernel_size=3, stride=2, padding=1, ceil_mode=True,
          count_include_pad=False),
    _case("k4-s3-p2-ceil-past-padded-edge", (3, 2, 5, 5), kernel_size=4, stride=3, padding=2,
          ceil_mode=True),
    _case("divisor-override", (1, 2, 5, 6), kernel_size=3, stride=2, padding=1,
          divisor_override=5),
    _case("height1", (1, 1, 1, 9), kernel_size=(1, 3), stride=(1, 2), padding=(0, 1),
          ceil_mode=True),
    _case("unbatched-overlap", (3, 6, 5), kernel_size=3, stride=1, padding=1,
          count_include_pad=False),
]
AVG1D = [
    _case("1d-k3-s2-p1-ceil-exclude-pad", (2, 3, 11), kernel_size=3, stride=2, padding=1,
          ceil_mode=True, count_include_pad=False),
    _case("1d-unbatched-k4-s3-ceil", (3, 10), kernel_size=4, stride=3, padding=2, ceil_mode=True),
]
ADAPTIVE2D = [
    _case("uneven", (2, 3, 7, 9), output_size=(3, 4)),
    _case("global-batch1", (1, 2, 5, 5), output_size=1),
    _case("keep-height", (2, 1, 6, 4), output_size=(None, 3)),
    _case("larger-than-input", (1, 2, 3, 5), output_size=(7, 8)),
    _case("unbatched", (3, 6, 6), output_size=(2, 2)),
]
ADAPTIVE1D = [
    _case("1d-uneven", (2, 3, 10), output_size=4),
    _case("1d-unbatched-larger", (2, 3), output_size=5),
]

# Each public family: its forward, its backward and its cases.
FAMILIES = {
    "max_pool2d": (max_pool2d, max_pool2d_backward, MAX2D),
    "max_pool1d": (max_pool1d, max_pool1d_backward, MAX1D),
    "avg_pool2d": (avg_pool2d, avg_pool2d_backward, AVG2D),
    "avg_pool1d": (avg_pool1d, avg_pool1d_backward, AVG1D),
    "adaptive_avg_pool2d": (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, ADAPTIVE2D),
    "adaptive_avg_pool1d": (adaptive_avg_pool1d, adaptive_avg_pool1d_backward, ADAPTIVE1D),
}
# The registered op that carries each public family (1D ops run as 2D ops).
REGISTERED = {"max_pool2d": "max_pool2d", "max_pool1d": "max_pool2d",
              "avg_pool2d": "avg_pool2d", "avg_pool1d": "avg_pool2d",
              "adaptive_avg_pool2d": "adaptive_avg_pool2d",
              "adaptive_avg_pool1d": "adaptive_avg_pool2d"}


def _family_cases():
    return [pytest.param(name, p.values[0], id=f"{name}-{p.id}")
            for name, (_, _, cases) in FAMILIES.items() for p in cases]


def _impl_family_cases(suffix="", include_reference=False):
    """(impl, family, case) for every impl of every family's registered op (+ suffix)."""
    params = []
    for name, (_, _, cases) in FAMILIES.items():
        for impl in impl_params(REGISTERED[name] + suffix, include_reference=include_reference):
            for p in cases:
                params.append(pytest.param(impl.values[0], name, p.values[0],
                                           marks=impl.marks, id=f"{impl.id}-{name}-{p.id}"))
    return params


def _forward(name, x, case, impl, **extra):
    return FAMILIES[name][0](x, **case.kwargs, **extra, impl=impl)


def _backward(name, g, x, case, impl):
    return FAMILIES[name][1](g, x, **case.kwargs, impl=impl)


def _is_max(name):
    return name.startswith("max")


# --------------------------------------------------------------------------- impl vs reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl,name,case", _impl_family_cases())
def test_forward_matches_reference(impl, name, case, dtype):
    x = case.x()
    extra = {"return_indices": True} if _is_max(name) else {}
    out = _forward(name, on_device_of(impl, REGISTERED[name], x.astype(dtype)), case, impl,
                   **extra)
    ref = _forward(name, x, case, "reference", **extra)
    if _is_max(name):
        (out, idx), (ref, ref_idx) = out, ref
        assert idx.dtype == np.int64
        np.testing.assert_array_equal(backend.to_numpy(idx), ref_idx)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl,name,case", _impl_family_cases("_backward"))
def test_backward_matches_reference(impl, name, case, dtype):
    x = case.x()
    g = rng_for(case.id, "grad").standard_normal(_forward(name, x, case, "reference").shape)
    xd, gd = on_device_of(impl, REGISTERED[name] + "_backward", x.astype(dtype), g.astype(dtype))
    out = _backward(name, gd, xd, case, impl)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, _backward(name, g, x, case, "reference"), dtype, f"{name} backward")


@pytest.mark.parametrize("impl", impl_params("max_pool2d_backward"))
@pytest.mark.parametrize("case", MAX2D)
def test_max_pool2d_backward_with_saved_indices_equals_recomputed(impl, case):
    x = on_device_of(impl, "max_pool2d_backward", case.x())
    out, idx = max_pool2d(x, **case.kwargs, return_indices=True, impl=impl)
    g = on_device_of(impl, "max_pool2d_backward",
                     rng_for(case.id, "grad").standard_normal(out.shape))
    saved = max_pool2d_backward(g, x, **case.kwargs, indices=idx, impl=impl)
    recomputed = max_pool2d_backward(g, x, **case.kwargs, impl=impl)
    np.testing.assert_array_equal(backend.to_numpy(saved), backend.to_numpy(recomputed))


@pytest.mark.parametrize("impl", impl_params("max_pool2d_backward", include_reference=True))
def test_max_pool2d_backward_is_bitwise_reproducible(impl):
    # Overlapping windows share maxima, so several gradients land on one input element.
    x = on_device_of(impl, "max_pool2d_backward",
                     rng_for("repro").standard_normal((2, 3, 17, 16)).astype(np.float32))
    out = max_pool2d(x, 3, 1, 1, impl=impl)
    g = on_device_of(impl, "max_pool2d_backward",
                     rng_for("repro", "g").standard_normal(out.shape).astype(np.float32))
    first = backend.to_numpy(max_pool2d_backward(g, x, 3, 1, 1, impl=impl))
    again = backend.to_numpy(max_pool2d_backward(g, x, 3, 1, 1, impl=impl))
    assert first.tobytes() == again.tobytes()


# --------------------------------------------------------------------------- PyTorch's rules

def _ties_and_nans():
    """Few distinct values (many ties), some NaN, a row of -inf, and zeros of both signs
    (equal, so the first of them wins)."""
    x = rng_for("ties").integers(0, 3, (2, 2, 9, 9)).astype(np.float64)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = x[0, 1, 3, 4] = x[0, 1, 0, 5] = np.nan
    x[1, 0, :2, :4] = [[-0.0, 0.0, 0.0, -0.0], [0.0, -0.0, -0.0, 0.0]]
    x[1, 1, 4:6, :] = -np.inf
    return x


TIE_WINDOWS = [dict(kernel_size=2), dict(kernel_size=2, stride=1, padding=1),
               dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=3, stride=1, dilation=2, ceil_mode=True)]


@pytest.mark.parametrize("impl", impl_params("max_pool2d"))
@pytest.mark.parametrize("window", TIE_WINDOWS)
def test_max_pool2d_ties_and_nan_pick_the_reference_index(impl, window):
    x = _ties_and_nans()
    out, idx = max_pool2d(on_device_of(impl, "max_pool2d", x), **window, return_indices=True,
                          impl=impl)
    ref, ref_idx = max_pool2d(x, **window, return_indices=True, impl="reference")
    np.testing.assert_array_equal(backend.to_numpy(idx), ref_idx)
    np.testing.assert_array_equal(backend.to_numpy(out), ref)


@pytest.mark.parametrize("window", TIE_WINDOWS)
def test_reference_max_pool2d_ties_and_nan_match_torch(window):
    torch = pytest.importorskip("torch")
    x = _ties_and_nans()
    out, idx = max_pool2d(x, **window, return_indices=True, impl="reference")
    t_out, t_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), **window,
                                                  return_indices=True)
    np.testing.assert_array_equal(idx, t_idx.numpy())
    np.testing.assert_array_equal(out, t_out.numpy())


@pytest.mark.parametrize("name,case", _family_cases())
def test_reference_matches_torch(name, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = case.x()
    xt = torch.from_numpy(x.copy()).requires_grad_()
    extra = {"return_indices": True} if _is_max(name) else {}
    ref = _forward(name, x, case, "reference", **extra)
    t_out = getattr(F, name)(xt, **case.kwargs, **extra)
    if _is_max(name):
        (ref, ref_idx), (t_out, t_idx) = ref, t_out
        np.testing.assert_array_equal(ref_idx, t_idx.numpy())
    assert_close(ref, t_out.detach().numpy(), "float64", name)
    g = rng_for(case.id, "grad").standard_normal(ref.shape)
    t_out.backward(torch.from_numpy(g))
    assert_close(_backward(name, g, x, case, "reference"), xt.grad.numpy(), "float64",
                 f"{name} backward")


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("impl,name,case", _impl_family_cases("_backward", include_reference=True))
def test_backward_matches_finite_differences(impl, name, case):
    backward_op = REGISTERED[name] + "_backward"
    # Max pooling is differentiable only away from ties: distinct values spaced 1 apart.
    x = case.tie_free_x() if _is_max(name) else case.x()
    g = rng_for(case.id, "grad").standard_normal(_forward(name, x, case, "reference").shape)

    def loss():
        return float(np.sum(_forward(name, x, case, "reference") * g))

    xd, gd = on_device_of(impl, backward_op, x, g)
    grad = backend.to_numpy(_backward(name, gd, xd, case, impl))
    check_grads(loss, {"input": grad}, {"input": x})


# --------------------------------------------------------------------------- layouts

@pytest.mark.parametrize("impl", impl_params("max_pool2d", include_reference=True))
def test_strided_input_matches_contiguous_copy(impl):
    base = rng_for("strided").standard_normal((3, 4, 11, 12))
    x = base[::-1, 1::2, ::-1, ::2]  # negative and non-unit strides on every axis
    xd = on_device_of(impl, "max_pool2d", x)
    kw = dict(kernel_size=3, stride=2, padding=1)
    out, idx = max_pool2d(xd, **kw, return_indices=True, impl=impl)
    ref, ref_idx = max_pool2d(np.ascontiguousarray(x), **kw, return_indices=True, impl="reference")
    np.testing.assert_array_equal(backend.to_numpy(idx), ref_idx)
    assert_close(out, ref, "float64", "max_pool2d")
    g = rng_for("strided", "g").standard_normal((*ref.shape[:3], 2 * ref.shape[3]))[..., ::-2]
    for fwd, bwd, kwargs in [(avg_pool2d, avg_pool2d_backward, {}),
                             (max_pool2d, max_pool2d_backward, {"indices": idx})]:
        assert_close(fwd(xd, **kw, impl=impl),
                     fwd(np.ascontiguousarray(x), **kw, impl="reference"), "float64",
                     fwd.__name__)
        assert_close(bwd(on_device_of(impl, "max_pool2d", g), xd, **kw, **kwargs, impl=impl),
                     bwd(np.ascontiguousarray(g), np.ascontiguousarray(x), **kw,
                         impl="reference"), "float64", bwd.__name__)
    assert_close(adaptive_avg_pool2d(xd, (4, 3), impl=impl),
                 adaptive_avg_pool2d(np.ascontiguousarray(x), (4, 3), impl="reference"),
                 "float64", "adaptive_avg_pool2d")


@pytest.mark.parametrize("impl", impl_params("max_pool2d", include_reference=True))
def test_empty_batch_gives_empty_results(impl):
    x = on_device_of(impl, "max_pool2d", np.zeros((0, 2, 5, 5)))
    g = on_device_of(impl, "max_pool2d", np.zeros((0, 2, 2, 2)))
    assert max_pool2d(x, 2, impl=impl).shape == (0, 2, 2, 2)
    assert max_pool2d_backward(g, x, 2, impl=impl).shape == (0, 2, 5, 5)
    assert avg_pool2d_backward(g, x, 2, impl=impl).shape == (0, 2, 5, 5)
    assert adaptive_avg_pool2d_backward(g, x, 2, impl=impl).shape == (0, 2, 5, 5)


# --------------------------------------------------------------------------- random shapes

@st.composite
def window_calls(draw, dilated: bool):
    """A valid 2D pooling call: input shape and keyword arguments."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    # Large enough that a window fits (and, dilated, never covers only padding).
    smallest = [max(1, (ki - 1) * di + 1 - 2 * pi + di) for ki, pi, di in zip(k, p, d)]
    hw = tuple(draw(st.integers(lo, lo + 8)) for lo in smallest)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + hw
    kwargs = dict(kernel_size=k, stride=s, padding=p, ceil_mode=draw(st.booleans()))
    if dilated:
        kwargs["dilation"] = d
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
    return shape, kwargs


@pytest.mark.parametrize("impl", impl_params("max_pool2d"))
@settings(max_examples=20)
@given(call=window_calls(dilated=True), seed=st.integers(0, 2**16))
def test_max_pool2d_random_shapes_match_reference(impl, call, seed):
    shape, kwargs = call
    x = np.random.default_rng(seed).standard_normal(shape)
    out, idx = max_pool2d(on_device_of(impl, "max_pool2d", x), **kwargs, return_indices=True,
                          impl=impl)
    ref, ref_idx = max_pool2d(x, **kwargs, return_indices=True, impl="reference")
    np.testing.assert_array_equal(backend.to_numpy(idx), ref_idx)
    assert_close(out, ref, "float64", "max_pool2d")


@pytest.mark.parametrize("impl", impl_params("avg_pool2d"))
@settings(max_examples=20)
@given(call=window_calls(dilated=False), seed=st.integers(0, 2**16))
def test_avg_pool2d_random_shapes_match_reference(impl, call, seed):
    shape, kwargs = call
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out = avg_pool2d(on_device_of(impl, "avg_pool2d", x), **kwargs, impl=impl)
    ref = avg_pool2d(x, **kwargs, impl="reference")
    assert_close(out, ref, "float64", "avg_pool2d")
    g = rng.standard_normal(ref.shape)
    assert_close(avg_pool2d_backward(on_device_of(impl, "avg_pool2d", g),
                                     on_device_of(impl, "avg_pool2d", x), **kwargs, impl=impl),
                 avg_pool2d_backward(g, x, **kwargs, impl="reference"), "float64",
                 "avg_pool2d backward")


# --------------------------------------------------------------------------- validation

X4 = np.zeros((1, 2, 6, 6))


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match=r"max_pool2d: input must have 3 or 4 dimensions"):
        max_pool2d(np.zeros((6, 6)), 2)
    with pytest.raises(ValueError, match=r"avg_pool1d: input must have 2 or 3 dimensions"):
        avg_pool1d(X4, 2)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match=r"max_pool2d: input must have a floating-point dtype"):
        max_pool2d(np.zeros((1, 2, 6, 6), dtype=np.int32), 2)


@pytest.mark.parametrize("kwargs,what", [(dict(kernel_size=0), "kernel_size"),
                                         (dict(kernel_size=2, stride=(1, 0)), "stride")])
def test_non_positive_kernel_or_stride_is_rejected(kwargs, what):
    with pytest.raises(ValueError, match=rf"avg_pool2d: {what} must be >= 1"):
        avg_pool2d(X4, **kwargs)


def test_padding_over_half_the_kernel_is_rejected():
    with pytest.raises(ValueError, match=r"max_pool2d: padding .* at most half of kernel_size"):
        max_pool2d(X4, 3, padding=2)


def test_negative_padding_is_rejected():
    with pytest.raises(ValueError, match=r"avg_pool2d: padding must be >= 0"):
        avg_pool2d(X4, 3, padding=-1)


def test_dilation_below_one_is_rejected():
    with pytest.raises(ValueError, match=r"max_pool1d: dilation must be >= 1"):
        max_pool1d(np.zeros((2, 8)), 2, dilation=0)


def test_window_larger_than_padded_input_is_rejected():
    with pytest.raises(ValueError, match=r"max_pool2d: input of shape .* too small .* output "
                                         r"would have height 0"):
        max_pool2d(np.zeros((1, 1, 3, 8)), 4)


def test_window_over_padding_only_is_rejected():
    # Taps at -1 and 3 both miss a 3-long input.
    with pytest.raises(ValueError, match=r"max_pool2d: window 0 .* covers only padding"):
        max_pool2d(np.zeros((1, 1, 3, 3)), 2, stride=1, padding=1, dilation=4)


@pytest.mark.parametrize("output_size", [0, (2, -1), (2, 2, 2), (3,)])
def test_invalid_adaptive_output_size_is_rejected(output_size):
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: output_size must be"):
        adaptive_avg_pool2d(X4, output_size)


def test_zero_divisor_override_is_rejected():
    with pytest.raises(ValueError, match=r"avg_pool2d: divisor_override must be non-zero"):
        avg_pool2d(X4, 2, divisor_override=0)


def test_indices_of_the_wrong_shape_are_rejected():
    g = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must have shape "
                                         r"\(1, 2, 3, 3\), got \(1, 2, 3, 2\)"):
        max_pool2d_backward(g, X4, 2, indices=np.zeros((1, 2, 3, 2), dtype=np.int64))


@pytest.mark.parametrize("bad", [36, -1])
def test_indices_outside_the_plane_are_rejected(bad):
    g = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must lie in \[0, 36\)"):
        max_pool2d_backward(g, X4, 2, indices=np.full((1, 2, 3, 3), bad, dtype=np.int64))


def test_grad_output_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: grad_output must have shape "
                                         r"\(1, 2, 3, 3\)"):
        avg_pool2d_backward(np.zeros((1, 2, 3, 4)), X4, 2)
