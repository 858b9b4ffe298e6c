"""The fused optimizer updates (ops ``<optimizer>_step``): every impl against the reference.

The CPU's fused numba updates (impl ``numpy``, SGD and Adam) run everywhere: each matches
the reference bit for bit, since they compute its operations in its order and dtype.

Without a GPU (this machine, CI) three things run:

- the numba.cuda kernels under the CUDA simulator;
- the optimizers on non-contiguous parameters (the CPU path);
- the tests marked ``gpu``, once more in tests/test_cuda_emulated.py, where the CUDA C
  kernels of ``kernels/optim.cu`` run on the CPU under the CUDA emulator.

On a GPU the tests marked ``gpu`` run every CUDA impl on CuPy arrays, and each optimizer's
CuPy path against its NumPy path for three steps.

A case is one update from random state (not zeros), so every term of the formula counts.
Every element that the reference moves, it moves by far more than the tolerance (checked),
so an element a kernel leaves unwritten fails; a first SGD step's momentum buffer is a fresh
output and starts as NaN.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from gpuconv import backend, kernels, optim
from gpuconv.kernels import numba_cuda
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import TOL, assert_close, device_counts, impl_params, on_device_of, rng_for

DTYPES = ["float64", "float32"]
SHAPE = (3, 5)
OPS = ("sgd_step", "adam_step", "rmsprop_step", "adagrad_step", "adadelta_step")

# The registry contract (gpuconv/kernels/reference/optim.py): each op's state buffers and
# scalars in argument order, with the scalars' values when a case does not set them.
BUFFERS = {
    "sgd_step": ("momentum_buffer",),
    "adam_step": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "rmsprop_step": ("square_avg", "grad_avg", "momentum_buffer"),
    "adagrad_step": ("state_sum",),
    "adadelta_step": ("square_avg", "acc_delta"),
}
SCALARS = {
    "sgd_step": dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, l1=0.0,
                     nesterov=False, first_step=False),
    "adam_step": dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, l1=0.0,
                      bias_correction1=1 - 0.9 ** 3, bias_correction2=1 - 0.999 ** 3,
                      decoupled_weight_decay=False),
    "rmsprop_step": dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, l1=0.0),
    "adagrad_step": dict(clr=0.1, eps=1e-10, weight_decay=0.0, l1=0.0),
    "adadelta_step": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, l1=0.0),
}
# Buffers that hold signed values; the others hold running sums of squares (positive).
SIGNED = {"exp_avg", "grad_avg", "momentum_buffer"}


class Case(NamedTuple):
    op: str
    buffers: tuple  # the state buffers in use; the op's others are None
    scalars: dict   # overrides of SCALARS[op]

    def __str__(self) -> str:
        used = "+".join(self.buffers) or "stateless"
        return f"{self.op}[{used}](" + ",".join(f"{k}={v}" for k, v in self.scalars.items()) + ")"

    def args(self) -> list:
        return list({**SCALARS[self.op], **self.scalars}.values())


ADAM_ALL = BUFFERS["adam_step"]
RMSPROP_ALL = BUFFERS["rmsprop_step"]
ADAM_EVERY_BUFFER = Case("adam_step", ADAM_ALL, dict(weight_decay=0.1, l1=0.05))
RMSPROP_EVERY_BUFFER = Case("rmsprop_step", RMSPROP_ALL, dict(momentum=0.9, weight_decay=0.1,
                                                              l1=0.05))
CASES = [
    Case("sgd_step", (), dict(weight_decay=0.1, l1=0.05)),
    Case("sgd_step", ("momentum_buffer",), dict(momentum=0.9, dampening=0.1, weight_decay=0.01,
                                                first_step=True)),
    Case("sgd_step", ("momentum_buffer",), dict(momentum=0.9, dampening=0.1, l1=0.05)),
    Case("sgd_step", ("momentum_buffer",), dict(momentum=0.9, nesterov=True, weight_decay=0.1,
                                                l1=0.05)),
    Case("sgd_step", ("momentum_buffer",), dict(momentum=0.5, nesterov=True, first_step=True)),
    Case("adam_step", ADAM_ALL[:2], {}),
    ADAM_EVERY_BUFFER,
    # AdamW's shrink stays below the Adam step, so that the two never cancel.
    Case("adam_step", ADAM_ALL, dict(weight_decay=0.005, decoupled_weight_decay=True)),
    Case("adam_step", ADAM_ALL[:2], dict(beta1=0.5, beta2=0.6, bias_correction1=1 - 0.5 ** 2,
                                         bias_correction2=1 - 0.6 ** 2, weight_decay=0.1,
                                         l1=0.05, decoupled_weight_decay=True)),
    Case("rmsprop_step", ("square_avg",), {}),
    Case("rmsprop_step", ("square_avg", "grad_avg"), dict(alpha=0.9)),
    Case("rmsprop_step", ("square_avg", "momentum_buffer"), dict(momentum=0.9, eps=1e-3)),
    RMSPROP_EVERY_BUFFER,
    Case("adagrad_step", ("state_sum",), {}),
    Case("adagrad_step", ("state_sum",), dict(clr=0.05, eps=1e-6, weight_decay=0.1, l1=0.05)),
    Case("adadelta_step", BUFFERS["adadelta_step"], {}),
    Case("adadelta_step", BUFFERS["adadelta_step"], dict(lr=0.5, rho=0.5, eps=1e-4,
                                                         weight_decay=0.1, l1=0.05)),
]


def _signed(rng, low: float, high: float):
    return rng.choice((-1.0, 1.0), SHAPE) * rng.uniform(low, high, SHAPE)


def _inputs(case: Case, dtype: str) -> list:
    """``[param, grad, *buffers]`` in ``dtype``, None for the buffers not in use.

    The magnitudes keep every element moving: |param| <= 2, so with the cases' weight_decay
    and l1 the regularised |g| >= 0.25, far from the signed buffers (|b| <= 0.01), and g * g
    >= 0.0625 lies above the sums of squares (<= 0.05 plus grad_avg ** 2 when centred).
    """
    rng = rng_for("optim_step", str(case))
    param = np.clip(rng.standard_normal(SHAPE), -2.0, 2.0)
    param[0, 0] = 0.0  # the l1 term's sign(0) = 0
    grad = _signed(rng, 0.5, 1.5)
    buffers = {}
    for name in BUFFERS[case.op]:
        if name not in case.buffers:
            buffers[name] = None
        elif name in SIGNED:
            buffers[name] = _signed(rng, 0.0, 0.01)
        else:
            buffers[name] = rng.uniform(0.01, 0.05, SHAPE)
    if buffers.get("grad_avg") is not None:  # centred: the variance must stay positive
        buffers["square_avg"] += buffers["grad_avg"] ** 2
    if buffers.get("max_exp_avg_sq") is not None:  # amsgrad: half the maxima kept, half replaced
        buffers["max_exp_avg_sq"] = buffers["exp_avg_sq"] * rng.choice((0.5, 2.0), SHAPE)
    if case.scalars.get("first_step"):  # the first step writes the buffer without reading it
        buffers["momentum_buffer"] = np.full(SHAPE, np.nan)
    return [None if a is None else a.astype(dtype) for a in (param, grad, *buffers.values())]


def _assert_moved_like(name: str, out, before, ref, dtype: str) -> None:
    """``out`` equals ``ref`` element by element within the tolerance of ``dtype`` (relative
    to the element plus the array's rms, so elements near zero get an absolute bound), and
    every element that the reference moves, it moves by more than that bound."""
    bound = TOL[dtype] * (np.abs(ref) + np.sqrt(np.mean(ref ** 2)))
    assert np.all(np.isfinite(out)), f"{name}: NaN/inf at {np.argwhere(~np.isfinite(out))}"
    wrong = np.abs(out - ref) > bound
    assert not wrong.any(), (f"{name}: elements {np.argwhere(wrong).tolist()} are "
                             f"{out[wrong]}, the reference says {ref[wrong]}")
    weak = (ref != before) & (np.abs(ref - before) <= bound)
    assert not weak.any(), (f"weak case: {name} moves by less than the tolerance at "
                            f"{np.argwhere(weak).tolist()}")


def _impl(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


def check_step(fn, case: Case, dtype: str, to_device=lambda a: a) -> None:
    """One update by ``fn`` on arrays moved by ``to_device`` against the reference in
    float64 on the same values."""
    arrays = _inputs(case, dtype)
    ref = [None if a is None else a.astype(np.float64) for a in arrays]
    before = [None if a is None else a.copy() for a in ref]
    _impl(case.op, "reference")(*ref, *case.args())
    dev = [None if a is None else to_device(a) for a in arrays]
    fn(*dev, *case.args())
    names = ("param", "grad", *BUFFERS[case.op])
    for name, out, b, r in zip(names, dev, before, ref):
        if out is None:
            continue
        out = backend.to_numpy(out)
        assert out.dtype == np.dtype(dtype), f"{name} became {out.dtype}"
        if name == "grad":
            np.testing.assert_array_equal(out, b, err_msg="the gradient was written")
        else:
            _assert_moved_like(name, out, b, r, dtype)


# --------------------------------------------------------------------------- registry

@pytest.mark.parametrize("op", OPS)
def test_every_update_op_has_fused_gpu_impls_for_float32_and_float64(op):
    impls = {i.name: i for i in kernels.implementations(op)}
    assert impls["reference"].device == "cpu"
    for name in ("cuda_fused", "numba_cuda"):
        assert impls[name].device == "cuda"
        assert impls[name].supports("float32") and impls[name].supports("float64")
    assert impls["cuda_fused"].priority > impls["numba_cuda"].priority


@pytest.mark.parametrize("impl", ["cuda_fused", "numba_cuda"])
def test_fused_impls_refuse_arrays_that_are_not_c_contiguous(impl):
    case = ADAM_EVERY_BUFFER
    param, grad, *buffers = _inputs(case, "float64")
    with pytest.raises(ValueError, match="C-contiguous"):
        _impl(case.op, impl)(np.asfortranarray(param), grad, *buffers, *case.args())


# --------------------------------------------------------------------------- the CPU's numba updates

NUMPY_CASES = [c for c in CASES if c.op in ("sgd_step", "adam_step")]


def _copy(a):
    return None if a is None else a.copy()


def _assert_numpy_update_is_the_references(case: Case, arrays: list, ref: list) -> None:
    """The numpy impl's update of ``arrays`` equals, bit for bit and in their dtypes, the
    reference's update of ``ref`` (the same values, in the dtype the numpy impl computes
    in)."""
    _impl(case.op, "reference")(*ref, *case.args())
    _impl(case.op, "numpy")(*arrays, *case.args())
    for out, want in zip(arrays, ref):
        if out is not None:
            np.testing.assert_array_equal(out, want.astype(out.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NUMPY_CASES, ids=str)
def test_numpy_step_matches_reference(case, dtype):
    check_step(_impl(case.op, "numpy"), case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NUMPY_CASES, ids=str)
def test_numpy_step_equals_the_reference_in_the_same_dtype_bit_for_bit(case, dtype):
    arrays = _inputs(case, dtype)
    arrays[0][0, 1] = -0.0   # sign(-0) is +0 for the l1 term, as NumPy's
    _assert_numpy_update_is_the_references(case, arrays, [_copy(a) for a in arrays])


@pytest.mark.parametrize("case", NUMPY_CASES, ids=str)
def test_numpy_step_of_float16_computes_in_float32(case):
    """float16 arrays go through float32 copies (numpy impls' rule): the float32
    reference's update, rounded to float16."""
    arrays = _inputs(case, "float16")
    _assert_numpy_update_is_the_references(
        case, arrays, [None if a is None else a.astype(np.float32) for a in arrays])


@pytest.mark.parametrize("case", [c for c in NUMPY_CASES if c.buffers], ids=str)
def test_numpy_step_with_state_of_another_dtype_or_shape_is_the_references(case):
    """State the kernels cannot read as the parameter (Module.to(dtype) converts the
    parameters, not an optimizer's state): the reference's operations, its result or its
    error, never a read past a buffer."""
    arrays = _inputs(case, "float64")
    other = [a if a is None or i < 2 else a.astype(np.float32) for i, a in enumerate(arrays)]
    _assert_numpy_update_is_the_references(case, other, [_copy(a) for a in other])
    short = [a if a is None or i < 2 else a[:1].copy() for i, a in enumerate(arrays)]
    with pytest.raises(ValueError):
        _impl(case.op, "numpy")(*short, *case.args())


@pytest.mark.parametrize("op", ["sgd_step", "adam_step"])
def test_numpy_step_of_a_large_parameter_splits_into_ranges_on_every_thread(op, monkeypatch):
    """Cut into ranges on the pool (tiny ranges here), the update is the one-range update."""
    from gpuconv import threads

    case = max((c for c in NUMPY_CASES if c.op == op), key=lambda c: len(c.buffers))
    whole = _inputs(case, "float32")
    split = [None if a is None else a.copy() for a in whole]
    _impl(op, "numpy")(*whole, *case.args())
    monkeypatch.setattr(threads, "MIN_TASK_ELEMENTS", 2)
    before = threads.get_num_threads()
    threads.set_num_threads(3)
    try:
        _impl(op, "numpy")(*split, *case.args())
    finally:
        threads.set_num_threads(before)
    for a, b in zip(split, whole):
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw", [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, l1=0.05),
    dict(lr=0.1, momentum=0.9, nesterov=True),
], ids=["plain", "momentum", "nesterov"])
def test_sgd_steps_small_numpy_parameters_in_chunks_as_one_at_a_time(kw, monkeypatch):
    """More parameters than a chunk, of two dtypes and two groups, one too large for a chunk
    and one not contiguous: three steps equal the reference's update of each on its own,
    bit for bit (a parameter's first step fills its momentum buffer)."""
    from gpuconv.kernels.numpy_impl import optim as host

    monkeypatch.setattr(host, "CHUNK_MAX_SIZE", 40)   # the (7, 7) parameter goes alone
    rng = rng_for("sgd_chunks", str(kw))
    shapes = [(3,), (2, 5), (4, 1, 3, 3), (7, 7), (1,), (6,), (3, 3), (2, 2), (5,), (2, 3, 2)]
    dtypes = [np.float32] * 7 + [np.float64] * 3
    arrays = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    arrays.append(rng.standard_normal((4, 6))[:, ::2])   # not C-contiguous
    params = [Param(a.copy()) for a in arrays]
    params_ref = [a.copy() for a in arrays]
    buffers = [None] * len(arrays)
    opt = optim.SGD([{"params": params[:9]}, {"params": params[9:], "lr": 0.05}], **kw)
    for step in range(3):
        grads = [rng.standard_normal(a.shape).astype(a.dtype) for a in arrays]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for i, (w, g) in enumerate(zip(params_ref, grads)):
            lr = 0.05 if i >= 9 else kw["lr"]
            momentum = kw.get("momentum", 0.0)
            if momentum and buffers[i] is None:
                buffers[i] = np.empty_like(w)
            _impl("sgd_step", "reference")(w, g, buffers[i], lr, momentum,
                                           kw.get("dampening", 0.0), kw.get("weight_decay", 0.0),
                                           kw.get("l1", 0.0), kw.get("nesterov", False),
                                           step == 0)
        for i, (p, w) in enumerate(zip(params, params_ref)):
            np.testing.assert_array_equal(p.data, w, err_msg=f"parameter {i}, step {step + 1}")
            if buffers[i] is not None:
                np.testing.assert_array_equal(opt.state[i]["momentum_buffer"], buffers[i])


