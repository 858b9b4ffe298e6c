"""The array-module layer and the op registry: dispatch rules, impl forcing, interop."""
import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest

from gpuconv import backend, kernels


@pytest.fixture
def registry(monkeypatch):
    """An empty registry, so these tests register toy ops without touching the real ones."""
    monkeypatch.setattr(kernels, "_REGISTRY", {})
    monkeypatch.setattr(kernels, "_loaded", True)
    return kernels


def _toy(registry, *, fast_available=True, fast_priority=0):
    registry.register("toy", "reference", priority=-100)(lambda x: ("reference", x))
    registry.register("toy", "numpy", priority=fast_priority,
                      available=lambda: fast_available)(lambda x: ("numpy", x))
    registry.register("toy", "gpu", device="cuda")(lambda x: ("gpu", x))


def test_dispatch_picks_highest_priority_available_cpu_impl(registry):
    _toy(registry)
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "numpy"


def test_dispatch_skips_unavailable_impl(registry):
    _toy(registry, fast_available=False)
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "reference"


def test_priority_may_depend_on_the_arguments(registry):
    _toy(registry, fast_priority=lambda x: 1 if x.size > 4 else -200)
    assert registry.dispatch("toy", None, np.zeros(8))[0] == "numpy"
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "reference"


def test_a_kept_choice_follows_an_entry_replaced_in_place(registry):
    _toy(registry)
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "numpy"
    impls = registry._REGISTRY["toy"]
    impls["reference"] = dataclasses.replace(impls["reference"], priority=100)
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "reference"


def test_a_kept_choice_follows_an_entry_made_unavailable_in_place(registry):
    _toy(registry)
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "numpy"
    impls = registry._REGISTRY["toy"]
    impls["numpy"] = dataclasses.replace(impls["numpy"], is_available=lambda: False)
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "reference"


def test_a_gpu_impls_argument_priority_leaves_the_cpu_choice_kept(registry, monkeypatch):
    """Only CPU impls compete for a CPU array, so a GPU priority that weighs the arguments
    does not make every CPU call choose again."""
    monkeypatch.setattr(registry, "_CHOICES", {})
    registry.register("toy", "reference", priority=-100)(lambda x: ("reference", x))
    registry.register("toy", "numpy")(lambda x: ("numpy", x))
    registry.register("toy", "gpu", device="cuda", priority=lambda x: 50)(lambda x: ("gpu", x))
    x = np.zeros(2, np.float32)
    assert registry.dispatch("toy", None, x)[0] == "numpy"
    assert registry._CHOICES[("toy", "cpu", x.dtype)][1].name == "numpy"


def test_an_impl_whose_availability_changes_is_asked_every_time(registry):
    available = [True]
    registry.register("toy", "reference", priority=-100)(lambda x: ("reference", x))
    registry.register("toy", "numpy", available=lambda: available[0])(lambda x: ("numpy", x))
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "numpy"
    available[0] = False
    assert registry.dispatch("toy", None, np.zeros(2))[0] == "reference"


def test_impl_keyword_forces_an_impl(registry):
    _toy(registry)
    assert registry.dispatch("toy", "reference", np.zeros(2))[0] == "reference"


def test_unknown_impl_is_a_value_error_listing_the_registered_ones(registry):
    _toy(registry)
    with pytest.raises(ValueError, match="unknown impl 'nope'.*reference"):
        registry.dispatch("toy", "nope", np.zeros(2))


def test_forcing_a_gpu_impl_on_a_cpu_array_is_a_value_error(registry):
    _toy(registry)
    with pytest.raises(ValueError, match="runs on cuda arrays"):
        registry.dispatch("toy", "gpu", np.zeros(2))


