"""The ResNet BasicBlock's fused passes (gpuconv/nn/blocks.py) against the same block run
layer by layer, forward and backward (input and every parameter gradient), in float64 on
the CPU and, for the ``gpu`` tests, on the GPU (or the CUDA emulator) against the CPU's
float64: the evaluation-mode fold of each batch norm into its convolution's epilogue, and
training's batch norm + residual + ReLU in one pass."""
from __future__ import annotations

import numpy as np
import pytest
from support import assert_close, check_module_grads, device_counts, rng_for

import gpuconv.functional as F
from gpuconv import backend, nn

F64 = np.float64
GPU = [pytest.mark.gpu,
       pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy (or the "
                          "CUDA emulator: tests/test_cuda_emulated.py)")]
# (in_planes, planes, stride, input shape): the identity shortcut, the projection with an
# odd input size, and a batch of one.
SHAPES = {"identity": (3, 3, 1, (2, 3, 6, 5)), "projection": (2, 4, 2, (2, 2, 7, 5)),
          "batch1": (5, 5, 1, (1, 5, 3, 7))}


def _block(kind: str, training: bool, fold):
    """A block with random parameters and running statistics (so that every batch norm
    changes its input), in training or evaluation mode."""
    in_planes, planes, stride, _ = SHAPES[kind]
    block = nn.BasicBlock(in_planes, planes, stride, dtype=F64)
    rng = rng_for("block", kind)
    for name, p in block.named_parameters():
        p.data[...] = (rng.uniform(0.5, 1.5, p.data.shape) if name.endswith("weight")
                       and p.data.ndim == 1 else rng.standard_normal(p.data.shape) / 3)
    for name, buffer in block.named_buffers():
        if name.endswith("running_mean"):
            buffer[...] = rng.standard_normal(buffer.shape)
        elif name.endswith("running_var"):
            buffer[...] = rng.uniform(0.5, 2.0, buffer.shape)
    block.fold_batch_norm = fold
    return block.train(training)


def _data(kind: str, batch: int | None = None):
    """An input (of ``batch`` samples when given) and an output gradient for it."""
    rng = rng_for("data", kind)
    shape = SHAPES[kind][3]
    x = rng.standard_normal(shape if batch is None else (batch,) + shape[1:])
    block = _block(kind, False, False)
    return x, rng.standard_normal(block(x).shape)


def _run(block, x, grad):
    """(output, input gradient, {name: parameter gradient}, {name: buffer}) on the CPU."""
    out = block(x)
    gx = block.backward(grad)
    params = {n: backend.to_numpy(p.grad) for n, p in block.named_parameters()}
    buffers = {n: backend.to_numpy(b) for n, b in block.named_buffers()}
    return backend.to_numpy(out), backend.to_numpy(gx), params, buffers


def _assert_same(got, want, dtype):
    out, gx, params, buffers = got
    assert_close(out, want[0], dtype, "output")
    assert_close(gx, want[1], dtype, "grad_input")
    assert params.keys() == want[2].keys()
    for name in params:
        assert_close(params[name], want[2][name], dtype, f"grad {name}")
    for name in buffers:
        if buffers[name].dtype.kind == "f":
            assert_close(buffers[name], want[3][name], dtype, name)
        else:
            assert np.array_equal(buffers[name], want[3][name]), name


def _forward_layers(b, x):
    return b.relu2(b.bn2(b.conv2(b.relu1(b.bn1(b.conv1(x))))) + b.shortcut(x))


def _layer_by_layer(block, x, grad):
    """The block's function through its layers one at a time, none fused: the oracle."""
    b = block
    out = _forward_layers(b, x)
    g = b.relu2.backward(grad)
    gx = b.conv1.backward(b.bn1.backward(b.relu1.backward(b.conv2.backward(b.bn2.backward(g)))))
    gx = gx + b.shortcut.backward(g)
    params = {n: p.grad for n, p in b.named_parameters()}
    return out, gx, params, {n: buf.copy() for n, buf in b.named_buffers()}


