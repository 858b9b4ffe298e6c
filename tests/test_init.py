"""gpuconv.init: torch.nn.init's formulas, checked by statistics on large arrays.

Statistics use ~500k samples, where the sample std of a distribution is within ~0.2% of
its true value; the tests allow 1% (STAT_TOL).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from gpuconv import init
from gpuconv.nn import Parameter

STAT_TOL = 0.01
BIG = (512, 64, 4, 4)  # fan_in 1024, fan_out 8192, 524288 elements


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("nonlinearity, param, expected", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("conv_transpose2d", None, 1.0),
    ("sigmoid", None, 1.0), ("tanh", None, 5 / 3), ("relu", None, math.sqrt(2)),
    ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", math.sqrt(5), math.sqrt(2 / 6)), ("selu", None, 0.75),
])
def test_calculate_gain_matches_formula(nonlinearity, param, expected):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


def test_calculate_gain_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("shape, fans", [((3, 5), (5, 3)), ((8, 4, 3, 3), (36, 72)),
                                         ((6, 2, 7), (14, 42))])
def test_fan_in_and_fan_out(shape, fans):
    assert init.calculate_fan_in_and_fan_out(np.zeros(shape)) == fans


def test_fans_match_torch():
    torch = pytest.importorskip("torch")
    for shape in [(3, 5), (8, 4, 3, 3), (6, 2, 7)]:
        ours = init.calculate_fan_in_and_fan_out(np.zeros(shape))
        assert ours == torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


def test_fan_of_a_vector_is_an_error():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(np.zeros(5))


def test_integer_array_is_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        init.uniform_(np.zeros((3, 3), np.int32))


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(np.zeros((3, 3)), mode="fan_avg")


def _check_uniform(x: np.ndarray, bound: float) -> None:
    assert x.min() >= -bound and x.max() <= bound
    assert x.max() > 0.999 * bound and x.min() < -0.999 * bound
    assert _rel(float(x.std()), bound / math.sqrt(3)) < STAT_TOL
    assert abs(float(x.mean())) < STAT_TOL * bound


def _check_normal(x: np.ndarray, std: float) -> None:
    assert _rel(float(x.std()), std) < STAT_TOL
    assert abs(float(x.mean())) < STAT_TOL * std


def test_kaiming_uniform_default_layer_bound():
    # a = sqrt(5), as torch's Linear/Conv use: bound = sqrt(6 / ((1 + 5) * fan_in)) = 1/sqrt(fan_in)
    x = init.kaiming_uniform_(np.empty(BIG), a=math.sqrt(5), generator=1)
    _check_uniform(x, 1 / math.sqrt(1024))


def test_kaiming_uniform_relu_fan_out():
    x = init.kaiming_uniform_(np.empty(BIG), mode="fan_out", nonlinearity="relu", generator=2)
    _check_uniform(x, math.sqrt(3) * math.sqrt(2) / math.sqrt(8192))


def test_kaiming_normal_std():
    x = init.kaiming_normal_(np.empty(BIG), nonlinearity="relu", generator=3)
    _check_normal(x, math.sqrt(2 / 1024))


def test_xavier_uniform_bound():
    x = init.xavier_uniform_(np.empty(BIG), gain=2.0, generator=4)
    _check_uniform(x, 2.0 * math.sqrt(6 / (1024 + 8192)))


def test_xavier_normal_std():
    x = init.xavier_normal_(np.empty(BIG), gain=0.5, generator=5)
    _check_normal(x, 0.5 * math.sqrt(2 / (1024 + 8192)))


def _truncnorm_moments(mean, std, a, b):
    """Mean and std of N(mean, std^2) truncated to [a, b], from the closed form."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    mass = cdf(beta) - cdf(alpha)
    m1 = (pdf(alpha) - pdf(beta)) / mass
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / mass - m1 ** 2
    return mean + std * m1, std * math.sqrt(var)


@pytest.mark.parametrize("mean, std, a, b", [
    (0.0, 1.0, -2.0, 2.0),          # torch's default
    (0.0, 0.02, -0.04, 0.04),       # the ViT-style use
    (1.0, 2.0, 5.0, 9.0),           # an interval in the right tail
    (0.0, 1.0, -9.0, -8.0),         # far in the left tail
])
def test_trunc_normal_moments_and_bounds(mean, std, a, b):
    x = init.trunc_normal_(np.empty(BIG), mean, std, a, b, generator=6)
    assert x.min() >= a and x.max() <= b
    want_mean, want_std = _truncnorm_moments(mean, std, a, b)
    assert abs(float(x.mean()) - want_mean) < STAT_TOL * want_std
    assert _rel(float(x.std()), want_std) < STAT_TOL


def test_normal_quantile_matches_scipy():
    special = pytest.importorskip("scipy.special")
    p = np.concatenate([np.logspace(-300, -2, 200), np.linspace(0.01, 0.99, 99),
                        1 - np.logspace(-15, -2, 50)])
    ref = special.ndtri(p)
    assert np.max(np.abs(init._normal_quantile(p) - ref) / np.maximum(1, np.abs(ref))) < 2e-9


def test_uniform_and_normal_statistics():
    _check_uniform(init.uniform_(np.empty(BIG), -0.3, 0.3, generator=7), 0.3)
    _check_normal(init.normal_(np.empty(BIG), 0.0, 0.7, generator=8), 0.7)


def test_constants():
    x = np.empty((4, 3), np.float32)
    assert np.all(init.zeros_(x) == 0)
    assert np.all(init.ones_(x) == 1)
    assert np.all(init.constant_(x, 2.5) == 2.5)


def test_fills_in_place_keeping_dtype():
    x = np.zeros((16, 8), np.float32)
    out = init.xavier_uniform_(x, generator=0)
    assert out is x and x.dtype == np.float32 and np.any(x != 0)


def test_fills_a_parameter_data():
    p = Parameter(np.zeros((16, 8), np.float32))
    out = init.kaiming_normal_(p, generator=0)
    assert out is p and np.any(p.data != 0)


def test_fills_a_non_contiguous_view():
    x = np.zeros((8, 8))
    init.ones_(x[:, ::2])
    assert x[:, ::2].sum() == 32 and x[:, 1::2].sum() == 0


def test_same_int_seed_gives_same_values():
    a = init.kaiming_uniform_(np.empty((20, 10)), generator=42)
    b = init.kaiming_uniform_(np.empty((20, 10)), generator=42)
    np.testing.assert_array_equal(a, b)


def test_manual_seed_replays_the_default_generator():
    init.manual_seed(3)
    a = init.normal_(np.empty(50))
    b = init.normal_(np.empty(50))
    init.manual_seed(3)
    np.testing.assert_array_equal(init.normal_(np.empty(50)), a)
    assert not np.array_equal(a, b)


def test_bad_generator_is_rejected():
    with pytest.raises(TypeError, match="generator"):
        init.normal_(np.empty(3), generator="seed")
