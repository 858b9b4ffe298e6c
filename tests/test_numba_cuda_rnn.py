"""The GPU recurrent impls without a GPU: the numba_cuda LSTM and GRU cells under the CUDA
simulator against the reference impl, and the step loop that every fast rnn impl shares
(gpuconv/kernels/_rnn_loop.py: multi-layer, bidirectional, dropout masks) driven by the numba
kernels.

The simulator runs every CUDA thread as a Python thread, so shapes are tiny. On a GPU
machine tests/test_rnn.py runs these impls on CuPy arrays."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from gpuconv import kernels
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import assert_close, rng_for

pytestmark = pytest.mark.skipif(
    not simulator_enabled(),
    reason="runs under NUMBA_ENABLE_CUDASIM=1 (set by conftest without a GPU)")

GATES = {"lstm": 4, "gru": 3}
DTYPES = ("float64", "float32")
CELL_OPS = ("lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward")
CONTRACT_OPS = [f"{kind}_cell{suffix}" for kind in ("lstm", "gru", "rnn_tanh", "rnn_relu")
                for suffix in ("", "_backward")] + [
    f"{name}{suffix}" for name in ("lstm", "gru", "rnn") for suffix in ("", "_backward")]


def _impl(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


def _cast(arrays, dtype) -> list:
    return [None if a is None else a.astype(dtype) for a in arrays]


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _assert_all_close(outs, refs, dtype, what: str) -> None:
    assert len(outs) == len(refs), f"{what}: {len(outs)} results, reference has {len(refs)}"
    for j, (out, ref) in enumerate(zip(outs, refs)):
        if ref is None:
            assert out is None, f"{what}[{j}] should be None"
            continue
        assert out.dtype == np.dtype(dtype), f"{what}[{j}] has dtype {out.dtype}"
        assert_close(out, ref, dtype, f"{what}[{j}]")


# --------------------------------------------------------------------------- cells

# (B, I, H, biases): biases is "both", "none", "ih" or "hh".
CELL_CASES = [(3, 5, 4, "both"), (1, 2, 3, "none"), (2, 3, 2, "ih"), (2, 1, 3, "hh")]


def _cell_inputs(kind: str, case, rng) -> tuple:
    """(grads of the new states, (x, states..., w_ih, w_hh, b_ih, b_hh)) in float64."""
    B, I, H, biases = case
    G, n_states = GATES[kind], 2 if kind == "lstm" else 1
    args = [rng.standard_normal((B, I)),
            *(rng.standard_normal((B, H)) for _ in range(n_states)),
            rng.uniform(-0.8, 0.8, (G * H, I)), rng.uniform(-0.8, 0.8, (G * H, H)),
            *(rng.uniform(-0.5, 0.5, G * H) if biases in ("both", which) else None
              for which in ("ih", "hh"))]
    return [rng.standard_normal((B, H)) for _ in range(n_states)], args


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CELL_CASES, ids=str)
@pytest.mark.parametrize("kind", GATES)
def test_numba_cuda_cell_matches_reference(kind, case, dtype):
    _, args = _cell_inputs(kind, case, rng_for("numba_cell", kind, case))
    op = f"{kind}_cell"
    out = _as_tuple(_impl(op, "numba_cuda")(*_cast(args, dtype)))
    _assert_all_close(out, _as_tuple(_impl(op, "reference")(*args)), dtype, op)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CELL_CASES, ids=str)
@pytest.mark.parametrize("kind", GATES)
def test_numba_cuda_cell_backward_matches_reference(kind, case, dtype):
    grads, args = _cell_inputs(kind, case, rng_for("numba_cell_backward", kind, case))
    op = f"{kind}_cell_backward"
    out = _impl(op, "numba_cuda")(*_cast(grads, dtype), *_cast(args, dtype))
    _assert_all_close(out, _impl(op, "reference")(*grads, *args), dtype, op)


@pytest.mark.parametrize("kind", GATES)
def test_numba_cuda_cell_with_saturated_gates_is_finite_and_matches_reference(kind):
    _, args = _cell_inputs(kind, (2, 3, 2, "both"), rng_for("numba_saturated", kind))
    args[0] = args[0] * 1e4
    op = f"{kind}_cell"
    out = _as_tuple(_impl(op, "numba_cuda")(*_cast(args, "float32")))
    _assert_all_close(out, _as_tuple(_impl(op, "reference")(*args)), "float32", op)


def _reversed_view(a):
    """The same values in a negatively strided, non-contiguous view."""
    big = np.zeros(a.shape + (2,), a.dtype)
    flip = tuple(slice(None, None, -1) for _ in a.shape)
    big[..., 0] = a[flip]
    return big[..., 0][flip]


@pytest.mark.parametrize("kind", GATES)
def test_numba_cuda_cell_accepts_noncontiguous_inputs(kind):
    grads, args = _cell_inputs(kind, (2, 3, 2, "both"), rng_for("numba_cell_views", kind))
    views = [_reversed_view(a) for a in grads + args]
    assert not any(v.flags.c_contiguous for v in views)
    forward, backward = _impl(f"{kind}_cell", "numba_cuda"), _impl(f"{kind}_cell_backward",
                                                                    "numba_cuda")
    _assert_all_close(_as_tuple(forward(*views[len(grads):])), _as_tuple(forward(*args)),
                      "float64", "forward")
    _assert_all_close(backward(*views), backward(*grads, *args), "float64", "backward")


# --------------------------------------------------------------------------- the step loop

# (T, B, I, H, num_layers, bidirectional, biases, dropout masks)
SEQ_CASES = [(3, 2, 3, 2, 2, True, True, True), (4, 1, 2, 3, 1, False, False, False),
             (2, 3, 1, 2, 2, False, True, False)]


def _seq_inputs(kind: str, case, rng) -> tuple:
    """(x, init states, params, masks, num_layers, bidirectional) in float64, the masks
    scaled as the public functions' inter-layer dropout (p = 0.25)."""
    T, B, I, H, L, bidirectional, biases, dropout = case
    D, G = (2 if bidirectional else 1), GATES[kind]
    params = []
    for layer in range(L):
        for _ in range(D):
            params += [rng.uniform(-0.7, 0.7, (G * H, I if layer == 0 else D * H)),
                       rng.uniform(-0.7, 0.7, (G * H, H))]
            params += [rng.uniform(-0.5, 0.5, G * H) for _ in range(2)] if biases else [None] * 2
    states = [rng.standard_normal((L * D, B, H)) for _ in range(2 if kind == "lstm" else 1)]
    masks = ([np.where(rng.random((T, B, D * H)) >= 0.25, 1 / 0.75, 0.0) for _ in range(L - 1)]
             if dropout else None)
    return rng.standard_normal((T, B, I)), states, params, masks, L, bidirectional