def test_sgd_chunks_start_each_momentum_buffer_at_its_parameters_first_gradient():
    """Eleven small parameters of one group and dtype take two chunked calls; those without
    a gradient at the first step (one in each chunk) start their momentum buffer at their
    first gradient, as the reference does, bit for bit."""
    rng = rng_for("sgd_chunk_first_steps", "")
    arrays = [rng.standard_normal((i + 2,)).astype(np.float32) for i in range(11)]
    late = {3, 9}   # parameter 9 is in the second chunk of eight
    params = [Param(a.copy()) for a in arrays]
    buffers = [None] * len(arrays)
    opt = optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.1)
    for step in range(3):
        for i, (p, w) in enumerate(zip(params, arrays)):
            p.grad = None
            if step == 0 and i in late:
                continue
            g = rng.standard_normal(w.shape).astype(np.float32)
            p.grad = g
            first = buffers[i] is None
            if first:
                buffers[i] = np.empty_like(w)
            _impl("sgd_step", "reference")(w, g, buffers[i], 0.1, 0.9, 0.1, 0.0, 0.0, False,
                                           first)
        opt.step()
        for i, (p, w) in enumerate(zip(params, arrays)):
            np.testing.assert_array_equal(p.data, w, err_msg=f"parameter {i}, step {step + 1}")


