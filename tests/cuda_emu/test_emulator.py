"""The CUDA emulator's own checks (README.md here): arguments marshalled as CuPy 14 marshals
them, and reads and writes outside an array argument failing the launch. The kernels are in
selftest.cu beside this file."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cuda_emu import fake_cupy as cp

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")

N = 37


@pytest.fixture(scope="module")
def module():
    return cp.RawModule(code=(Path(__file__).parent / "selftest.cu").read_text())


def _launch_twice(kernel, args) -> list[str]:
    """The errors of two consecutive launches (launches alternate the side of each array
    that lies against an inaccessible page)."""
    errors = []
    for _ in range(2):
        try:
            kernel((2,), (32,), args)
        except RuntimeError as exc:
            errors.append(str(exc))
    return errors


def test_a_kernel_inside_its_arrays_runs_on_both_layouts(module):
    x = cp.asarray(np.arange(N, dtype=np.float32))
    for _ in range(2):
        y = cp.asarray(np.full(N, np.nan, np.float32))
        module.get_function("copy_f32")((2,), (32,), (x, y, N))
        np.testing.assert_array_equal(y.get(), x.get())


@pytest.mark.parametrize("shift, where", [(1, "past its end"), (-1, "before its start")])
def test_a_read_outside_an_array_fails_the_launch(module, shift, where):
    x = cp.asarray(np.arange(N, dtype=np.float32))
    y = cp.asarray(np.zeros(N, np.float32))
    errors = _launch_twice(module.get_function("shifted_read_f32"), (x, y, N, shift))
    assert any("read outside array argument 0" in e and where in e for e in errors), errors


@pytest.mark.parametrize("shift", [1, -1])
def test_a_write_outside_an_array_fails_every_launch(module, shift):
    x = cp.asarray(np.arange(N, dtype=np.float32))
    y = cp.asarray(np.zeros(N, np.float32))
    errors = _launch_twice(module.get_function("shifted_write_f32"), (x, y, N, shift))
    assert len(errors) == 2 and all("outside array argument" in e for e in errors), errors


def test_views_of_one_buffer_share_their_memory_in_a_launch(module):
    buffer = cp.asarray(np.arange(2 * N, dtype=np.float32))
    module.get_function("copy_f32")((2,), (32,), (buffer[:N], buffer[N:], N))
    np.testing.assert_array_equal(buffer.get()[N:], np.arange(N, dtype=np.float32))


def test_python_scalars_are_marshalled_as_cupy_marshals_them():
    assert cp.cupy_argument(True) == ("bool", b"\x01")
    assert cp.cupy_argument(3) == ("int64", np.int64(3).tobytes())
    assert cp.cupy_argument(1 << 63) == ("uint64", np.uint64(1 << 63).tobytes())
    assert cp.cupy_argument(0.5) == ("float64", np.float64(0.5).tobytes())
    assert cp.cupy_argument(np.float32(0.5)) == ("float32", np.float32(0.5).tobytes())
    assert cp.cupy_argument(np.array([2], np.int32)) == ("int32", np.int32(2).tobytes())
    assert cp.cupy_argument(None) == ("null", bytes(8))
    with pytest.raises(TypeError, match="numpy.ndarray of shape"):
        cp.cupy_argument(np.zeros(2))


def test_each_scalar_reaches_the_kernel_with_its_declared_type(module):
    out = cp.asarray(np.zeros(6))
    module.get_function("scalars")((1,), (1,), (True, np.int32(-5), -7, 1 << 63, np.float32(1.5),
                                               2.25, out))
    np.testing.assert_array_equal(out.get(), [1, -5, -7, 2.0 ** 63, 1.5, 2.25])


@pytest.mark.parametrize("argument, given", [
    (1, "int64"), (1.5, "float64"), (False, "bool"), (np.int64(1), "int64")])
def test_a_scalar_of_another_width_than_the_parameter_is_refused(module, argument, given):
    out = cp.asarray(np.zeros(6))
    args = [True, argument, -7, 1 << 63, np.float32(1.5), 2.25, out]  # argument 1 is an int
    with pytest.raises(TypeError, match=f"argument 1 \\(int32\\).*CuPy passes as {given}"):
        module.get_function("scalars")((1,), (1,), tuple(args))


def test_none_is_a_null_pointer_and_a_host_array_is_refused(module):
    y = cp.asarray(np.zeros(N, np.float32))
    module.get_function("shifted_write_f32")((1,), (32,), (None, y, 0, 0))
    with pytest.raises(TypeError, match="numpy.ndarray of shape"):
        module.get_function("copy_f32")((1,), (32,), (np.zeros(N, np.float32), y, N))
    with pytest.raises(TypeError, match="expected a device array, got float32"):
        module.get_function("copy_f32")((1,), (32,), (np.float32(0), y, N))
