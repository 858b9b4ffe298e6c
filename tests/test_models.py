"""gpuconv.models: shapes, training signal, determinism, registry, and torch replicas."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from gpuconv import backend, models, nn
from support import FD_TOL, assert_close, check_module_grads, numerical_grad, rel_err, rng_for

# (name, factory kwargs, input shape); small widths keep the CPU steps fast.
MODELS = [
    ("lenet5", dict(), (4, 1, 28, 28)),
    ("lenet5", dict(input_size=32, in_channels=3), (2, 3, 32, 32)),
    ("lenet5", dict(input_size=8), (4, 1, 8, 8)),
    ("vgg_small", dict(widths=(4, 8, 8)), (4, 3, 32, 32)),
    ("vgg_small", dict(in_channels=1, widths=(4, 8), batch_norm=False), (4, 1, 28, 28)),
    ("resnet_small", dict(widths=(4, 8, 8)), (4, 3, 32, 32)),
    ("resnet_small", dict(in_channels=1, widths=(4, 8), num_blocks=(2, 1)), (4, 1, 16, 16)),
    ("cnn1d", dict(), (4, 1, 40)),
    ("lstm_classifier", dict(hidden_size=8), (4, 1, 40)),
    ("gru_classifier", dict(hidden_size=8, num_layers=2, bidirectional=True), (4, 1, 40)),
    ("alexnet_small", dict(widths=(8, 8, 8, 8, 8), hidden=16), (4, 3, 32, 32)),
    ("alexnet_small", dict(in_channels=1, widths=(4, 4, 4, 4, 4), input_size=20), (2, 1, 20, 20)),
    ("inception_small", dict(stem_channels=8, blocks=((4, 4, 4, 2, 2, 2), (4, 4, 6, 2, 2, 2),
                                                      (4, 2, 4, 2, 2, 2))), (4, 3, 32, 32)),
    ("embedding_lstm", dict(num_embeddings=12, embedding_dim=8, hidden_size=8), (4, 5)),
]
# Models that read token ids: (N, T) integers, no input gradient.
TEXT_MODELS = ("embedding_lstm",)


def _params():
    return [pytest.param(name, kw, shape, id=f"{name}-{i}") for i, (name, kw, shape) in
            enumerate(MODELS)]


def _input(name, kwargs, shape, rng):
    if name in TEXT_MODELS:
        return rng.integers(0, kwargs["num_embeddings"], shape)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name, kwargs, shape", _params())
def test_output_shape(name, kwargs, shape):
    model = models.get_model(name, num_classes=7, **kwargs)
    x = _input(name, kwargs, shape, rng_for("shape", name))
    out = model(x)
    assert out.shape == (shape[0], 7) and out.dtype == np.float32
    grad_x = model.backward(np.ones_like(out))
    assert grad_x is None if name in TEXT_MODELS else grad_x.shape == shape


@pytest.mark.parametrize("name, kwargs, shape", _params())
def test_a_few_sgd_steps_lower_the_loss(name, kwargs, shape):
    nn.manual_seed(0)
    model = models.get_model(name, **kwargs)
    rng = rng_for("sgd", name, shape)
    x = _input(name, kwargs, shape, rng)
    y = rng.integers(0, model(x).shape[1], shape[0])
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(6):
        model.zero_grad()
        losses.append(float(loss_fn(model(x), y)))
        model.backward(loss_fn.backward())
        for p in model.parameters():
            p.data -= 0.1 * p.grad
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("name, kwargs, shape", _params())
def test_same_seed_gives_the_same_initial_weights(name, kwargs, shape):
    nn.manual_seed(123)
    a = models.get_model(name, **kwargs).state_dict()
    nn.manual_seed(123)
    b = models.get_model(name, **kwargs).state_dict()
    nn.manual_seed(124)
    c = models.get_model(name, **kwargs).state_dict()
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a if a[k].dtype != np.int64)


def test_registry_lists_every_model_and_rejects_unknown_names():
    assert sorted(models.MODELS) == sorted({name for name, _, _ in MODELS})
    with pytest.raises(ValueError, match="unknown model 'alexnet'.*lenet5"):
        models.get_model("alexnet")


@pytest.mark.parametrize("input_size, features", [(28, 400), (32, 400), (8, 64), (16, 64)])
def test_lenet5_feature_count(input_size, features):
    assert models.lenet5(input_size=input_size).fc1.weight.shape == (120, features)


def test_lenet5_rejects_a_tiny_input():
    with pytest.raises(ValueError, match="input_size must be at least 4"):
        models.lenet5(input_size=3)


def test_cnn1d_has_the_mnist1d_paper_size():
    model = models.cnn1d()
    assert model.linear.weight.shape == (10, 125)
    assert sum(p.size for p in model.parameters()) == 5210


def test_resnet_small_stage_shapes():
    model = models.resnet_small(widths=(4, 8, 16), num_blocks=(2, 1, 1))
    assert [n for n, _ in model.named_children()] == [
        "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "pool", "flatten", "fc"]
    assert len(model.layer1) == 2 and isinstance(model.layer2[0], nn.BasicBlock)
    assert model.layer2[0].shortcut[0].stride == (2, 2) and len(model.layer1[0].shortcut) == 0


@pytest.mark.parametrize("factory, kwargs", [
    (models.lstm_classifier, dict(hidden_size=3)),
    (models.gru_classifier, dict(hidden_size=2, num_layers=2, bidirectional=True)),
    (models.lstm_classifier, dict(input_size=2, hidden_size=2, bidirectional=True)),
])
def test_rnn_classifier_backward_matches_finite_differences(factory, kwargs):
    model = factory(num_classes=3, dtype=np.float64, **kwargs)
    rng = rng_for("rnn-classifier", factory.__name__, sorted(kwargs.items()))
    x = rng.standard_normal((2, kwargs.get("input_size", 1), 5))
    check_module_grads(model, x, rng.standard_normal((2, 3)))


def test_resnet_input_gradient_matches_finite_differences():
    model = models.resnet_small(in_channels=1, widths=(2, 3), num_blocks=(1, 1),
                                dtype=np.float64)
    rng = rng_for("resnet-fd")
    x = rng.standard_normal((2, 1, 6, 6))
    g = rng.standard_normal((2, 10))
    model(x)
    gx = model.backward(g)
    assert rel_err(gx, numerical_grad(lambda: float(np.sum(model(x) * g)), x)) <= FD_TOL


def test_alexnet_small_backward_matches_finite_differences():
    # Training mode without dropout (its masks would change between evaluations).
    model = models.alexnet_small(num_classes=3, in_channels=1, widths=(2, 3, 2, 2, 2),
                                 hidden=3, dropout=0.0, input_size=7, dtype=np.float64)
    rng = rng_for("alexnet-fd")
    check_module_grads(model, rng.standard_normal((1, 1, 7, 7)), rng.standard_normal((1, 3)),
                       ["features.conv1.weight", "features.conv1.bias",
                        "classifier.fc3.weight"])


# Tiny configurations of the new models for the GPU check (input shape after the kwargs).
GPU_MODELS = {
    "alexnet_small": (dict(widths=(4, 4, 4, 4, 4), hidden=8, dropout=0.0, input_size=9),
                      (2, 3, 9, 9)),
    "inception_small": (dict(stem_channels=4, blocks=((2, 2, 2, 1, 2, 2), (2, 1, 2, 1, 1, 1))),
                        (2, 3, 6, 6)),
    "embedding_lstm": (dict(num_embeddings=7, embedding_dim=3, hidden_size=4), (2, 5)),
}


ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.gpu_available(),
                                               reason="needs a GPU with CuPy (or the emulator)")]


def _gpu_model_and_input(name: str, tag: str, batch: int, **model_kwargs):
    """A GPU_MODELS configuration (seed 0), a random input batch of it, and the rng."""
    kwargs, shape = GPU_MODELS[name]
    nn.manual_seed(0)
    model = models.get_model(name, num_classes=3, **model_kwargs, **kwargs)
    rng = rng_for(tag, name)
    return model, _input(name, kwargs, (batch,) + shape[1:], rng), rng


@pytest.mark.parametrize("name", [pytest.param(n, marks=ON_GPU) for n in GPU_MODELS])
def test_new_model_on_the_gpu_matches_the_cpu(name):
    # float64 on both sides: the kernels' arithmetic is checked, not float32's rounding
    # (a BatchNorm weight's gradient is a sum that cancels).
    shape = GPU_MODELS[name][1]
    model, x, rng = _gpu_model_and_input(name, "gpu-model", shape[0], dtype=np.float64)
    x = x if name in TEXT_MODELS else x.astype(np.float64)
    g = rng.standard_normal((shape[0], 3))
    out, grad_x = model(x), model.backward(g)
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    model.to("cuda")
    out_gpu = model(backend.to_device(x, "cuda"))
    grad_x_gpu = model.backward(backend.to_device(g, "cuda"))
    assert_close(out_gpu, out, "float64", "logits")
    if grad_x is not None:
        assert_close(grad_x_gpu, grad_x, "float64", "input gradient")
    for n, p in model.named_parameters():
        assert backend.device_of(p.grad) == "cuda"
        assert_close(p.grad, grads[n], "float64", n)


@pytest.mark.parametrize("name", [pytest.param(n, marks=ON_GPU) for n in GPU_MODELS])
def test_new_model_trains_with_fit_on_the_gpu(name):
    # fit captures the step as a CUDA graph where it can (alexnet_small, inception_small)
    # and runs it eagerly where it cannot (embedding_lstm: Embedding checks on the host).
    from gpuconv import data, optim
    from gpuconv.train import fit

    model, x, rng = _gpu_model_and_input(name, "gpu-fit", 32)
    model.to("cuda")
    train_set = data.ArrayDataset(x, rng.integers(0, 3, 32))
    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3),
                  data.DataLoader(train_set, 8, shuffle=True, seed=0, device="cuda"),
                  epochs=2, progress=False)
    assert np.all(np.isfinite(history.train_loss)) and len(history.train_loss) == 2


def test_embedding_keeps_fit_from_capturing_the_step():
    from gpuconv.train import _graph_blockers
    assert any("embedding" in r for r in _graph_blockers(models.embedding_lstm()))
    assert _graph_blockers(models.alexnet_small()) == []


def test_alexnet_small_has_lrn_overlapping_pools_and_dropout():
    model = models.alexnet_small()
    layers = dict(model.features.named_children())
    assert layers["conv1"].kernel_size == (5, 5) and layers["conv1"].stride == (2, 2)
    assert isinstance(layers["norm1"], nn.LocalResponseNorm) and layers["norm2"].size == 5
    assert all(layers[p].kernel_size == 3 and layers[p].stride == 2
               for p in ("pool1", "pool2", "pool5"))
    assert sum(isinstance(m, nn.Dropout) for m in model.classifier) == 2
    assert model.classifier.fc1.weight.shape == (256, 64 * 2 * 2)


def test_inception_small_backward_matches_finite_differences():
    # Eval mode: in training mode BatchNorm normalises a per-channel shift away, so some
    # gradients are exactly zero and finite differences see only their rounding noise.
    model = models.inception_small(num_classes=2, in_channels=1, stem_channels=2,
                                   blocks=((1, 1, 2, 1, 1, 1), (1, 1, 1, 1, 1, 1)),
                                   dtype=np.float64).eval()
    rng = rng_for("inception-fd")
    check_module_grads(model, rng.standard_normal((2, 1, 5, 5)), rng.standard_normal((2, 2)),
                       ["stem.conv.weight", "inception1.branch3.1.conv.weight", "fc.weight"])


def test_inception_block_concatenates_its_four_branches_on_channels():
    from gpuconv.models.inception import inception_block
    block = inception_block(6, 2, 3, 4, 1, 5, 3)
    assert [n for n, _ in block.named_children()] == ["branch1", "branch2", "branch3", "branch4"]
    assert block.branch3[1].conv.kernel_size == (5, 5) and block.branch2[0].conv.kernel_size == (1, 1)
    x = rng_for("inception-block").standard_normal((2, 6, 7, 7)).astype(np.float32)
    out = block(x)
    assert out.shape == (2, 2 + 4 + 5 + 3, 7, 7)
    np.testing.assert_array_equal(out[:, 2:6], block.branch2(x))


def test_embedding_lstm_backward_matches_finite_differences():
    model = models.embedding_lstm(num_classes=3, num_embeddings=6, embedding_dim=2,
                                  hidden_size=3, dtype=np.float64)
    rng = rng_for("embedding-lstm-fd")
    tokens = rng.integers(1, 6, (3, 4))     # no padding token: its row gets no gradient
    check_module_grads(model, tokens, rng.standard_normal((3, 3)))


def test_embedding_lstm_padding_row_gets_no_gradient():
    model = models.embedding_lstm(num_classes=3, num_embeddings=6, embedding_dim=2,
                                  hidden_size=3)
    tokens = np.array([[0, 0, 3, 4], [0, 5, 1, 2]])
    model.backward(np.ones_like(model(tokens)))
    grad = model.embedding.weight.grad
    assert not np.any(grad[0]) and np.all(np.any(grad[1:], axis=1))


def test_embedding_lstm_rejects_anything_but_token_ids():
    model = models.embedding_lstm()
    with pytest.raises(ValueError, match=r"token ids \(N, T\)"):
        model(np.zeros((2, 1, 5), np.int64))
    with pytest.raises(TypeError, match="integer"):
        model(np.zeros((2, 5), np.float32))


# --------------------------------------------------------------------------- torch replicas

def _torch_lenet5(tnn):
    return tnn.Sequential(OrderedDict([
        ("conv1", tnn.Conv2d(1, 6, 5, padding=2)), ("relu1", tnn.ReLU()),
        ("pool1", tnn.MaxPool2d(2)), ("conv2", tnn.Conv2d(6, 16, 5)), ("relu2", tnn.ReLU()),
        ("pool2", tnn.MaxPool2d(2)), ("flatten", tnn.Flatten()),
        ("fc1", tnn.Linear(400, 120)), ("relu3", tnn.ReLU()), ("fc2", tnn.Linear(120, 84)),
        ("relu4", tnn.ReLU()), ("fc3", tnn.Linear(84, 10))]))


def _torch_cnn1d(tnn):
    """MNIST-1D's ConvBase (Greydanus, models.py), as a Sequential with its layer names."""
    return tnn.Sequential(OrderedDict([
        ("conv1", tnn.Conv1d(1, 25, 5, stride=2, padding=1)), ("relu1", tnn.ReLU()),
        ("conv2", tnn.Conv1d(25, 25, 3, stride=2, padding=1)), ("relu2", tnn.ReLU()),
        ("conv3", tnn.Conv1d(25, 25, 3, stride=2, padding=1)), ("relu3", tnn.ReLU()),
        ("flatten", tnn.Flatten()), ("linear", tnn.Linear(125, 10))]))


