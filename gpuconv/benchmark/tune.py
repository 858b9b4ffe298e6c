"""``gpuconv tune``: time every candidate configuration of the implicit-GEMM convolution
(``cuda_igemm``) on this GPU and keep the fastest correct one per problem in the tuning
table (:data:`gpuconv.kernels.cuda_c.conv_igemm.TABLE`, committed with the package).

A problem is one pass (fprop, dgrad, wgrad) of one convolution shape in one precision mode;
its candidates are every tile of ``TILES`` and, for wgrad, split-K factors up to the
reduction's length. Each candidate is timed with CUDA events (median after warm-up, as
``gpuconv bench`` times) and compared with the heuristic's result first: a candidate that
disagrees beyond the mode's tolerance is reported and never chosen. Shapes: the conv bench
suite's, plus any given as ``N,C,H,W,K,R,S,stride,pad``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import backend
from ..kernels.cuda_c import conv_igemm as ig
from ..testing import TOL, TOL_KEY, rel_err
from .timing import time_call

__all__ = ["run", "candidates", "parse_shape"]

SPLITS = (1, 2, 4, 8, 16, 32)
SHAPE_FIELDS = ("N", "C", "H", "W", "K", "R", "S", "stride", "pad")


def parse_shape(text: str) -> dict:
    """``"N,C,H,W,K,R,S,stride,pad"`` -> a suite-style case dict."""
    parts = text.split(",")
    if len(parts) != len(SHAPE_FIELDS) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shape must be {','.join(SHAPE_FIELDS)} (9 non-negative integers), "
                         f"got {text!r}")
    case = dict(zip(SHAPE_FIELDS, (int(p) for p in parts)))
    if min(case[f] for f in SHAPE_FIELDS[:7]) < 1 or case["stride"] < 1:
        raise ValueError(f"--shape {text!r}: sizes and stride must be positive")
    case["label"] = "shape_" + "_".join(parts)
    return case


def candidates(problem: ig.Problem) -> list[ig.Choice]:
    """Every tile; for wgrad, each split-K factor that leaves every split a k-tile."""
    out = []
    for tile in ig.TILES.values():
        splits = (1,)
        if problem.pass_ == "wgrad":
            k_tiles = math.ceil(problem.gemm[2] / tile.bk(problem.itemsize))
            splits = tuple(s for s in SPLITS if s <= k_tiles)
        out += [ig.Choice(tile, s, "candidate") for s in splits]
    return out


def _dtype(mode: str):
    return np.float32 if mode in ig.FLOAT32_MODES else (
        ig._bfloat16() if mode == "bf16" else np.float16)


def _geometry(case: dict) -> ig.Geometry:
    g, d = case.get("groups", 1), case.get("dilation", 1)
    return ig._geometry((case["N"], case["C"], case["H"], case["W"]),
                        (case["K"], case["C"] // g, case["R"], case["S"]),
                        (case["stride"],) * 2, (case["pad"],) * 2, (d, d), g)


def _runner(pass_: str, geo: ig.Geometry, mode: str, rng) -> Callable[[ig.Choice], object]:
    """The pass on random NHWC operands, as a function of the configuration."""
    cp = backend.cupy_or_none()
    dtype = _dtype(mode)

    def rand(*shape):
        return cp.asarray(rng.standard_normal(shape).astype(dtype))

    x = rand(geo.N, geo.H, geo.W, geo.C)
    w = rand(geo.K, geo.R, geo.S, geo.C // geo.groups)
    dy = rand(geo.N, geo.P, geo.Q, geo.K)
    if pass_ == "fprop":
        return lambda choice: ig.fprop(x, w, geo, mode, choice=choice)
    if pass_ == "dgrad":
        return lambda choice: ig.dgrad(dy, w, geo, mode, choice=choice)
    return lambda choice: ig.wgrad(dy, x, geo, mode, choice=choice)


def _tune_problem(problem: ig.Problem, geo: ig.Geometry, quick: bool, log) -> dict:
    cp = backend.cupy_or_none()
    run = _runner(problem.pass_, geo, problem.mode, np.random.default_rng(0))
    _, sm_count = ig._device()
    expected = backend.to_numpy(run(ig.heuristic(problem, sm_count)))
    timed = {}
    for choice in candidates(problem):
        name = f"{choice.tile.name}/split{choice.splits}"
        err = rel_err(backend.to_numpy(run(choice)), expected)
        if err > TOL[TOL_KEY[problem.mode]]:
            log(f"  {name}: WRONG (relative error {err:.2e} against the heuristic's result)")
            continue
        timing = time_call(lambda c: run(c), [(choice,)], "cuda", quick)
        cp.cuda.Device().synchronize()
        timed[name] = (timing.median_ms, choice)
    if not timed:
        raise RuntimeError(f"no candidate of {problem.key()} agreed with the heuristic's result")
    best_name = min(timed, key=lambda n: timed[n][0])
    best_ms, best = timed[best_name]
    log(f"{problem.key()}: {best_name} {best_ms:.4f} ms of {len(timed)} candidates")
    return {"tile": best.tile.name, "splits": best.splits, "median_ms": best_ms,
            "candidates_ms": {n: round(ms, 5) for n, (ms, _) in sorted(timed.items())}}


def _write_table(path: Path, device: str, entries: dict) -> None:
    """Merge ``entries`` for ``device`` into the table at ``path`` (written to a temporary
    file and renamed: an interrupted run never leaves half a table)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("format", 1)
    data.setdefault("devices", {}).setdefault(device, {}).update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    ig.load_table.cache_clear()


def run(suite: str | None = "gpu", modes: Sequence[str] = ("fp32",),
        shapes: Sequence[dict] = (), table: str | Path | None = None, quick: bool = False,
        log: Callable[[str], None] = print) -> dict:
    """Tune every pass of the conv suite's shapes (none for ``suite=None``) and ``shapes``
    in each mode; write the winners to ``table`` (default: the package's table) and return
    them."""
    from . import load_suite

    if not backend.gpu_available():
        raise RuntimeError("gpuconv tune times kernels on a GPU, and CuPy sees none")
    unknown = [m for m in modes if m not in ig.MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown}; choose from {', '.join(ig.MODES)}")
    if "bf16" in modes and ig._bfloat16() is None:
        raise ValueError("mode bf16 needs the ml_dtypes package")
    device, _ = ig._device()
    path = Path(table) if table is not None else ig.TABLE
    cases = (list(load_suite("conv", suite)) if suite else []) + list(shapes)
    entries = {}
    for mode in modes:
        for case in cases:
            geo = _geometry(case)
            for pass_ in ig.PASSES:
                problem = geo.problem(pass_, mode)
                entries[problem.key()] = _tune_problem(problem, geo, quick, log)
    _write_table(path, device, entries)
    log(f"wrote {len(entries)} entries for {device} to {path}")
    return entries
