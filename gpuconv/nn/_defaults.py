"""Parameter creation and torch's default initialisation, shared by the layers."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import init
from .module import Parameter


def float_dtype(layer: str, dtype: Any) -> np.dtype:
    """The parameters' dtype: float32 unless ``dtype`` names another floating dtype."""
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"{layer}: dtype must be a floating-point dtype, got {dt}")
    return dt


def new_parameter(shape: tuple, dtype: np.dtype) -> Parameter:
    """A Parameter of ``shape`` whose values the caller's ``reset_parameters`` fills."""
    return Parameter(np.zeros(shape, dtype=dtype))


def reset_weight_and_bias(weight: Parameter, bias: Parameter | None) -> None:
    """torch's default for Linear and Conv layers: weight from kaiming_uniform_(a=sqrt(5)),
    which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias from the same interval."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)
