"""Peak memory of one conv2d forward, gpuconv's numpy impl against PyTorch's CPU kernel.

:func:`conv2d_peak` runs the probe below in a fresh Python process per call, so that
neither side sees memory the other (or an earlier test) left behind. The probe builds the
inputs, runs the op once on a small crop (loading libraries, compiling and warming up
outside the measurement), resets the peak resident set to the current one (writing 5 to
``/proc/self/clear_refs`` resets ``VmHWM``), runs the op on the full input and reports the
rise of ``VmHWM``: the output counts for both sides, the inputs for neither. For the numpy
impl it also reports tracemalloc's peak (NumPy registers its buffers with tracemalloc).

Linux only (``/proc``). Run as ``python -m gpuconv.benchmark.peak_memory IMPL SPEC THREADS``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Sequence

IMPLS = ("numpy", "torch")


def _status_bytes(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status``, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _probe(impl: str, spec: dict, threads: int) -> dict:
    """Measure in this process (see the module docstring); ``spec``: x, w, padding."""
    import tracemalloc

    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec["x"], dtype=np.float32)
    w = rng.standard_normal(spec["w"], dtype=np.float32)
    crop = np.ascontiguousarray(x[:, :, :64, :64])
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
        run = lambda a: torch.nn.functional.conv2d(  # noqa: E731
            torch.from_numpy(a), torch.from_numpy(w), padding=spec["padding"])
    else:
        import gpuconv
        import gpuconv.functional as F

        gpuconv.set_num_threads(threads)
        run = lambda a: F.conv2d(a, w, padding=spec["padding"], impl="numpy")  # noqa: E731
    run(crop)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    tracemalloc.start()
    y = run(x)
    traced = tracemalloc.get_traced_memory()[1]
    peak = _status_bytes("VmHWM")
    return {"impl": impl, "threads": threads, "peak_rss_rise": peak - before,
            "output_bytes": int(np.prod(tuple(y.shape))) * 4,
            "tracemalloc_peak": traced if impl == "numpy" else None}


def conv2d_peak(impl: str, x_shape: Sequence[int], w_shape: Sequence[int], padding: int,
                threads: int) -> dict:
    """The peak memory of ``conv2d(x, w, padding=padding)`` in float32 by ``impl`` (numpy
    or torch) on ``threads`` threads, measured in a fresh process: a dict with
    ``peak_rss_rise``, ``output_bytes`` and ``tracemalloc_peak`` (numpy only), in bytes."""
    if impl not in IMPLS:
        raise ValueError(f"conv2d_peak: impl must be one of {IMPLS}, got {impl!r}")
    spec = {"x": list(x_shape), "w": list(w_shape), "padding": padding}
    out = subprocess.run([sys.executable, "-m", __name__, impl, json.dumps(spec), str(threads)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))))
