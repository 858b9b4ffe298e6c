"""Re-measure every CPU-threads table of bench/RESULTS.md in one go (issue 13).

    .venv/bin/python bench/cpu_threads.py [--wait-quiet 0.5] [--max-wait 3600] [--out DIR]

1. ``gpuconv bench conv pool lstm --impl numpy`` at ``--threads 1``, ``--threads 2`` and
   the default (no flag: the cores this process may use), then ``gpuconv bench train`` at
   the three counts back to back, in ``--rounds`` rounds (an even number: the training
   counts run 1, 2, default in one half of the rounds and in reverse in the other, so that
   neither count always runs first), the first round's runs writing their JSON and Markdown
   (``results_cpu_t1``, ``_t2``, ``_tdefault`` and ``results_cpu_train_t1``, ... under
   DIR): gpuconv's numpy impl and LeNet-5 training against PyTorch on the same threads.
   Every ratio is a median over the rounds: a ratio to torch within each run, and gpuconv's
   2-thread over 1-thread speed from the two runs of the same round, so that a machine whose
   speed drifts from minute to minute (the 2-core development machine's serial code ran 1.5x
   slower in one run than in the run before) does not decide the comparison of two runs far
   apart. The training runs at 1 and 2 threads run back to back, some 10 s apart, not a
   minute as when each followed its kernel runs;
2. ``gpuconv train`` (LeNet-5 on digits) with the default threads and with ``--threads 1``,
   twice each, alternating;
3. the peak memory of one conv2d forward on a (1, 3, 2048, 2048) image with a 3x3 kernel
   and 16 output channels, the numpy impl and PyTorch each in a fresh process
   (:mod:`gpuconv.benchmark.peak_memory`), on one thread and on the default count;
4. ``cpu_threads.json`` under DIR and the section "CPU threads (issue 13)" of
   ``RESULTS.md`` under DIR (replaced, the rest of the file kept): each of the issue's goals
   met or not, the training and kernel ratios to PyTorch at each thread count, gpuconv's
   2-thread over 1-thread rates, the kernel geomeans, the rows slower on two threads than
   on one, the digits runs and the memory table, with the 1-minute load average read just
   before each step.

``--wait-quiet L`` first waits (polling every 2 minutes, at most ``--max-wait`` seconds)
until the 1-minute load average is below L; the run says whether it ever was. ``--quick``
is a smoke run of the same steps (tiny shapes, one digits epoch per thread count, a
256x256 image) in about a minute.
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

from gpuconv.benchmark.peak_memory import conv2d_peak

GPUCONV = [sys.executable, "-m", "gpuconv"]
THREADS = ("1", "2", "default")
MEMORY_SHAPE = {"x": (1, 3, 2048, 2048), "w": (16, 3, 3, 3), "padding": 1}
# The section of RESULTS.md that this script writes (replaced on every run).
BEGIN, END = "<!-- bench/cpu_threads.py: begin -->", "<!-- bench/cpu_threads.py: end -->"

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


KERNEL_FAMILIES = ("conv", "pool", "lstm")


def run_bench(threads: str, families: tuple, stem: Path, quick: bool, log,
              round_: int = 0) -> dict:
    """One ``gpuconv bench`` run of ``families`` at ``threads``, its JSON and Markdown
    written to ``stem``.json and .md."""
    # Only gpuconv's numpy impl beside the references: the goals compare it with torch.
    cmd = GPUCONV + ["bench", *families, "--impl", "numpy",
                     "--json", f"{stem}.json", "--markdown", f"{stem}.md"]
    cmd += ["--quick"] if quick else []
    if threads != "default":
        cmd += ["--threads", threads]
    load = loadavg()
    log(f"[load {load}] (round {round_ + 1}) {' '.join(cmd[2:])}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"threads": threads, "round": round_, "loadavg_before": load,
            "report": json.loads(Path(f"{stem}.json").read_text())}


def run_round(round_: int, out: Path, quick: bool, log) -> list[dict]:
    """One round: the kernel runs at each thread count, then the training runs back to back
    (reversed every other round, so that neither count always runs first). One entry per
    count, in THREADS order, its report holding both runs' rows, ``loadavg_before`` the
    kernel run's load and ``train_loadavg_before`` the training run's."""
    kernels = {t: run_bench(t, KERNEL_FAMILIES, out / f"results_cpu_t{t}", quick, log, round_)
               for t in THREADS}
    order = THREADS if round_ % 2 == 0 else THREADS[::-1]
    train = {t: run_bench(t, ("train",), out / f"results_cpu_train_t{t}", quick, log, round_)
             for t in order}
    return [{**kernels[t], "train_loadavg_before": train[t]["loadavg_before"],
             "report": {**kernels[t]["report"],
                        "rows": kernels[t]["report"]["rows"] + train[t]["report"]["rows"]}}
            for t in THREADS]


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


def run_memory(impl: str, threads: int, log) -> dict:
    load = loadavg()
    log(f"[load {load}] peak memory of conv2d {MEMORY_SHAPE} ({impl}, {threads} threads)")
    peak = conv2d_peak(impl, MEMORY_SHAPE["x"], MEMORY_SHAPE["w"], MEMORY_SHAPE["padding"],
                       threads)
    return {**peak, "loadavg_before": load}


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


def _median(values: list):
    """The median of the values that are not None (None when there are none)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _table(header: list, rows: list) -> list:
    """Markdown lines of a table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def _x(ratio, digits: int = 2) -> str:
    return "-" if ratio is None else f"{ratio:.{digits}f}x"


def _rounds(by_t: dict) -> int:
    return min(len(runs) for runs in by_t.values())


def _training_section(by_t: dict) -> tuple[dict, dict, list]:
    """Median images/s per thread count and framework, the median ratio to torch and the
    median rate over the same round's 1-thread rate, and their lines."""
    per_round = {t: [_training(b["report"]) for b in by_t[t]] for t in THREADS if t in by_t}
    train = {t: {k: _median([r[k] for r in runs]) for k in runs[0]}
             for t, runs in per_round.items()}
    vs_torch = {t: _median([r["gpuconv"] / r["torch"] for r in runs])
                for t, runs in per_round.items()}
    rows = [(f"{t} ({by_t[t][0]['report']['environment']['cpu_threads']})",
             " ".join(f"{b.get('train_loadavg_before', b['loadavg_before'])[0]:.2f}"
                      for b in by_t[t]),
             f"{r['gpuconv']:.0f}", f"{r['torch']:.0f}", _x(vs_torch[t]))
            for t, r in train.items()]
    lines = _table(["threads", "load before each round", "gpuconv images/s (median)",
                    "torch images/s (median)", "vs torch (median of the rounds' ratios)"],
                   rows)
    scaling = {t: {k: _median([a[k] / b[k] for a, b in zip(per_round[t], per_round["1"])])
                   for k in per_round[t][0]}
               for t in ("2", "default") if t in per_round and "1" in per_round}
    if scaling:
        lines += ["", "Training rate over the same round's 1-thread rate (median): " + "; ".join(
            f"{t} threads: gpuconv {_x(s['gpuconv'], 3)}, torch {_x(s['torch'], 3)}"
            for t, s in scaling.items())]
    for t in train:
        train[t]["vs_torch"] = vs_torch[t]
    return train, scaling, lines


