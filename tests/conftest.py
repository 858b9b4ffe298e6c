import os

import pytest

from gpuconv import backend, threads


# Without a GPU, numba.cuda runs as its CPU simulator so that the numba_cuda kernels are
# still tested (tests/test_numba_cuda.py). It must be set before numba.cuda is imported.
if not backend.gpu_available():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# One CPU thread for numba and BLAS, as the command line uses: on a 2-core machine their
# two spinning thread pools otherwise slow each other down many times over. (After the
# simulator switch: numba reads its configuration when it is first imported.)
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
