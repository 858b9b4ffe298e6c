"""Value checks made on the GPU (gpuconv.device_checks): the class targets of the losses and
the indices of max-pool backward are checked inside the kernels, without a synchronisation,
and raise at the next read of the flags; with eager checks they raise at the call, as on
the CPU. Without a GPU these run under the CUDA emulator (tests/test_cuda_emulated.py),
which also counts the synchronisations."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv.functional as F
from gpuconv import backend, device_checks
from support import assert_close

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")]

CLASS_OPS = ["cross_entropy", "nll_loss"]
X = np.linspace(-1, 1, 20).reshape(4, 5)


def _cuda(a):
    return backend.to_device(np.asarray(a), "cuda")


def _call(op: str, target, backward: bool, **kwargs):
    x = _cuda(X)
    if backward:
        return getattr(F, op + "_backward")(_cuda(np.array(1.0)), x, _cuda(target), **kwargs)
    return getattr(F, op)(x, _cuda(target), **kwargs)


@pytest.fixture(autouse=True)
def _clear_flags():
    """Each test starts and ends with no flag set."""
    device_checks.check()
    yield
    try:
        device_checks.check()
    except device_checks.DeviceCheckError:
        pass


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("bad", [5, -1])
@pytest.mark.parametrize("op", CLASS_OPS)
def test_a_target_out_of_range_raises_at_the_next_check_naming_the_range(op, bad, backward):
    _call(op, [0, bad, 1, 2], backward)  # no synchronisation, no error yet
    name = op + "_backward" if backward else op
    with pytest.raises(device_checks.DeviceCheckError,
                       match=rf"{name}: target values must lie in \[0, 5\).*found {bad}"):
        device_checks.check()


@pytest.mark.parametrize("op", CLASS_OPS)
def test_a_bad_target_row_is_skipped_so_the_other_rows_stay_exact(op):
    good = getattr(F, op)(X, np.array([0, 3, 1, 2]), reduction="none", impl="reference")
    out = backend.to_numpy(_call(op, [0, 7, 1, 2], False, reduction="none"))
    np.testing.assert_array_equal(out[1], 0.0)
    assert_close(out[[0, 2, 3]], good[[0, 2, 3]], "float64")
    with pytest.raises(device_checks.DeviceCheckError):
        device_checks.check()


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("op", CLASS_OPS)
def test_a_mean_over_ignored_targets_raises_at_the_next_check(op, backward):
    _call(op, [3, 3, 3, 3], backward, ignore_index=3)
    with pytest.raises(device_checks.DeviceCheckError, match="all targets are ignored"):
        device_checks.check()


@pytest.mark.parametrize("op", CLASS_OPS)
def test_a_mean_over_zero_class_weights_raises_at_the_next_check(op):
    _call(op, [0, 1, 4, 2], False, weight=_cuda([0.0, 0.0, 1.0, 1.0, 0.0]), ignore_index=2)
    with pytest.raises(device_checks.DeviceCheckError, match="weights of the non-ignored"):
        device_checks.check()


@pytest.mark.parametrize("bad", [36, -1])
def test_max_pool_indices_outside_the_plane_raise_at_the_next_check(bad):
    x = _cuda(np.zeros((1, 2, 6, 6)))
    F.max_pool2d_backward(_cuda(np.zeros((1, 2, 3, 3))), x, 2,
                          indices=_cuda(np.full((1, 2, 3, 3), bad, np.int64)))
    with pytest.raises(device_checks.DeviceCheckError,
                       match=rf"max_pool2d_backward: indices must lie in \[0, 36\).*found {bad}"):
        device_checks.check()


def test_a_raised_check_clears_the_flags():
    _call("cross_entropy", [0, 9, 1, 2], False)
    with pytest.raises(device_checks.DeviceCheckError):
        device_checks.check()
    device_checks.check()


def test_read_copies_the_arrays_and_raises_on_a_flag_in_the_same_transfer():
    a, b = _cuda(np.arange(3.0)), _cuda(np.array([7, 8], np.int64))
    host_a, host_b = device_checks.read(a, b)
    np.testing.assert_array_equal(host_a, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(host_b, [7, 8])
    _call("nll_loss", [0, 9, 1, 2], False)
    with pytest.raises(device_checks.DeviceCheckError, match="found 9"):
        device_checks.read(a)


@pytest.mark.parametrize("op", CLASS_OPS)
def test_eager_checks_raise_at_the_call_as_on_the_cpu(op):
    with device_checks.eager_checks():
        with pytest.raises(ValueError, match=r"target values must lie in \[0, 5\).*found 5"):
            _call(op, [0, 5, 1, 2], False)
        with pytest.raises(ValueError, match="all targets are ignored"):
            _call(op, [3, 3, 3, 3], False, ignore_index=3)
    device_checks.check()  # nothing was left for later
