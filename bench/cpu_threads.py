"""Re-measure every CPU-threads table of bench/RESULTS.md in one go (issue 13).

    .venv/bin/python bench/cpu_threads.py [--wait-quiet 0.5] [--max-wait 3600] [--out DIR]

1. ``gpuconv bench conv pool lstm train`` at ``--threads 1``, ``--threads 2`` and the
   default (no flag: the cores this process may use), each run writing its JSON and
   Markdown (``results_cpu_t1``, ``_t2``, ``_tdefault`` under DIR);
2. ``gpuconv train`` (LeNet-5 on digits) with the default threads and with ``--threads 1``,
   twice each, alternating;
3. the peak memory of one conv2d forward on a (1, 3, 2048, 2048) image with a 3x3 kernel
   and 16 output channels, the numpy impl and PyTorch each in a fresh process: the rise of
   the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``
   after the inputs exist and both have run once on a small image), so the output counts
   for both; tracemalloc's peak for the numpy impl beside it;
4. ``cpu_threads.json`` and ``cpu_threads.md`` under DIR: the goal tables (ratios to
   PyTorch at each thread count, gpuconv's 2-thread over 1-thread rates, the kernel
   geomeans, rows slower on two threads than on one), every figure with the 1-minute load
   average read just before it was measured.

``--wait-quiet L`` first waits (polling every 2 minutes, at most ``--max-wait`` seconds)
until the 1-minute load average is below L; the run says whether it ever was.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GPUCONV = [sys.executable, "-m", "gpuconv"]
THREADS = ("1", "2", "default")
MEMORY_SHAPE = {"x": (1, 3, 2048, 2048), "w": (16, 3, 3, 3), "padding": 1}

MEMORY_PROBE = r"""
import json, sys, tracemalloc
import numpy as np

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