def _kernel_section(by_t: dict) -> tuple[dict, list, list]:
    """Each kernel row's median ratio to torch per thread count and its median 2-over-1-thread
    speed-up (runs of the same round); the geomeans and the rows slower on two threads."""
    medians = {t: [_kernel_medians(b["report"]) for b in by_t[t]] for t in THREADS if t in by_t}
    ratios: dict = {t: [] for t in medians}
    rows, slower = [], []
    keys = sorted({k for runs in medians.values() for m in runs for k in m})
    for key in keys:
        cells = []
        for t, runs in medians.items():
            ratio = _median([m[key]["torch"] / m[key]["numpy"] for m in runs
                             if {"torch", "numpy"} <= set(m.get(key, {}))])
            ratios[t] += [ratio] if ratio else []
            cells.append(_x(ratio))
        pairs = zip(medians.get("1", []), medians.get("2", []))
        speedup = _median([one[key]["numpy"] / two[key]["numpy"] for one, two in pairs
                           if "numpy" in one.get(key, {}) and "numpy" in two.get(key, {})])
        if speedup is not None and speedup < 1:
            slower.append({"case": key[0], "pass": key[1], "speedup": speedup})
        rows.append((*key, *cells, _x(speedup)))
    geomean = {t: math.exp(sum(map(math.log, r)) / len(r)) for t, r in ratios.items() if r}
    rows.append(("geomean", "", *(_x(geomean.get(t)) for t in medians), ""))
    lines = _table(["case", "pass", *(f"vs torch, {t}" for t in medians),
                    "gpuconv 2 threads over 1"], rows)
    lines += ["", "Rows slower on 2 threads than on 1: " + (", ".join(
        f"{s['case']} {s['pass']} ({_x(s['speedup'], 3)})" for s in slower) or "none")]
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