@pytest.mark.parametrize("ours, replica, shape", [
    (models.lenet5, _torch_lenet5, (3, 1, 28, 28)),
    (models.cnn1d, _torch_cnn1d, (3, 1, 40)),
])
def test_model_matches_its_torch_replica(ours, replica, shape):
    torch = pytest.importorskip("torch")
    theirs = replica(torch.nn)
    model = ours()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    model.load_state_dict(theirs.state_dict())
    x = rng_for("replica", shape).standard_normal(shape).astype(np.float32)
    assert_close(model(x), theirs(torch.from_numpy(x)).detach().numpy(), "float32")


def _torch_alexnet_small(tnn):
    """alexnet_small's layers in torch.nn, with the same names (LRN as torch computes it)."""
    def lrn():
        return tnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

    def pool():
        return tnn.MaxPool2d(3, stride=2, padding=1)

    return tnn.Sequential(OrderedDict([
        ("features", tnn.Sequential(OrderedDict([
            ("conv1", tnn.Conv2d(3, 32, 5, stride=2, padding=2)), ("relu1", tnn.ReLU()),
            ("norm1", lrn()), ("pool1", pool()),
            ("conv2", tnn.Conv2d(32, 64, 5, padding=2)), ("relu2", tnn.ReLU()),
            ("norm2", lrn()), ("pool2", pool()),
            ("conv3", tnn.Conv2d(64, 96, 3, padding=1)), ("relu3", tnn.ReLU()),
            ("conv4", tnn.Conv2d(96, 96, 3, padding=1)), ("relu4", tnn.ReLU()),
            ("conv5", tnn.Conv2d(96, 64, 3, padding=1)), ("relu5", tnn.ReLU()),
            ("pool5", pool())]))),
        ("flatten", tnn.Flatten()),
        ("classifier", tnn.Sequential(OrderedDict([
            ("drop1", tnn.Dropout(0.5)), ("fc1", tnn.Linear(256, 256)), ("relu1", tnn.ReLU()),
            ("drop2", tnn.Dropout(0.5)), ("fc2", tnn.Linear(256, 256)), ("relu2", tnn.ReLU()),
            ("fc3", tnn.Linear(256, 10))])))]))


def test_alexnet_small_matches_its_torch_replica_in_eval_mode():
    torch = pytest.importorskip("torch")
    theirs = _torch_alexnet_small(torch.nn).eval()
    model = models.alexnet_small().eval()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    model.load_state_dict(theirs.state_dict())
    x = rng_for("alexnet-replica").standard_normal((3, 3, 32, 32)).astype(np.float32)
    assert_close(model(x), theirs(torch.from_numpy(x)).detach().numpy(), "float32")
