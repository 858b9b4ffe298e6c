"""The benchmark harness behind ``gpuconv bench``.

For each case of a suite (``bench/suites/<family>.json``) and each pass (forward, backward;
for convolution grad_input and grad_weight apart), it times every implementation of the op
that can run here, and the references: PyTorch where it is importable (cuDNN on a GPU, its
CPU kernels otherwise) and, for convolution, im2col + GEMM in plain CuPy (cuBLAS) or NumPy
calls (:mod:`gpuconv.benchmark.im2col_gemm`), on random data rotated among several input
sets. Every timed result is first checked against an oracle computed in
float64 on the CPU (the ``reference`` impl, or the ``numpy`` impl where the reference
would take too long); a wrong result is marked and never counted as a win.

Figures per row: median time and spread, achieved FLOP/s and bytes/s, the fraction of this
device's floor (the larger of FLOPs / measured GEMM rate at the run's precision and bytes /
measured copy bandwidth, over the measured time), for GEMM-shaped passes on a GPU with
tensor cores the fraction of the measured tensor-core GEMM ceiling of the run's precision
(:func:`~gpuconv.benchmark.timing.tensor_core_ceiling`: what the issue's "60% of the
tensor-core ceiling" goal reads), the relative error, and the ratio to the best correct
reference (reference time / our time: above 1 is faster than the reference).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import __version__, backend, kernels, precision
from .._resources import bench_suite_dir
from ..testing import TOL, rel_err
from .cases import SUITE_PASSES, Pass
from .timing import (TENSOR_CORE_GEMMS, gemm_ceiling, measure_ceilings, tensor_core_ceiling,
                     time_call)

__all__ = ["FAMILIES", "DTYPES", "load_suite", "run", "environment"]

FAMILIES = ("conv", "pool", "lstm", "train", "kmeans")
DTYPES = ("float32", "tf32", "bfloat16", "float16")
# The float32 precision setting (gpuconv.precision) gpuconv runs under, per run dtype: it
# decides how float32 arrays are computed; 16-bit arrays compute in their own type.
RUN_PRECISION = {"float32": "fp32", "tf32": "tf32", "bfloat16": "bf16", "float16": "fp16"}
ROTATE = 3  # input sets timed in turn, so that no run finds its data in a warm cache
# Above this many FLOPs the oracle is the numpy impl in float64 (itself tested against the
# reference), since the readable reference would take minutes.
REFERENCE_ORACLE_MAX_FLOPS = 2e10


def load_suite(family: str, suite: str) -> list[dict]:
    """The cases of ``suite`` ("gpu", "cpu" or "quick") in ``bench/suites/<family>.json``."""
    path = bench_suite_dir() / f"{family}.json"
    suites = json.loads(path.read_text())["suites"]
    if suite not in suites:
        raise ValueError(f"suite {suite!r} is not in {path.name}; it has {', '.join(suites)}")
    return suites[suite]


def environment(device: str) -> dict:
    """Versions and device facts recorded in every JSON report."""
    env = {"gpuconv": __version__, "numpy": np.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
           "device": "cpu", "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    if device == "cuda":
        cp = backend.cupy_or_none()
        props = cp.cuda.runtime.getDeviceProperties(0)
        env.update(device=props["name"].decode(), cupy=cp.__version__,
                   cuda_runtime=cp.cuda.runtime.runtimeGetVersion(),
                   driver=cp.cuda.runtime.driverGetVersion())
    torch = _torch(device)
    if torch is not None:
        env["torch"] = torch.__version__
        if device == "cuda":
            env["cudnn"] = torch.backends.cudnn.version()
    return env


def _torch(device: str = "cpu"):
    """torch, where it is importable and can compute on ``device`` (a CPU-only build cannot
    be the reference of a GPU run), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if device == "cpu" or torch.cuda.is_available() else None


def _array_dtype(dtype: str):
    """The arrays' dtype for a --dtype value (None: gpuconv has none for it here). tf32 is
    float32 arrays computed in the tf32 precision setting (gpuconv.precision); bfloat16 is
    ml_dtypes' dtype, where installed."""
    if dtype == "bfloat16":
        from ..kernels.cuda_c.conv_igemm import _bfloat16
        return _bfloat16()
    return {"float32": np.float32, "tf32": np.float32, "float16": np.float16}.get(dtype)