@pytest.mark.parametrize("training", [False, True], ids=["eval-folded", "train-fused"])
@pytest.mark.parametrize("kind", SHAPES)
def test_fused_block_matches_its_layers_one_by_one_in_float64(kind, training):
    x, grad = _data(kind)
    got = _run(_block(kind, training, True), x, grad)
    _assert_same(got, _layer_by_layer(_block(kind, training, False), x, grad), "float64")


@pytest.mark.parametrize("training", [False, True], ids=["eval-folded", "train-fused"])
@pytest.mark.parametrize("kind", SHAPES)
def test_fused_backward_matches_finite_differences(kind, training):
    """The training forward moves the running statistics at each call, which its output
    (batch statistics) does not read."""
    check_module_grads(_block(kind, training, True), *_data(kind))


@pytest.mark.parametrize("device, dtype", [("cpu", "float64"),
                                           pytest.param("cuda", "float32", marks=GPU)])
def test_folded_block_of_an_empty_batch_is_empty_with_zero_parameter_gradients(device, dtype):
    """N = 0 in evaluation (training's batch statistics of no samples are undefined)."""
    x, grad = (backend.to_device(a.astype(dtype), device) for a in _data("projection", 0))
    block = _block("projection", False, None if device == "cuda" else True).to(device, dtype)
    out, gx, params, _ = _run(block, x, grad)
    assert out.shape == (0, 4, 4, 3) and gx.shape == x.shape
    for name, p in block.named_parameters():
        assert params[name].shape == p.data.shape and not params[name].any(), name


def test_a_block_whose_relu_was_replaced_runs_its_layers(monkeypatch):
    """The fused passes compute a ReLU: another activation module must not be skipped."""
    x, grad = _data("projection")
    monkeypatch.setattr(F, "conv2d_bias_act", None)  # a call would fail
    monkeypatch.setattr(F, "batch_norm_relu", None)
    for training in (False, True):
        blocks = [_block("projection", training, fold) for fold in (True, False)]
        for b in blocks:
            b.relu1, b.relu2 = nn.LeakyReLU(0.2), nn.LeakyReLU(0.3)
        _assert_same(_run(blocks[0], x, grad), _layer_by_layer(blocks[1], x, grad), "float64")


def test_the_fold_runs_by_default_on_gpu_arrays_only(monkeypatch):
    calls = []
    fused = F.conv2d_bias_act
    monkeypatch.setattr(F, "conv2d_bias_act", lambda *a, **k: calls.append(k) or fused(*a, **k))
    x, _ = _data("projection")
    _block("projection", False, None)(x)
    assert calls == []
    _block("projection", False, True)(x)
    assert [k["activation"] for k in calls] == ["relu", "identity", "relu"]
    assert "residual" in calls[-1] and all("scale" in k for k in calls)


def test_training_mode_never_folds_the_batch_statistics(monkeypatch):
    monkeypatch.setattr(F, "conv2d_bias_act", None)  # a call would fail
    x, grad = _data("identity")
    block = _block("identity", True, True)
    block(x)
    block.backward(grad)


# --------------------------------------------------------------------------- on the GPU

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [False, True], ids=["eval-folded", "train-fused"])
@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("_", [pytest.param(None, marks=GPU, id="gpu")])
def test_fused_block_on_the_gpu_matches_the_cpu_layers_in_float64(_, kind, training, dtype):
    """float32 GPU arrays run the implicit-GEMM convolution (fp32 mode, 3xTF32) where the
    fold applies; float64 ones the composed fallback."""
    x, grad = _data(kind)
    block = _block(kind, training, None).to("cuda", dtype)
    got = _run(block, *(backend.to_device(a.astype(dtype), "cuda") for a in (x, grad)))
    _assert_same(got, _layer_by_layer(_block(kind, training, False), x, grad), dtype)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("_", [pytest.param(None, marks=GPU, id="gpu")])
def test_fused_block_launches_fewer_kernels_than_its_layers(_, training):
    x, _ = _data("identity")
    x = backend.to_device(x.astype(np.float32), "cuda")
    block = _block("identity", training, None).to("cuda", "float32")
    launches = []
    for forward in (block, lambda input: _forward_layers(block, input)):
        with device_counts() as counts:
            forward(x)
        if counts is None:
            pytest.skip("launches are counted by the CUDA emulator only")
        launches.append(counts["launch"])
    assert launches[0] < launches[1], launches