def test_sgd_chunks_take_read_only_gradients_and_leave_subclasses_their_update():
    rng = rng_for("sgd_chunk_edges", "")
    data = [rng.standard_normal(s) for s in ((3,), (2, 2))]
    grads = [rng.standard_normal(d.shape) for d in data]
    for g in grads:
        g.flags.writeable = False   # as np.asarray of a JAX array
    params = [Param(d.copy()) for d in data]
    want = [Param(d.copy()) for d in data]
    for p, w, g in zip(params, want, grads):
        p.grad, w.grad = g, g.copy()
    optim.SGD(params, lr=0.1, momentum=0.9).step()
    optim.SGD(want, lr=0.1, momentum=0.9).step()
    for p, w in zip(params, want):
        np.testing.assert_array_equal(p.data, w.data)

    class Halved(optim.SGD):
        def _update(self, p, grad, state, group):
            super()._update(p, grad * 0.5, state, group)

    p, w = Param(data[0].copy()), Param(data[0].copy())
    p.grad, w.grad = grads[0], grads[0] * 0.5
    Halved([p], lr=0.1).step()
    optim.SGD([w], lr=0.1).step()
    np.testing.assert_array_equal(p.data, w.data)


# --------------------------------------------------------------------------- numba.cuda simulator

simulator_only = pytest.mark.skipif(not simulator_enabled(),
                                    reason="runs under NUMBA_ENABLE_CUDASIM=1 (no GPU)")


