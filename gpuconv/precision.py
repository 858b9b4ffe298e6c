"""How float32 convolutions use tensor cores: the setting in the spirit of PyTorch's
``torch.backends.cudnn.allow_tf32``.

- ``"fp32"`` (the default): float32 arrays are computed to float32 accuracy. On tensor cores
  that is 3xTF32: each operand is split into a tf32 ``big`` part and a tf32 ``small``
  remainder and three products are accumulated in fp32 (small*big + big*small + big*big), about
  as accurate as an fp32 FMA loop at three times the tensor-core work.
- ``"tf32"``: one tf32 product per term (10-bit mantissas, fp32 accumulation): relative
  errors near 1e-3, three times less work. An explicit choice, never the default.

bfloat16 and float16 arrays always multiply in their own type with fp32 accumulation; the
setting is about float32 arrays only. ``GPUCONV_CONV_PRECISION`` sets the starting value.
"""
from __future__ import annotations

import os

__all__ = ["PRECISIONS", "get_conv_precision", "set_conv_precision", "conv_precision"]

PRECISIONS = ("fp32", "tf32")


def _checked(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"conv precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    return precision


_precision = _checked(os.environ.get("GPUCONV_CONV_PRECISION", "fp32"))


def get_conv_precision() -> str:
    """The current setting: ``"fp32"`` or ``"tf32"``."""
    return _precision


def set_conv_precision(precision: str) -> None:
    """Set how float32 convolutions use tensor cores (``"fp32"`` or ``"tf32"``)."""
    global _precision
    _precision = _checked(precision)


class conv_precision:
    """Context manager: ``with conv_precision("tf32"): ...`` and the previous setting back."""

    def __init__(self, precision: str):
        self._new = _checked(precision)

    def __enter__(self):
        self._old = get_conv_precision()
        set_conv_precision(self._new)
        return self

    def __exit__(self, *exc):
        set_conv_precision(self._old)
        return False
