"""Accuracy measures shared by the tests and the benchmark harness: one tolerance table."""
from __future__ import annotations

import numpy as np

from . import backend

# Relative error ||out - ref|| / ||ref|| allowed per dtype of the computation (DESIGN.md).
TOL = {
    "float64": 1e-10,
    "float32": 1e-5,
    "tf32": 1e-3,
    "float16": 1e-3,
    "bfloat16": 1e-2,
}
# The TOL entry of each precision mode (gpuconv.precision).
TOL_KEY = {"fp64": "float64", "fp32": "float32", "tf32": "tf32", "bf16": "bfloat16",
           "fp16": "float16"}


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64 (||out - ref|| when ref is all zeros); inf when the
    shapes differ or ``out`` has NaN/inf."""
    out = backend.to_numpy(out).astype(np.float64)
    ref = backend.to_numpy(ref).astype(np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return float("inf")
    den = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return float(num / den) if den > 0 else float(num)