def _outputs(result) -> list:
    """The arrays of a result, nested tuples and lists flattened in order, Nones dropped."""
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in _outputs(r)]
    return [] if result is None else [result]


def _max_err(result, oracle) -> float:
    """The largest relative error over the outputs; inf when an output is missing."""
    got, want = _outputs(result), _outputs(oracle)
    if len(got) != len(want):
        return float("inf")
    return max(rel_err(o, r) for o, r in zip(got, want))


def _oracle(p: Pass, inputs64: tuple):
    name = "reference" if p.flops <= REFERENCE_ORACLE_MAX_FLOPS else "numpy"
    return p.call(inputs64, name)


def _row(case: dict, p: Pass, source: str, impl: str, dtype: str, device: str, timing,
         err: float, ceilings: dict, itemsize: int) -> dict:
    nbytes = p.bytes(itemsize)
    seconds = timing.median_ms * 1e-3
    mode = RUN_PRECISION[dtype]
    flop_rate = gemm_ceiling(ceilings, mode) if p.gemm else ceilings["gemm_flops_per_s"]
    floor_s = max(p.flops / flop_rate, nbytes / ceilings["copy_bytes_per_s"])
    tensor_core = tensor_core_ceiling(ceilings, mode) if p.gemm else None
    return {"case": case["label"], "pass": p.name, "op": p.op, "source": source, "impl": impl,
            "dtype": dtype, "device": device, "median_ms": timing.median_ms,
            "min_ms": timing.min_ms, "max_ms": timing.max_ms, "runs": timing.runs,
            "flops": p.flops, "bytes": nbytes, "tflops": p.flops / seconds / 1e12,
            "tbps": nbytes / seconds / 1e12, "floor_ms": floor_s * 1e3,
            "fraction_of_floor": floor_s / seconds,
            "tensor_core_ceiling_flops_per_s": tensor_core,
            "fraction_of_tensor_core_ceiling": (p.flops / seconds / tensor_core
                                                if tensor_core else None),
            "rel_err": err,
            "correct": bool(err <= TOL[dtype])}


def _gpuconv_rows(case, p, sets, oracle, dtype, device, impls, ceilings, quick) -> list:
    rows = []
    probe = sets[0][0]
    itemsize = {"bfloat16": 2, "float16": 2}.get(dtype, probe.dtype.itemsize)
    for impl in kernels.available(p.op, probe):
        if impls and impl not in impls:
            continue
        impl_sets = [p.prepare(s, impl) for s in sets] if p.prepare else sets
        err = _max_err(p.call(impl_sets[0], impl), oracle)
        timing = time_call(lambda *a: p.call(a, impl), impl_sets, device, quick)
        rows.append(_row(case, p, "gpuconv", impl, dtype, device, timing, err, ceilings,
                         itemsize))
    return rows


def _array_row(case, p, sets, oracle, dtype, device, ceilings, quick) -> dict:
    """The pass in plain CuPy (GPU) or NumPy (CPU) calls: im2col by slicing, then GEMMs."""
    err = _max_err(p.array_call(sets[0]), oracle)
    timing = time_call(lambda *a: p.array_call(a), sets, device, quick)
    return _row(case, p, "cupy" if device == "cuda" else "numpy", "im2col_gemm", dtype, device,
                timing, err, ceilings, sets[0][0].dtype.itemsize)


def _torch_row(case, p, sets64, oracle, dtype, device, ceilings, quick):
    torch = _torch(device)
    if torch is None or p.torch_call is None:
        return None
    tdtype = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16}[dtype]
    tdev = "cuda" if device == "cuda" else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    closures = [p.torch_call(torch, tuple(torch.from_numpy(a).to(tdev, tdtype) if a.dtype.kind == "f"
                                          else torch.from_numpy(a).to(tdev) for a in s))
                for s in sets64]
    result = closures[0]()
    err = _max_err([r.detach().float().cpu().numpy() for r in _outputs(result)], oracle)
    # On a GPU the CUDA events bracket torch's launches too: both use the legacy null stream.
    timing = time_call(lambda closure: closure(), [(c,) for c in closures], device, quick)
    return _row(case, p, "torch", "cudnn" if device == "cuda" else "torch_cpu", dtype, device,
                timing, err, ceilings, torch.empty((), dtype=tdtype).element_size())