def _goals(train: dict, scaling: dict, geomean: dict, slower: list, trains: list,
           mem_ratio: dict, cores) -> list[tuple[str, str, bool]]:
    """Issue 13's goals: (goal, the figures, met?) for each."""
    digits = {t: [r["train_seconds"] for r in trains if r["threads"] == t]
              for t in ("default", "1")}
    best = {t: min(v) for t, v in digits.items() if v}   # the least disturbed run of each
    two = scaling.get("2", {}).get("gpuconv")
    return [
        ("training >= 1.0x torch at every thread count",
         ", ".join(f"{t}: {_x(r['vs_torch'])}" for t, r in train.items()),
         bool(train) and all(r["vs_torch"] >= 1.0 for r in train.values())),
        # Three decimals where a figure meets a threshold: 1.699 printed as "1.70x" read as met.
        ("gpuconv training on 2 threads >= 1.7x its 1-thread rate", _x(two, 3),
         two is not None and two >= 1.7),
        ("the default uses every core", f"default threads {cores}",
         cores == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())),
        ("kernel geomean >= 1.0x torch at every thread count",
         ", ".join(f"{t}: {_x(g)}" for t, g in geomean.items()),
         bool(geomean) and all(g >= 1.0 for g in geomean.values())),
        ("no kernel row slower on 2 threads than on 1", f"{len(slower)} slower", not slower),
        ("`gpuconv train` (digits), default threads no slower than --threads 1 (best runs)",
         " vs ".join(f"{best[t]:.2f} s" for t in best),
         len(best) == 2 and best["default"] <= best["1"]),
        ("conv2d peak memory <= 1.2x torch",
         ", ".join(f"{t} threads {_x(r)}" for t, r in mem_ratio.items()),
         bool(mem_ratio) and all(r <= 1.2 for r in mem_ratio.values())),
    ]


