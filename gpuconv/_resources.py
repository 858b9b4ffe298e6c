"""Where the package's data folders are. In a wheel they are ``gpuconv/_cuda`` (the CUDA C
sources) and ``gpuconv/_bench_suites`` (the benchmark suites); in a source checkout those
are links to ``kernels/`` and ``bench/suites/``, so editable installs and PYTHONPATH
checkouts find the same files."""
from __future__ import annotations

from pathlib import Path


def _data_dir(packaged: str, checkout: str, what: str) -> Path:
    here = Path(__file__).resolve().parent
    candidates = (here / packaged, here.parent / checkout)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gpuconv's {what} are missing: looked in "
                            f"{' and '.join(str(c) for c in candidates)}")


def cuda_source_dir() -> Path:
    """The folder that holds ``kernels/*.cu`` for this installation."""
    return _data_dir("_cuda", "kernels", "CUDA sources")


def bench_suite_dir() -> Path:
    """The folder that holds the benchmark suites (``bench/suites/*.json``)."""
    return _data_dir("_bench_suites", "bench/suites", "benchmark suites")