def _with_ratios(rows: list) -> list:
    refs = [r for r in rows if r["source"] != "gpuconv" and r["correct"]]
    best = min((r["median_ms"] for r in refs), default=None)
    for r in rows:
        r["ratio_to_best_reference"] = (best / r["median_ms"]
                                        if best is not None and r["correct"] else None)
    return rows


def run(families: Sequence[str] = ("conv",), *, impls: Sequence[str] = (), dtype: str = "float32",
        suite: str | None = None, quick: bool = False, device: str = "auto",
        threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark and return the report (``environment``, ``ceilings``, ``rows``).

    ``threads``: CPU threads for PyTorch too (gpuconv's are set by
    :func:`gpuconv.set_num_threads`), so that CPU figures compare like with like.
    """
    device = backend.resolve_device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device == "cpu" and dtype != "float32":
        raise ValueError(f"dtype {dtype} is benchmarked on a GPU only; on the CPU use float32")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown}; choose from {', '.join(FAMILIES)}")
    suite = suite or ("quick" if quick else ("gpu" if device == "cuda" else "cpu"))
    torch = _torch(device)
    if torch is not None and threads is not None:
        torch.set_num_threads(threads)
    # What else ran on the machine: CPU timings on shared cores mean little without it.
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    xp = backend.cupy_or_none() if device == "cuda" else np
    ceilings = measure_ceilings(device, quick)
    log(f"ceilings on {device}: {ceilings_text(ceilings)}")
    rows = []
    if any(f != "train" for f in families):
        log(HEADER)
    for family in families:
        if family == "train":
            from .training import train_rows
            rows += train_rows(load_suite(family, suite), device, quick, log)
            continue
        if family == "kmeans":
            from .kmeans import kmeans_rows
            rows += kmeans_rows(load_suite(family, suite), device, dtype, impls, ceilings,
                                quick, threads, log)
            continue
        for case in load_suite(family, suite):
            for p in SUITE_PASSES[family](case):
                rows += _run_pass(case, p, dtype, device, xp, impls, ceilings, quick, log)
    return {"environment": {**environment(device), "cpu_threads": threads,
                            "loadavg_before": load}, "ceilings": ceilings,
            "suite": suite, "dtype": dtype, "rows": rows}


def _run_pass(case, p, dtype, device, xp, impls, ceilings, quick, log) -> list:
    dtype = p.dtype or dtype
    sets64 = [p.make(np.random.default_rng(seed)) for seed in range(ROTATE)]
    oracle = _oracle(p, sets64[0])
    rows = []
    array_dtype = np.float32 if p.float32_arrays else _array_dtype(dtype)
    if array_dtype is not None:
        sets = [tuple(xp.asarray(a.astype(array_dtype) if a.dtype.kind == "f" else a) for a in s)
                for s in sets64]
        with precision.float32_precision(RUN_PRECISION[dtype]):
            rows += _gpuconv_rows(case, p, sets, oracle, dtype, device, impls, ceilings, quick)
        # CuPy's GEMMs take no bfloat16 arrays on every version: no plain-CuPy row for it.
        if p.array_call is not None and dtype != "bfloat16":
            rows.append(_array_row(case, p, sets, oracle, dtype, device, ceilings, quick))
    torch_row = _torch_row(case, p, sets64, oracle, dtype, device, ceilings, quick)
    if torch_row is not None:
        rows.append(torch_row)
    rows = _with_ratios(rows)
    for r in rows:
        log(format_row(r))
    return rows


# The header of format_row's columns, printed once above the kernel rows.
HEADER = (f"{'case':>22s} {'pass':>11s} {'impl':>18s} {'median time':>13s} "
          f"{'[fastest-slowest] ms':<21s} {'compute rate':>16s} {'memory rate':>13s} "
          f"{'time at floor':>16s} {'tensor cores':>15s} {'rel. error':>11s} verdict\n"
          "  time at floor: the floor (FLOPs at the measured GEMM rate or bytes at the measured "
          "copy rate, the larger) as a share of the median; tensor cores: the achieved FLOP "
          "rate as a share of the measured tensor-core GEMM ceiling of the run's precision "
          "(GEMM-shaped passes on a GPU with tensor cores); verdict: speed over the fastest "
          "correct reference of the same case and pass (>1x is faster), or WRONG")


def ceilings_text(ceilings: dict) -> str:
    """The measured ceilings in one line."""
    tensor_core = [f"{m} {ceilings[f'{m}_gemm_flops_per_s'] / 1e12:.3g}"
                   for m in TENSOR_CORE_GEMMS if ceilings.get(f"{m}_gemm_flops_per_s")]
    return (f"copy {ceilings['copy_bytes_per_s'] / 1e9:.1f} GB/s, float32 GEMM "
            f"{ceilings['gemm_flops_per_s'] / 1e12:.3g} TFLOP/s, tensor-core GEMM "
            + (f"{' / '.join(tensor_core)} TFLOP/s" if tensor_core else "not applicable"))


def _percent(fraction) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def format_row(r: dict) -> str:
    """One kernel row of the table under :data:`HEADER`."""
    ratio = r.get("ratio_to_best_reference")
    verdict = "WRONG" if not r["correct"] else (f"{ratio:.2f}x ref" if ratio else "")
    spread = f"[{r['min_ms']:.3f}-{r['max_ms']:.3f}]"
    tensor_core = r.get("fraction_of_tensor_core_ceiling")
    tc = f"{100 * tensor_core:6.1f}% of TC" if tensor_core is not None else ""
    return (f"{r['case']:>22s} {r['pass']:>11s} {r['impl']:>18s} {r['median_ms']:10.3f} ms "
            f"{spread:<21s} {r['tflops']:8.3f} TFLOP/s {r['tbps'] * 1e3:8.1f} GB/s "
            f"{100 * r['fraction_of_floor']:6.1f}% of floor {tc:>15s} err {r['rel_err']:.1e} "
            f"{verdict}")


def markdown(report: dict) -> str:
    """The report as Markdown: the run's facts, one table of kernel rows and one of training
    rows ("vs best ref" is the best correct reference's time over the row's)."""
    env, ceil = report["environment"], report["ceilings"]
    versions = ", ".join(f"{k} {env[k]}" for k in ("gpuconv", "numpy", "cupy", "cuda_runtime",
                                                     "driver", "torch", "cudnn", "python")
                         if k in env)
    load = env.get("loadavg_before")
    lines = [f"- date: {env['date'][:10]}; device: {env['device']}; dtype: {report['dtype']}; "
             f"suite: {report['suite']}; CPU threads: {env.get('cpu_threads')}"
             + (f"; load average before: {' '.join(f'{x:.2f}' for x in load)}" if load else ""),
             f"- {versions}",
             f"- measured ceilings: {ceilings_text(ceil)}", ""]
    kernel_rows = [r for r in report["rows"] if "median_ms" in r]
    if kernel_rows:
        lines += ["| case | pass | source | impl | median ms | min-max ms | GFLOP/s | % of floor "
                  "| % of TC ceiling | rel err | vs best ref |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in kernel_rows:
            ratio = r["ratio_to_best_reference"]
            lines.append(
                f"| {r['case']} | {r['pass']} | {r['source']} | {r['impl']} | "
                f"{r['median_ms']:.2f} | {r['min_ms']:.2f}-{r['max_ms']:.2f} | "
                f"{r['tflops'] * 1e3:.1f} | {100 * r['fraction_of_floor']:.0f}% | "
                f"{_percent(r.get('fraction_of_tensor_core_ceiling'))} | {r['rel_err']:.1e} | "
                f"{'WRONG' if not r['correct'] else f'{ratio:.2f}x' if ratio else '-'} |")
        lines.append("")
    train = [r for r in report["rows"] if "images_per_s" in r]
    if train:
        lines += ["| training | framework | median s/epoch | images/s | vs torch eager | "
                  "vs torch graph |", "|---|---|---|---|---|---|"]
        for r in train:
            ratios = [r.get(f"ratio_to_torch_{mode}") for mode in ("eager", "graph")]
            lines.append(f"| {r['case']} | {r['impl']} | {r['seconds']:.3f} | "
                         f"{r['images_per_s']:.0f} | "
                         + " | ".join(f"{x:.2f}x" if x else "-" for x in ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def save_json(report: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, default=float))


# What the chart calls gpuconv's readable NumPy oracle, so that it is not read as the
# reference the ratios are taken against.
_PLOT_NAMES = {"reference": "reference impl (NumPy oracle)", "gpuconv": "gpuconv training loop"}


def _plot_rows(report: dict) -> list[tuple[str, list[dict], str]]:
    """For each (case, pass) of the report in order: its label, its gpuconv rows, and what
    it is compared against ("vs torch_cpu") or why there is no ratio."""
    groups: dict[str, list[dict]] = {}
    for r in report["rows"]:
        groups.setdefault(f"{r['case']} {r['pass']}", []).append(r)
    torch_ran = "torch" in report["environment"]
    out = []
    for label, rows in groups.items():
        refs = [r for r in rows if r["source"] != "gpuconv" and r["correct"]]
        if refs:
            best = min(refs, key=lambda r: r.get("median_ms") or r.get("seconds"))
            note = f"vs {best['impl']}"
        else:
            note = ("no reference ran: torch is not installed" if not torch_ran
                    else "no correct reference ran")
        out.append((label, [r for r in rows if r["source"] == "gpuconv"], note))
    return out


def plot(report: dict, path: str | Path) -> None:
    """A horizontal bar chart of each gpuconv impl's speed over the fastest correct reference
    of the same case and pass (log scale, 1 = as fast): one row per case and pass, its bars
    centred on the row, the reference it is compared with written at the right, and rows
    without a ratio explained (no reference ran, or a wrong result)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups = _plot_rows(report)
    impls = sorted({r["impl"] for _, rows, _ in groups for r in rows})
    n_rows = len(groups)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.3 * sum(max(2, len(rows)) for _, rows, _ in groups)))
    ratios = [r["ratio_to_best_reference"] for _, rows, _ in groups for r in rows
              if r.get("ratio_to_best_reference")]
    low, high = min(ratios + [0.5]) / 1.5, max(ratios + [2.0]) * 1.5
    colors = dict(zip(impls, plt.get_cmap("tab10").colors))
    labelled = set()
    for row, (_, rows, _) in enumerate(groups):
        # The bars of a row share its height, centred on its tick whatever their number.
        bar = 0.8 / max(1, len(rows))
        for k, r in enumerate(sorted(rows, key=lambda r: r["impl"])):
            if not r.get("ratio_to_best_reference"):
                continue
            impl = r["impl"]
            ax.barh(row + (k - (len(rows) - 1) / 2) * bar, r["ratio_to_best_reference"],
                    height=bar, color=colors[impl],
                    label=None if impl in labelled else _PLOT_NAMES.get(impl, impl))
            labelled.add(impl)
    for row, (_, rows, note) in enumerate(groups):
        wrong = [r["impl"] for r in rows if not r["correct"]]
        text = note + (f"; wrong result: {', '.join(wrong)}" if wrong else "")
        ax.text(high, row, " " + text, va="center", ha="left", fontsize=8,
                color="black" if note.startswith("vs") and not wrong else "firebrick")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
             if low <= t <= high]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(range(n_rows), [label for label, _, _ in groups])
    ax.invert_yaxis()
    ax.set_xlabel("speed relative to the fastest correct reference of the same run "
                  "(x, log scale; > 1 is faster)")
    env = report["environment"]
    ax.set_title(f"gpuconv bench on {env['device']} ({report['dtype']}, CPU threads: "
                 f"{env.get('cpu_threads') or 'default'})")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.legend(loc="lower center", ncol=min(4, max(1, len(labelled))), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