def summarise(benches: list, trains: list, memory: list, quiet: dict | None,
              when: str | None = None) -> tuple[dict, str]:
    """The summary JSON and its Markdown tables; ``when``: the date of the run (now)."""
    by_t: dict = {}
    for b in benches:
        by_t.setdefault(b["threads"], []).append(b)
    load = ([s["loadavg_before"][0] for s in benches + trains + memory]
            + [b["train_loadavg_before"][0] for b in benches if "train_loadavg_before" in b])
    when = when or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Measured by `bench/cpu_threads.py` on {when}"
             f"; 1-minute load average before each step {min(load):.2f}-{max(load):.2f}"
             + ("" if quiet is None else
                f"; machine quiet before the start: {quiet['quiet']} (1-minute load "
                f"{quiet['load']:.2f} after waiting {quiet['waited_s']} s)")
             + f"; {_rounds(by_t)} round(s) of the bench runs, each figure a median over them"
             + ". Timings on shared cores say little about scaling: check the load column.",
             ""]
    train, scaling, train_lines = _training_section(by_t)
    geomean, slower, kernel_lines = _kernel_section(by_t)
    mem_ratio, mem_lines = _memory_section(memory)
    cores = (by_t["default"][0]["report"]["environment"]["cpu_threads"] if "default" in by_t
             else None)
    goals = _goals(train, scaling, geomean, slower, trains, mem_ratio, cores)
    lines += _table(["goal", "measured", "met"],
                    [(g, m, "yes" if ok else "**no**") for g, m, ok in goals]) + [""]
    lines += ["Training (`gpuconv bench train`, eager, images/s):", ""] + train_lines + [""]
    lines += ["Kernels (`gpuconv bench conv pool lstm`, torch's median over gpuconv's numpy "
              "impl's):", ""] + kernel_lines + [""]
    lines += _table(["`gpuconv train` (digits)", "load before", "training s", "wall s",
                     "test accuracy"],
                    [(f"threads {t['threads']}", f"{t['loadavg_before'][0]:.2f}",
                      f"{t['train_seconds']:.2f}", f"{t['wall_seconds']:.1f}",
                      "-" if t["test_accuracy"] is None else f"{100 * t['test_accuracy']:.1f}%")
                     for t in trains]) + [""]
    lines += mem_lines
    summary = {"date": when, "quiet": quiet, "goals": [{"goal": g, "measured": m, "met": ok}
                                         for g, m, ok in goals],
               "training": train, "training_scaling": scaling,
               "kernel_geomean_vs_torch": geomean, "slower_on_two_threads": slower,
               "train_digits": trains, "memory": memory, "memory_ratio": mem_ratio,
               "benches": [{**{k: v for k, v in b.items() if k != "report"},
                            "training": _training(b["report"]),
                            "kernels_ms": {f"{c} {p}": m for (c, p), m in
                                           _kernel_medians(b["report"]).items()}}
                           for b in benches]}
    return summary, "\n".join(lines) + "\n"


def write_results_section(path: Path, body: str, out: Path) -> None:
    """Replace this script's section of ``path`` (bench/RESULTS.md) with ``body``, or append
    the section when the file has none (creating the file)."""
    files = ", ".join(f"`{n}`" for n in ("cpu_threads.json", "results_cpu_t1.json",
                                         "results_cpu_t2.json", "results_cpu_tdefault.json",
                                         "results_cpu_train_t1.json",
                                         "results_cpu_train_t2.json",
                                         "results_cpu_train_tdefault.json"))
    section = (f"{BEGIN}\n## CPU threads (issue 13)\n\nCommand: `python bench/cpu_threads.py"
               f" --out {out}`; JSON: {files} beside this file (each bench run's full "
               f"table: the matching `.md`).\n\n{body}{END}\n")
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench",
                   help="folder for the JSON, the Markdown and RESULTS.md's section (bench)")
    p.add_argument("--wait-quiet", type=float, help="wait for a 1-minute load average below this")
    p.add_argument("--max-wait", type=float, default=3600)
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds of the six bench runs, rounded up to an even number (each "
                        "order of the training runs in half of them); ratios are medians "
                        "over them (4)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: tiny shapes, one epoch once per thread count, a 256x256 "
                        "image")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, flush=True)   # noqa: E731
    quiet = wait_quiet(args.wait_quiet, args.max_wait, log) if args.wait_quiet else None
    if args.quick:
        MEMORY_SHAPE["x"] = (1, 3, 256, 256)
    rounds = 1 if args.quick else max(2, args.rounds + args.rounds % 2)
    with tempfile.TemporaryDirectory() as later:   # the later rounds' JSON: summarised only
        benches = [b for r in range(rounds)
                   for b in run_round(r, out if r == 0 else Path(later), args.quick, log)]
    digits_rounds = 1 if args.quick else 2
    trains = [run_train(t, args.quick, log) for _ in range(digits_rounds)
              for t in ("default", "1")]
    cores = benches[-1]["report"]["environment"]["cpu_threads"]
    memory = [run_memory(which, n, log) for n in sorted({1, cores}) for which in ("numpy", "torch")]
    summary, text = summarise(benches, trains, memory, quiet)
    (out / "cpu_threads.json").write_text(json.dumps(summary, indent=2, default=float))
    write_results_section(out / "RESULTS.md", text, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