@simulator_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_numba_cuda_step_matches_reference(case, dtype):
    check_step(_impl(case.op, "numba_cuda"), case, dtype)


@simulator_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_cuda_grid_stride_loop_updates_each_element_once(dtype, monkeypatch):
    monkeypatch.setattr(numba_cuda, "THREADS", 4)
    monkeypatch.setattr(numba_cuda, "MAX_BLOCKS", 2)
    check_step(_impl("adam_step", "numba_cuda"), ADAM_EVERY_BUFFER, dtype)


# --------------------------------------------------------------------------- optimizers

OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, l1=0.05)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.1, amsgrad=True, weight_decay=0.1, l1=0.05)),
    ("AdamW", dict(lr=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.1, betas=(0.5, 0.6), l1=0.05)),
    ("RMSprop", dict(alpha=0.9)),
    ("RMSprop", dict(momentum=0.9, centered=True, weight_decay=0.1, l1=0.05)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.5, l1=0.05)),
    ("Adadelta", dict(lr=0.5, rho=0.5, weight_decay=0.1, l1=0.05)),
]
OPTIMIZER_IDS = [f"{n}-" + ",".join(f"{k}={v}" for k, v in kw.items()) for n, kw in OPTIMIZERS]
STEPS = 3
needs_gpu = [pytest.mark.gpu,
             pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")]
DEVICES = ["cpu", pytest.param("cuda", marks=needs_gpu)]


class Param:
    def __init__(self, data):
        self.data = data
        self.grad = None


def _start(name: str):
    rng = rng_for("optim_gpu_trajectory", name)
    return rng.standard_normal(SHAPE), [rng.standard_normal(SHAPE) for _ in range(STEPS)]


def _trajectory(name: str, kw: dict, data, grads: list) -> list[dict]:
    """After each step: the parameter and its state arrays, copied to the host."""
    p = Param(data)
    opt = getattr(optim, name)([p], **kw)
    out = []
    for g in grads:
        p.grad = g
        opt.step()
        arrays = {k: v for k, v in opt.state[0].items() if not isinstance(v, int)}
        out.append({k: backend.to_numpy(v).copy() for k, v in {"param": p.data, **arrays}.items()})
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, kw", OPTIMIZERS, ids=OPTIMIZER_IDS)
def test_noncontiguous_parameter_is_updated_in_place_like_a_contiguous_one(name, kw, device):
    w0, grads = _start(name)
    base = backend.to_device(np.zeros((2 * SHAPE[1], SHAPE[0])), device)
    view = base[::-2].T  # negatively strided and transposed: neither C- nor F-contiguous
    view[...] = backend.to_device(w0, device)
    strided_grads = [backend.to_device(np.asfortranarray(g), device) for g in grads]
    got = _trajectory(name, kw, view, strided_grads)
    want = _trajectory(name, kw, backend.to_device(w0, device),
                       [backend.to_device(g, device) for g in grads])
    np.testing.assert_array_equal(backend.to_numpy(view), want[-1]["param"])
    for t, (g, w) in enumerate(zip(got, want)):
        for key in w:
            np.testing.assert_array_equal(g[key], w[key], err_msg=f"step {t + 1}, {key}")


# --------------------------------------------------------------------------- on a GPU

def _gpu_params():
    return [pytest.param(case, p.values[0], marks=p.marks, id=f"{case}-{p.values[0]}")
            for case in CASES for p in impl_params(case.op)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, impl", _gpu_params())
def test_gpu_step_matches_reference(case, impl, dtype):
    check_step(_impl(case.op, impl), case, dtype, lambda a: on_device_of(impl, case.op, a))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kw", OPTIMIZERS, ids=OPTIMIZER_IDS)
@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")
def test_cupy_optimizer_tracks_the_numpy_path_for_three_steps(name, kw, dtype):
    w0, grads = _start(name)
    want = _trajectory(name, kw, w0.copy(), grads)  # the NumPy path updates in place
    got = _trajectory(name, kw, backend.to_device(w0.astype(dtype), "cuda"),
                      [backend.to_device(g.astype(dtype), "cuda") for g in grads])
    for t, (g, w) in enumerate(zip(got, want)):
        assert g.keys() == w.keys()
        for key in w:
            assert g[key].dtype == np.dtype(dtype)
            assert_close(g[key], w[key], dtype, f"step {t + 1}, {key}")


# --------------------------------------------------------------------------- one launch per dtype

# A zero-size parameter, one of several chunks (kernels/optim.cu cuts 8192-element chunks),
# and small ones; the first group float32, the second float64 with its own learning rate.
MULTI_SHAPES = [[(3, 5), (0,), (2, 8200)], [(4,), (17000,)]]
MULTI_DTYPES = ["float32", "float64"]


def _multi_start(name: str):
    rng = rng_for("optim_multi_tensor", name)
    groups = [[rng.standard_normal(s) for s in shapes] for shapes in MULTI_SHAPES]
    grads = [[[rng.standard_normal(s) for s in shapes] for shapes in MULTI_SHAPES]
             for _ in range(STEPS)]
    return groups, grads


def _multi_run(name: str, kw: dict, device: str, counts_per_step: list | None = None):
    """The parameters after each of STEPS steps over two groups of two dtypes; the second
    group's lr is halved after the first step, as a scheduler would."""
    w0, grads = _multi_start(name)
    params = [[Param(backend.to_device(w.astype(dt), device)) for w in ws]
              for ws, dt in zip(w0, MULTI_DTYPES)]
    lr = kw.get("lr", 0.01)
    opt = getattr(optim, name)([{"params": params[0]}, {"params": params[1], "lr": lr / 3}],
                               **kw)
    for ps in params:  # one gradient buffer per parameter, refilled at each step
        for p in ps:
            p.grad = backend.to_device(np.zeros_like(backend.to_numpy(p.data)), device)
    out = []
    for t in range(STEPS):
        for group, gs in zip(params, grads[t]):
            for p, g in zip(group, gs):
                p.grad[...] = backend.to_device(g.astype(p.data.dtype), device)
        if t == 1:
            opt.param_groups[1]["lr"] = lr / 2
        if counts_per_step is None:
            opt.step()
        else:
            with device_counts(forbid_sync=True) as counts:
                opt.step()
            counts_per_step.append(counts)
        out.append([backend.to_numpy(p.data).copy() for ps in params for p in ps])
    return opt, out


@pytest.mark.parametrize("name, kw", OPTIMIZERS, ids=OPTIMIZER_IDS)
@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")
def test_one_launch_per_dtype_updates_every_parameter_like_the_numpy_path(name, kw):
    counts = []
    gpu_opt, got = _multi_run(name, kw, "cuda", counts)
    cpu_opt, want = _multi_run(name, kw, "cpu")
    dtypes = [dt for shapes, dt in zip(MULTI_SHAPES, MULTI_DTYPES) for _ in shapes]
    for t, (g, w) in enumerate(zip(got, want)):
        for i, (a, b, dt) in enumerate(zip(g, w, dtypes)):
            if b.size:
                assert_close(a, b, dt, f"step {t + 1}, parameter {i}")
    if counts[0] is not None:
        assert all(c["sync"] == 0 and c["d2h"] == 0 for c in counts), counts
        assert [c["launch"] for c in counts] == [len(MULTI_DTYPES)] * STEPS, counts
        # Step 2 uploads the new lr (and SGD's tables lose their first-step flag); step 3
        # finds everything on the device.
        assert counts[2]["h2d"] == 0, "a steady step uploaded its tables again"
    sd_gpu, sd_cpu = gpu_opt.state_dict(), cpu_opt.state_dict()
    for i, s in sd_cpu["state"].items():
        assert sd_gpu["state"][i].get("step") == s.get("step"), i


CLIP_SHAPES = [((3, 5), "float32"), ((9000,), "float32"), ((0,), "float32"), ((7,), "float64")]


@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "leaves-alone"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")
def test_clip_grad_norm_on_the_gpu_matches_float64_and_keeps_the_norm_on_the_device(
        norm_type, max_norm):
    rng = rng_for("clip_multi_tensor", norm_type)
    host = [rng.standard_normal(shape).astype(dt) for shape, dt in CLIP_SHAPES]
    every = np.concatenate([g.reshape(-1).astype(np.float64) for g in host])
    want = np.linalg.norm(every, ord=norm_type)  # the oracle, in float64 over all values
    coef = min(1.0, max_norm / (want + 1e-6))
    gpu = [Param(backend.to_device(g, "cuda")) for g in host]
    for p in gpu:
        p.grad = p.data
    with device_counts(forbid_sync=True) as counts:
        total = optim.clip_grad_norm_(gpu, max_norm, norm_type)
    assert backend.device_of(total) == "cuda" and total.dtype == np.float64
    if counts is not None:
        assert counts["sync"] == 0 and counts["launch"] == 4, counts  # 2 per dtype
    assert_close(backend.to_numpy(total).reshape(1), np.array([want]), "float64", "norm")
    for p, g, (_, dt) in zip(gpu, host, CLIP_SHAPES):
        if g.size:
            assert_close(p.grad, g.astype(np.float64) * coef, dt, "clipped gradient")


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")
def test_clip_grad_norm_on_the_gpu_checks_the_norm_before_scaling_when_asked():
    g = backend.to_device(np.array([1.0, np.inf, 2.0]), "cuda")
    p = Param(g)
    p.grad = g
    with pytest.raises(ValueError, match="total norm of order 2.0 of the gradients is inf"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(backend.to_numpy(g), [1.0, np.inf, 2.0])