def _through_contiguous_copies(cell):
    """``cell`` with its column-block arguments (one direction's gates, which have a row
    stride) passed as contiguous copies and written back: the simulator copies every NumPy
    argument to its fake device as one block, which a strided view is not. On a GPU the
    kernels read CuPy views in place."""
    def forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
        cell.forward(np.ascontiguousarray(gi), gh, b_ih, b_hh, prev, nxt, saved)

    def backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
        gi = np.empty_like(grad_gi, order="C")
        gh = np.empty_like(grad_gh, order="C") if cell.separate_hidden_grad else gi
        result = cell.backward(grad_nxt, np.ascontiguousarray(grad_out), prev, nxt, saved, gi,
                               gh)
        grad_gi[...] = gi
        if cell.separate_hidden_grad:
            grad_gh[...] = gh
        return result
    return dataclasses.replace(cell, forward=forward, backward=backward)


def _seq_impls():
    """The sequence ops of the shared step loop, with the numba kernels."""
    from gpuconv.kernels._rnn_loop import sequence_impls
    from gpuconv.kernels.numba_cuda.rnn import CELLS
    return sequence_impls({kind: _through_contiguous_copies(c) for kind, c in CELLS.items()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SEQ_CASES, ids=str)
@pytest.mark.parametrize("kind", GATES)
def test_step_loop_sequence_matches_reference(kind, case, dtype):
    x, states, params, masks, L, bi = _seq_inputs(kind, case, rng_for("numba_seq", kind, case))
    out = _seq_impls()[kind](*_cast([x, *states], dtype), _cast(params, dtype), L, bi,
                             None if masks is None else _cast(masks, dtype), None)
    ref = _impl(kind, "reference")(x, *states, params, L, bi, masks, None)
    _assert_all_close(out, ref, dtype, kind)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SEQ_CASES, ids=str)
@pytest.mark.parametrize("kind", GATES)
def test_step_loop_sequence_backward_matches_reference(kind, case, dtype):
    rng = rng_for("numba_seq_backward", kind, case)
    x, states, params, masks, L, bi = _seq_inputs(kind, case, rng)
    out, *finals = _impl(kind, "reference")(x, *states, params, L, bi, masks, None)
    grads = [rng.standard_normal(a.shape) for a in (out, *finals)]
    op = f"{kind}_backward"
    gx, *g_states, g_params = _seq_impls()[op](
        *_cast(grads + [x, *states], dtype), _cast(params, dtype), L, bi,
        None if masks is None else _cast(masks, dtype), None)
    rx, *r_states, r_params = _impl(op, "reference")(*grads, x, *states, params, L, bi, masks,
                                                     None)
    _assert_all_close([gx, *g_states], [rx, *r_states], dtype, op)
    _assert_all_close(g_params, r_params, dtype, f"{op} params")


# --------------------------------------------------------------------------- registry

@pytest.mark.parametrize("op", CONTRACT_OPS)
def test_every_rnn_op_has_a_cuda_impl_for_float32_and_float64(op):
    impl = next(i for i in kernels.implementations(op) if i.name == "cuda")
    assert impl.device == "cuda"
    assert impl.supports(np.dtype("float32")) and impl.supports(np.dtype("float64"))


@pytest.mark.parametrize("op", CELL_OPS)
def test_lstm_and_gru_cell_ops_have_a_numba_cuda_impl(op):
    impl = next(i for i in kernels.implementations(op) if i.name == "numba_cuda")
    assert impl.device == "cuda"
    assert impl.supports(np.dtype("float32")) and impl.supports(np.dtype("float64"))


def test_importing_the_shared_step_loop_imports_neither_numba_nor_cupy():
    code = ("import sys, gpuconv.kernels._rnn_loop; "
            "print(sorted({'numba', 'cupy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
