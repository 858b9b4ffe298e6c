"""How float32 arrays use tensor cores: one setting for every GPU kernel, in the spirit of
PyTorch's ``torch.set_float32_matmul_precision`` / ``allow_tf32``.

The setting names the least accurate multiplication a kernel may use on **float32 arrays**;
sums, states and outputs stay float32 in every mode:

- ``"fp32"`` (the default): float32 accuracy. On tensor cores that is 3xTF32: each operand is
  split into a tf32 ``big`` part and a tf32 ``small`` remainder and three products are
  accumulated in fp32 (small*big + big*small + big*big), about as accurate as an fp32 FMA loop
  at three times the tensor-core work; elsewhere plain fp32 FMA (cuBLAS SGEMM, CUDA cores).
- ``"tf32"``: one tf32 product per term (10-bit mantissas, fp32 accumulation): relative
  errors near 1e-3, three times less work. An explicit choice, never the default.
- ``"bf16"`` / ``"fp16"``: operands may be rounded to bfloat16 / float16 (8- / 10-bit
  mantissas) and multiplied on tensor cores with fp32 accumulation; weights may be stored in
  16 bits. Relative errors near 1e-2 (bf16) and 1e-3 (fp16).

A kernel without a path for the setting takes the nearest more accurate one it has
(:func:`mode_of` with ``supported``): the convolution's float32 kernels run tf32 under
``"bf16"`` and ``"fp16"``, since tf32 is at least as accurate as either.

Arrays of other dtypes are not affected: float64 arrays compute in float64 (``"fp64"``);
bfloat16 and float16 arrays multiply in their own type on tensor cores with fp32
accumulation (``"bf16"``, ``"fp16"``).

Where it is set: :func:`set_float32_precision` for the whole process (every thread), the
``float32_precision`` context manager for the current thread or task only (it wins over the
process setting inside its block), and ``GPUCONV_FLOAT32_PRECISION`` for the starting value.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator, Sequence

import numpy as np

__all__ = ["PRECISIONS", "get_float32_precision", "set_float32_precision",
           "float32_precision", "mode_of"]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# Per setting, the modes at least as accurate, least accurate first: a kernel runs the first
# it supports. tf32 has fp16's 10-bit mantissa and bf16's range, so it stands in for both;
# neither 16-bit type stands in for the other (bf16 has the range, fp16 the mantissa).
_NO_LESS_ACCURATE = {"fp32": ("fp32",), "tf32": ("tf32", "fp32"),
                     "bf16": ("bf16", "tf32", "fp32"), "fp16": ("fp16", "tf32", "fp32")}
# The mode of arrays whose dtype fixes it (by dtype name: bfloat16 is ml_dtypes' dtype).
_DTYPE_MODES = {"float64": "fp64", "bfloat16": "bf16", "float16": "fp16"}


def _checked(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"float32 precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    return precision


_process = _checked(os.environ.get("GPUCONV_FLOAT32_PRECISION", "fp32"))
# Set only inside a ``float32_precision`` block of this thread or task.
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gpuconv_float32_precision", default=None)


def get_float32_precision() -> str:
    """The setting in effect here: ``"fp32"``, ``"tf32"``, ``"bf16"`` or ``"fp16"``."""
    scoped = _scoped.get()
    return _process if scoped is None else scoped


def set_float32_precision(precision: str) -> None:
    """Set, for the whole process, the least accurate multiplication GPU kernels may use on
    float32 arrays (module docstring)."""
    global _process
    _process = _checked(precision)


@contextlib.contextmanager
def float32_precision(precision: str) -> Iterator[None]:
    """``with float32_precision("tf32"): ...``: the setting for this thread or task inside
    the block; the previous one afterwards, also when the block raises."""
    token = _scoped.set(_checked(precision))
    try:
        yield
    finally:
        _scoped.reset(token)


def mode_of(dtype, supported: Sequence[str] = PRECISIONS) -> str:
    """The mode a kernel computes arrays of ``dtype`` in: ``"fp64"``, ``"bf16"`` or ``"fp16"``
    where the dtype fixes it, else (float32) the setting, or, where ``supported`` (the kernel's
    float32 modes) lacks it, the least accurate supported mode that is no less accurate."""
    fixed = _DTYPE_MODES.get(np.dtype(dtype).name)
    if fixed is not None:
        return fixed
    wanted = get_float32_precision()
    for mode in _NO_LESS_ACCURATE[wanted]:
        if mode in supported:
            return mode
    raise ValueError(f"no mode of {', '.join(supported)} is as accurate as float32 precision "
                     f"{wanted!r}")