which, spec = sys.argv[1], json.loads(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal(spec["x"], dtype=np.float32)
w = rng.standard_normal(spec["w"], dtype=np.float32)
if which == "torch":
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    run = lambda a, b: torch.nn.functional.conv2d(a, b, padding=spec["padding"])
    small = (xt[:, :, :64, :64].contiguous(), wt)
    args = (xt, wt)
else:
    import gpuconv
    import gpuconv.functional as F
    gpuconv.set_num_threads(int(sys.argv[3]))
    run = lambda a, b: F.conv2d(a, b, padding=spec["padding"], impl="numpy")
    small = (np.ascontiguousarray(x[:, :, :64, :64]), w)
    args = (x, w)
run(*small)                                  # load, compile and warm up outside the peak
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = status("VmRSS")
tracemalloc.start()
y = run(*args)
traced = tracemalloc.get_traced_memory()[1]
peak = status("VmHWM")
out_bytes = int(np.prod(y.shape)) * 4
print(json.dumps({"impl": which, "peak_rss_rise": peak - before, "output_bytes": out_bytes,
                  "tracemalloc_peak": traced if which != "torch" else None}))
"""


def load1() -> float:
    return os.getloadavg()[0]


def loadavg() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def wait_quiet(limit: float, max_wait: float, log) -> dict:
    start = time.time()
    while True:
        now = load1()
        if now < limit:
            log(f"load average {now:.2f} < {limit}: starting")
            return {"quiet": True, "waited_s": round(time.time() - start), "load": now}
        if time.time() - start >= max_wait:
            log(f"load average still {now:.2f} after {max_wait:.0f} s: measuring anyway")
            return {"quiet": False, "waited_s": round(time.time() - start), "load": now}
        log(f"load average {now:.2f} >= {limit}; waiting 2 minutes")
        time.sleep(120)


def run_bench(threads: str, out: Path, quick: bool, log) -> dict:
    stem = out / f"results_cpu_t{threads}"
    cmd = GPUCONV + ["bench", "conv", "pool", "lstm", "train", "--json", f"{stem}.json",
                     "--markdown", f"{stem}.md"] + (["--quick"] if quick else [])
    if threads != "default":
        cmd += ["--threads", threads]
    load = loadavg()
    log(f"[load {load}] {' '.join(cmd[2:])}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"threads": threads, "loadavg_before": load,
            "report": json.loads(Path(f"{stem}.json").read_text())}


def run_train(threads: str, quick: bool, log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = GPUCONV + ["train", "--no-progress", "--device", "cpu", "--out", tmp]
        cmd += ["--epochs", "1"] if quick else []
        if threads != "default":
            cmd += ["--threads", threads]
        load = loadavg()
        log(f"[load {load}] {' '.join(cmd[2:])}")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    return {"threads": threads, "loadavg_before": load, "train_seconds": summary["train_seconds"],
            "wall_seconds": wall, "test_accuracy": summary.get("test_accuracy")}


def run_memory(which: str, threads: int, log) -> dict:
    load = loadavg()
    log(f"[load {load}] peak memory of conv2d {MEMORY_SHAPE} ({which}, {threads} threads)")
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, which, json.dumps(MEMORY_SHAPE),
                          str(threads)], check=True, capture_output=True, text=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "threads": threads,
            "loadavg_before": load}


# ----------------------------------------------------------------------------- the tables

def _kernel_medians(report: dict) -> dict:
    """{(case, pass): {"numpy": ms, "torch": ms}} from a bench report."""
    out: dict = {}
    for r in report["rows"]:
        if "median_ms" not in r or not r["correct"]:
            continue
        key = (r["case"], r["pass"])
        if r["source"] == "gpuconv" and r["impl"] == "numpy":
            out.setdefault(key, {})["numpy"] = r["median_ms"]
        elif r["source"] == "torch":
            out.setdefault(key, {})["torch"] = r["median_ms"]
    return out


def _training(report: dict) -> dict:
    """Images/s of the eager training rows: {"gpuconv": ..., "torch": ...}."""
    return {r["source"]: r["images_per_s"] for r in report["rows"]
            if "images_per_s" in r and r["impl"].endswith("eager")}


def _table(header: list, rows: list) -> list:
    """Markdown lines of a table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def _x(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _training_section(by_t: dict) -> tuple[dict, dict, list]:
    """Images/s per thread count, the rates over the 1-thread run's, and their lines."""
    train = {t: _training(by_t[t]["report"]) for t in THREADS if t in by_t}
    rows = [(f"{t} ({by_t[t]['report']['environment']['cpu_threads']})",
             f"{by_t[t]['loadavg_before'][0]:.2f}", f"{r['gpuconv']:.0f}",
             f"{r['torch']:.0f}", _x(r["gpuconv"] / r["torch"]))
            for t, r in train.items()]
    lines = _table(["threads", "load before", "gpuconv images/s", "torch images/s",
                    "vs torch"], rows)
    scaling = {t: {k: train[t][k] / train["1"][k] for k in train[t]}
               for t in ("2", "default") if t in train and "1" in train}
    if scaling:
        lines += ["", "Training rate over the 1-thread run's: " + "; ".join(
            f"{t} threads: gpuconv {_x(s['gpuconv'])}, torch {_x(s['torch'])}"
            for t, s in scaling.items())]
    return train, scaling, lines


def _kernel_section(by_t: dict) -> tuple[dict, list, list]:
    """Each kernel row's ratio to torch per thread count and its 2-over-1-thread speed-up;
    the geomeans and the rows slower on two threads."""
    medians = {t: _kernel_medians(by_t[t]["report"]) for t in THREADS if t in by_t}
    ratios: dict = {t: [] for t in medians}
    rows, slower = [], []
    for key in sorted({k for m in medians.values() for k in m}):
        cells = []
        for t in medians:
            m = medians[t].get(key, {})
            ratio = m["torch"] / m["numpy"] if "torch" in m and "numpy" in m else None
            ratios[t] += [ratio] if ratio else []
            cells.append(_x(ratio))
        one, two = medians.get("1", {}).get(key, {}), medians.get("2", {}).get(key, {})
        speedup = one["numpy"] / two["numpy"] if "numpy" in one and "numpy" in two else None
        if speedup is not None and speedup < 1:
            slower.append({"case": key[0], "pass": key[1], "speedup": speedup})
        rows.append((*key, *cells, _x(speedup)))
    geomean = {t: math.exp(sum(map(math.log, r)) / len(r)) for t, r in ratios.items() if r}
    rows.append(("geomean", "", *(_x(geomean.get(t)) for t in medians), ""))
    lines = _table(["case", "pass", *(f"vs torch, {t}" for t in medians),
                    "gpuconv 2 threads over 1"], rows)
    lines += ["", "Rows slower on 2 threads than on 1: " + (", ".join(
        f"{s['case']} {s['pass']} ({s['speedup']:.2f}x)" for s in slower) or "none")]
    return geomean, slower, lines


def _memory_section(memory: list) -> tuple[dict, list]:
    rows = [(m["impl"], m["threads"], f"{m['loadavg_before'][0]:.2f}",
             f"{m['output_bytes'] / 2**20:.0f}", f"{m['peak_rss_rise'] / 2**20:.0f}",
             "-" if m["tracemalloc_peak"] is None else f"{m['tracemalloc_peak'] / 2**20:.0f}")
            for m in memory]
    peaks: dict = {}
    for m in memory:
        peaks.setdefault(m["threads"], {})[m["impl"]] = m["peak_rss_rise"]
    ratio = {t: p["numpy"] / p["torch"] for t, p in peaks.items() if len(p) == 2}
    lines = [f"Peak memory of one conv2d forward, x {MEMORY_SHAPE['x']}, w {MEMORY_SHAPE['w']}, "
             f"padding {MEMORY_SHAPE['padding']}, float32 (rise of VmHWM in a fresh process; "
             "the output alone is the output column):", ""]
    lines += _table(["impl", "threads", "load before", "output MiB", "peak RSS rise MiB",
                     "tracemalloc peak MiB"], rows)
    lines += ["", "numpy over torch peak: " + "; ".join(f"{t} threads {_x(r)}"
                                                        for t, r in ratio.items())]
    return ratio, lines


def summarise(benches: list, trains: list, memory: list, quiet: dict | None) -> tuple[dict, str]:
    """The summary JSON and its Markdown tables."""
    by_t = {b["threads"]: b for b in benches}
    lines = ["CPU threads (issue 13), measured by `bench/cpu_threads.py`"
             + ("" if quiet is None else
                f"; machine quiet before the start: {quiet['quiet']} (1-minute load "
                f"{quiet['load']:.2f} after waiting {quiet['waited_s']} s)"), ""]
    train, scaling, part = _training_section(by_t)
    lines += part + [""]
    geomean, slower, part = _kernel_section(by_t)
    lines += part + [""]
    lines += _table(["`gpuconv train` (digits)", "load before", "training s", "wall s",
                     "test accuracy"],
                    [(f"threads {t['threads']}", f"{t['loadavg_before'][0]:.2f}",
                      f"{t['train_seconds']:.2f}", f"{t['wall_seconds']:.1f}",
                      "-" if t["test_accuracy"] is None else f"{100 * t['test_accuracy']:.1f}%")
                     for t in trains]) + [""]
    mem_ratio, part = _memory_section(memory)
    lines += part
    summary = {"quiet": quiet, "training": train, "training_scaling": scaling,
               "kernel_geomean_vs_torch": geomean, "slower_on_two_threads": slower,
               "train_digits": trains, "memory": memory, "memory_ratio": mem_ratio,
               "benches": [{k: v for k, v in b.items() if k != "report"} for b in benches]}
    return summary, "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench", help="folder for the JSON and Markdown (bench)")
    p.add_argument("--wait-quiet", type=float, help="wait for a 1-minute load average below this")
    p.add_argument("--max-wait", type=float, default=3600)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: tiny shapes, one epoch, a 256x256 image")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, flush=True)   # noqa: E731
    quiet = wait_quiet(args.wait_quiet, args.max_wait, log) if args.wait_quiet else None
    if args.quick:
        MEMORY_SHAPE["x"] = (1, 3, 256, 256)
    benches = [run_bench(t, out, args.quick, log) for t in THREADS]
    trains = [run_train(t, args.quick, log) for t in ("default", "1", "default", "1")]
    cores = benches[-1]["report"]["environment"]["cpu_threads"]
    memory = [run_memory(which, n, log) for n in sorted({1, cores}) for which in ("numpy", "torch")]
    summary, text = summarise(benches, trains, memory, quiet)
    (out / "cpu_threads.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "cpu_threads.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
