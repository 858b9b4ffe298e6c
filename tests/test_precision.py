"""The float32 precision setting (gpuconv/precision.py) that the convolution and the
recurrent kernels share: its values, where it holds (process, thread, block), and the mode
each kind of array computes in. The kernels' accuracy per mode is tested with the kernels
(tests/test_conv_igemm.py, tests/test_rnn_persistent.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from gpuconv import precision
from gpuconv.precision import float32_precision, get_float32_precision, mode_of


@pytest.fixture
def process_setting():
    """Restores the process-wide setting a test changes."""
    old = get_float32_precision()
    yield
    precision.set_float32_precision(old)


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_float32_arrays_compute_in_fp32_by_default():
    assert get_float32_precision() == "fp32" and mode_of(np.float32) == "fp32"


@pytest.mark.parametrize("bad", ["fast", "TF32", "bfloat16", "fp8", None])
def test_a_value_outside_the_four_is_a_value_error_naming_them(bad, process_setting):
    with pytest.raises(ValueError, match="must be one of fp32, tf32, bf16, fp16"):
        precision.set_float32_precision(bad)
    with pytest.raises(ValueError, match="must be one of fp32, tf32, bf16, fp16"):
        with float32_precision(bad):
            pass
    assert get_float32_precision() == "fp32"


def test_the_process_setting_holds_in_every_thread(process_setting):
    precision.set_float32_precision("tf32")
    assert _in_thread(get_float32_precision) == "tf32"


def test_a_block_sets_its_own_thread_only_and_is_undone_on_error():
    with pytest.raises(RuntimeError):
        with float32_precision("bf16"):
            assert get_float32_precision() == "bf16"
            assert _in_thread(get_float32_precision) == "fp32"
            raise RuntimeError
    assert get_float32_precision() == "fp32"


def test_blocks_nest_and_win_over_the_process_setting(process_setting):
    with float32_precision("tf32"):
        precision.set_float32_precision("fp16")
        assert get_float32_precision() == "tf32"
        with float32_precision("bf16"):
            assert get_float32_precision() == "bf16"
        assert get_float32_precision() == "tf32"
    assert get_float32_precision() == "fp16"


@pytest.mark.parametrize("setting", precision.PRECISIONS)
def test_other_dtypes_keep_their_own_mode(setting):
    with float32_precision(setting):
        assert mode_of(np.float32) == setting
        assert (mode_of(np.float64), mode_of(np.float16)) == ("fp64", "fp16")


@pytest.mark.parametrize("setting, supported, mode", [
    ("fp32", ("fp32", "tf32"), "fp32"),
    ("tf32", ("fp32",), "fp32"),
    ("bf16", ("fp32", "tf32"), "tf32"),
    ("fp16", ("fp32", "tf32"), "tf32"),
    # Neither 16-bit type stands in for the other: bf16 lacks fp16's mantissa, fp16 bf16's range.
    ("bf16", ("fp32", "fp16"), "fp32"),
    ("fp16", ("fp32", "bf16"), "fp32"),
])
def test_a_kernel_without_the_setting_takes_the_nearest_more_accurate_mode(setting, supported,
                                                                             mode):
    with float32_precision(setting):
        assert mode_of(np.float32, supported) == mode


def test_no_mode_as_accurate_is_a_value_error():
    with pytest.raises(ValueError, match="no mode of tf32 is as accurate as float32 precision"):
        mode_of(np.float32, ("tf32",))


@pytest.mark.parametrize("value, expect", [("bf16", "bf16"), ("half", "must be one of")])
def test_the_environment_variable_gives_the_starting_value(value, expect):
    env = {**os.environ, "GPUCONV_FLOAT32_PRECISION": value}
    run = subprocess.run([sys.executable, "-c", "from gpuconv import precision; "
                          "print(precision.get_float32_precision())"],
                         env=env, capture_output=True, text=True)
    assert expect in run.stdout + run.stderr