def test_dtype_restricted_impl_is_skipped_for_other_dtypes(registry):
    registry.register("toy", "reference", priority=-100)(lambda x: "reference")
    registry.register("toy", "f32", dtypes=["float32"])(lambda x: "f32")
    assert registry.dispatch("toy", None, np.zeros(2, np.float64)) == "reference"
    assert registry.dispatch("toy", None, np.zeros(2, np.float32)) == "f32"
    with pytest.raises(TypeError, match=r"does not support dtype float64 \(input shape \(2,\)\)"):
        registry.dispatch("toy", "f32", np.zeros(2, np.float64))


def test_no_impl_for_a_dtype_is_a_type_error_naming_op_dtype_and_shape(registry):
    registry.register("toy", "f32", dtypes=["float32"])(lambda x: "f32")
    with pytest.raises(TypeError, match=r"toy: no implementation runs on a cpu array of dtype "
                                        r"float16 \(input shape \(2, 3\)\)"):
        registry.dispatch("toy", None, np.zeros((2, 3), np.float16))


def test_available_lists_runnable_impls_for_an_array(registry):
    _toy(registry)
    assert registry.available("toy", np.zeros(2)) == ["reference", "numpy"]
    assert "gpu" not in registry.available("toy")  # no GPU on a CI machine


def test_registering_a_name_twice_is_an_error(registry):
    _toy(registry)
    with pytest.raises(ValueError, match="already has an implementation"):
        registry.register("toy", "numpy")(lambda x: x)


def test_unknown_op_is_a_value_error(registry):
    with pytest.raises(ValueError, match="unknown op 'nothing'"):
        registry.implementations("nothing")


def test_every_op_has_a_reference_impl():
    for op in kernels.ops():
        names = [i.name for i in kernels.implementations(op)]
        assert "reference" in names, f"{op} has no reference impl: {names}"


def test_the_registry_answers_for_every_public_op():
    import gpuconv.functional as F

    public = [name for name in F.__all__ if callable(getattr(F, name))
              and not isinstance(getattr(F, name), type)]
    for op in public:
        assert "reference" in kernels.available(op), op
        assert op in kernels.ops(), op


@pytest.mark.parametrize("op", sorted(kernels.RUNS_AS))
def test_a_1d_op_has_the_impls_of_the_2d_op_it_runs_as(op):
    assert kernels.available(op) == kernels.available(kernels.RUNS_AS[op])


def test_the_registry_module_exports_only_its_api():
    kernels.ops()  # loads the impl packages, which become attributes of the module
    assert sorted(dir(kernels)) == sorted(kernels.__all__)
    assert "np" not in vars(kernels) and "backend" not in vars(kernels)


def test_numpy_arrays_belong_to_numpy():
    x = np.zeros(3)
    assert backend.array_module(x) is np
    assert backend.device_of(x) == "cpu"


def test_auto_device_is_cpu_without_a_gpu():
    if backend.gpu_available():
        pytest.skip("a GPU is present")
    assert backend.resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="device='cuda' was requested"):
        backend.resolve_device("cuda")


def test_bad_device_name_is_a_value_error():
    with pytest.raises(ValueError, match="device must be"):
        backend.resolve_device("tpu")


def test_poisoned_empty_is_nan_and_plain_empty_is_not_filled():
    with backend.poisoned():
        assert np.isnan(backend.empty((3,), np.float32)).all()


def test_interop_hands_back_torch_tensors_without_copying():
    torch = pytest.importorskip("torch")

    @backend.interop
    def double_in_place(x):
        assert isinstance(x, np.ndarray)
        x *= 2
        return x, x.sum()

    t = torch.arange(4, dtype=torch.float32)
    out, total = double_in_place(t)
    assert isinstance(out, torch.Tensor) and isinstance(total, torch.Tensor)
    assert t.tolist() == [0.0, 2.0, 4.0, 6.0]  # the op saw the caller's memory
    assert out.data_ptr() == t.data_ptr()


