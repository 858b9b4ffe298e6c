import os

import pytest

from gpuconv import backend, threads


# Without a GPU, numba.cuda runs as its CPU simulator so that the numba_cuda kernels are
# still tested (tests/test_numba_cuda.py). It must be set before numba.cuda is imported.
if not backend.gpu_available():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# The CPU kernels' thread pool at its default size, as the command line uses
# ($GPUCONV_NUM_THREADS, else the cores this process may use), and NumPy's BLAS at one
# thread (gpuconv.threads), before any test runs.
threads.set_num_threads(threads.default_threads())

# Hypothesis budget sized for the 2-core CI machine.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=25, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _poison_outputs():
    """Every output an impl allocates through backend.empty starts as NaN in tests."""
    with backend.poisoned():
        yield


def pytest_terminal_summary(terminalreporter):
    """Skips counted by reason, one line each (pytest's -rs lists every test location).

    The GPU impls' tests, for instance, skip on a machine without a GPU by the hundred with
    the same reason; they run against the emulated CuPy in tests/test_cuda_emulated.py."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):   # (path, line, "Skipped: reason")
            reason = report.longrepr[2].removeprefix("Skipped: ")
        else:
            reason = str(report.longrepr)
        reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return
    terminalreporter.section("skipped, by reason")
    width = len(str(max(reasons.values())))
    for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        terminalreporter.write_line(f"{count:>{width}} {reason}")
