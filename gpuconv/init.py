"""Parameter initialisers with the names, arguments and formulas of ``torch.nn.init``.

Each function fills an array (NumPy or CuPy) or a :class:`gpuconv.nn.Parameter` in place and
returns it. Random values are drawn on the CPU from a NumPy ``Generator`` in float64 and then
cast to the array's dtype and copied to its device, so one seed gives the same weights on
every device.

``generator`` may be a ``numpy.random.Generator``, an int seed, or None for the package-wide
generator that :func:`manual_seed` reseeds (the layers' default initialisation draws from
it). ``Dropout``'s masks come from the package-wide Philox stream (:func:`default_philox`):
key ``(seed, offset)``, the offset counting the masks drawn, which :func:`manual_seed` also
resets. Like torch's, both start from a fixed seed, so a program that never calls
``manual_seed`` is reproducible too.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import backend, graphs

__all__ = [
    "manual_seed", "default_generator", "default_philox", "calculate_gain",
    "calculate_fan_in_and_fan_out",
    "uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]

_DEFAULT_SEED = 0
_generator = np.random.default_rng(_DEFAULT_SEED)
_philox = graphs.PhiloxStream(_DEFAULT_SEED)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the package-wide generator (initialisation) and Philox stream (dropout masks:
    key ``(seed, 0)``, ``(seed, 1)``, ...) and return the generator."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0 \
            or seed >= 2 ** 64:
        raise ValueError(f"manual_seed: seed must be an int in [0, 2**64), got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    _philox.reset(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    """The package-wide generator that :func:`manual_seed` reseeds."""
    return _generator


def default_philox() -> graphs.PhiloxStream:
    """The package-wide Philox stream of dropout masks that :func:`manual_seed` resets."""
    return _philox


def _rng(generator) -> np.random.Generator:
    if generator is None:
        return _generator
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError("generator must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(generator).__name__}")


def _array(op: str, tensor: Any):
    """The array behind ``tensor`` (a Parameter's ``.data``), which must be floating."""
    is_array = isinstance(tensor, np.ndarray) or backend.device_of(tensor) == "cuda"
    arr = tensor if is_array else getattr(tensor, "data", None)
    if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
        raise TypeError(f"{op}: expected an array or a Parameter, got {type(tensor).__name__}")
    if not np.issubdtype(np.dtype(arr.dtype), np.floating):
        raise TypeError(f"{op}: the array must have a floating-point dtype, got {arr.dtype}")
    return arr


def _fill(op: str, tensor: Any, values) -> Any:
    arr = _array(op, tensor)
    xp = backend.array_module(arr)
    arr[...] = xp.asarray(np.asarray(values, dtype=arr.dtype))
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain torch recommends for ``nonlinearity``.

    linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt(2); leaky_relu: sqrt(2 / (1 + slope^2))
    with slope ``param`` (default 0.01); selu: 3/4.
    """
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel): in * prod(kernel) and
    out * prod(kernel), as torch computes them (also for ConvTranspose's (in, out, *kernel))."""
    shape = tuple(_array("calculate_fan_in_and_fan_out", tensor).shape)
    if len(shape) < 2:
        raise ValueError("calculate_fan_in_and_fan_out: fan in and fan out cannot be computed "
                         f"for an array with fewer than 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, generator=None) -> Any:
    """Fill with values drawn from U(a, b)."""
    arr = _array("uniform_", tensor)
    if not a <= b:
        raise ValueError(f"uniform_: need a <= b, got a={a}, b={b}")
    return _fill("uniform_", tensor, _rng(generator).uniform(a, b, size=arr.shape))


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, generator=None) -> Any:
    """Fill with values drawn from N(mean, std^2)."""
    arr = _array("normal_", tensor)
    if not std >= 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    return _fill("normal_", tensor, _rng(generator).normal(mean, std, size=arr.shape))


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9).
_ACKLAM_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_ACKLAM_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
             6.680131188771972e+01, -1.328068155288572e+01, 1.0)
_ACKLAM_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
             3.754408661907416e+00, 1.0)
_ACKLAM_LOW = 0.02425


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Phi^-1(p) for p in (0, 1), elementwise, float64."""
    p = np.asarray(p, dtype=np.float64)
    tail = np.minimum(p, 1 - p)
    q = np.sqrt(-2 * np.log(np.maximum(tail, np.finfo(np.float64).tiny)))
    x_tail = np.polyval(_ACKLAM_C, q) / np.polyval(_ACKLAM_D, q)
    x_tail = np.where(p < 0.5, x_tail, -x_tail)
    r = (p - 0.5) ** 2
    x_mid = (p - 0.5) * np.polyval(_ACKLAM_A, r) / np.polyval(_ACKLAM_B, r)
    return np.where(tail < _ACKLAM_LOW, x_tail, x_mid)


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def trunc_normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, generator=None) -> Any:
    """Fill with values from N(mean, std^2) truncated to [a, b] (a and b are absolute values,
    not multiples of std, as in torch).

    Inverse-CDF sampling as in torch: u ~ U(Phi(alpha), Phi(beta)) with alpha = (a - mean) / std,
    beta = (b - mean) / std, then x = mean + std * Phi^-1(u), clipped to [a, b]. When the
    interval lies right of the mean it is mirrored to the left, so the CDF values stay small
    numbers that float64 holds precisely, which keeps far-tail intervals accurate.
    """
    arr = _array("trunc_normal_", tensor)
    if not (std > 0 and a < b):
        raise ValueError(f"trunc_normal_: need std > 0 and a < b, got std={std}, a={a}, b={b}")
    alpha, beta = (a - mean) / std, (b - mean) / std
    sign = -1.0 if alpha + beta > 0 else 1.0
    lo, hi = sorted((sign * alpha, sign * beta))
    u = _rng(generator).uniform(_normal_cdf(lo), _normal_cdf(hi), size=arr.shape)
    z = sign * _normal_quantile(u)
    return _fill("trunc_normal_", tensor, np.clip(mean + std * z, a, b))


def constant_(tensor: Any, val: float) -> Any:
    """Fill with ``val``."""
    arr = _array("constant_", tensor)
    arr[...] = val
    return tensor


def zeros_(tensor: Any) -> Any:
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Any) -> Any:
    """Fill with 1."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Any, gain: float = 1.0, generator=None) -> Any:
    """Glorot uniform: U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Any, gain: float = 1.0, generator=None) -> Any:
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(tensor: Any, a: float, mode: str, nonlinearity: str) -> float:
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))


def kaiming_uniform_(tensor: Any, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None) -> Any:
    """He uniform: U(-bound, bound), bound = sqrt(3) * gain(nonlinearity, a) / sqrt(fan).

    ``a`` is the negative slope of the leaky ReLU that follows (``a=sqrt(5)`` is what
    torch's Linear and Conv layers use by default); ``mode`` picks fan_in or fan_out.
    """
    if _array("kaiming_uniform_", tensor).size == 0:
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Any, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None) -> Any:
    """He normal: N(0, std^2), std = gain(nonlinearity, a) / sqrt(fan)."""
    if _array("kaiming_normal_", tensor).size == 0:
        return tensor
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator)