def test_import_is_cheap_and_loads_no_gpu_or_torch_module():
    code = ("import sys, time; t = time.perf_counter(); import gpuconv, gpuconv.functional; "
            "dt = time.perf_counter() - t; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('cupy', 'numba', 'numba_cuda', 'torch', 'jax', 'scipy')]; print(dt, bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, bad = out.stdout.split(" ", 1)
    assert bad.strip() == "[]", f"import gpuconv loaded {bad.strip()}"
    assert float(seconds) < 1.0, f"import took {float(seconds):.2f} s"


def test_set_num_threads_rejects_non_positive_counts():
    from gpuconv import threads
    with pytest.raises(ValueError, match="positive int"):
        threads.set_num_threads(0)


def test_thread_count_comes_from_the_environment(monkeypatch):
    from gpuconv import threads
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="GPUCONV_NUM_THREADS"):
        threads.default_threads()


ON_GPU = [pytest.mark.gpu,
          pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")]


@pytest.mark.parametrize("impl", [pytest.param(i, marks=ON_GPU)
                                  for i in ("cuda_direct", "cuda_im2col")])
def test_gpu_out_of_memory_is_a_memory_error_naming_the_op_and_shapes(impl, monkeypatch):
    import gpuconv.functional as F
    cp = backend.cupy_or_none()
    x = backend.to_device(np.ones((2, 3, 8, 8), np.float32), "cuda")
    w = backend.to_device(np.ones((4, 3, 3, 3), np.float32), "cuda")

    def out_of_memory(*args, **kwargs):
        raise cp.cuda.memory.OutOfMemoryError(1 << 40, 0)
    monkeypatch.setattr(backend, "empty", out_of_memory)
    with pytest.raises(MemoryError, match=r"conv2d: out of GPU memory for input shapes "
                                          r"\[\(2, 3, 8, 8\), \(4, 3, 3, 3\)\]"):
        F.conv2d(x, w, impl=impl)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_gpu_array_of_an_unsupported_dtype_is_a_type_error_naming_op_and_shape(_):
    import gpuconv.functional as F
    x = backend.to_device(np.ones((2, 3, 8, 8), np.float16), "cuda")
    # (conv2d takes float16 on a GPU since cuda_igemm; pooling still does not)
    with pytest.raises(TypeError, match=r"max_pool2d: no implementation runs on a cuda array "
                                        r"of dtype float16 \(input shape \(2, 3, 8, 8\)\)"):
        F.max_pool2d(x, 2)


# Every dtype a public op takes from torch, with an op of each kind: float inputs, integer
# targets and indices.
TORCH_DTYPES = ["float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_tensors_of_every_supported_dtype_go_in_and_come_back(dtype):
    torch = pytest.importorskip("torch")
    import gpuconv.functional as F

    dt = getattr(torch, dtype)
    x, w = torch.randn(2, 3, 6, 6, dtype=dt), torch.randn(4, 3, 3, 3, dtype=dt)
    for out in (F.relu(x), F.conv2d(x, w, padding=1), F.max_pool2d(x, 2),
                F.cross_entropy(x[:, :, 0, 0], torch.tensor([0, 2], dtype=torch.int32)),
                F.embedding(torch.tensor([[1, 0]]), w[:, :, 0, 0])):
        assert isinstance(out, torch.Tensor) and out.dtype == dt


def test_a_bfloat16_tensor_is_a_type_error_that_says_how_to_convert_it():
    torch = pytest.importorskip("torch")
    import gpuconv.functional as F

    with pytest.raises(TypeError, match=r"conv2d: weight is a torch.bfloat16 array.*\.float\(\)"):
        F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3, dtype=torch.bfloat16))


@pytest.mark.parametrize("which", ["input", "hx[1]"])
def test_a_tensor_that_requires_grad_points_at_the_pytorch_integration(which):
    torch = pytest.importorskip("torch")
    import gpuconv.functional as F

    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    (x if which == "input" else c).requires_grad_(True)
    with pytest.raises(TypeError, match=rf"lstm_cell: {re.escape(which)} is a torch tensor that "
                                        r"requires grad.*gpuconv\.torch.*detach\(\)"):
        F.lstm_cell(x, (h, c), torch.randn(16, 3), torch.randn(16, 4))
