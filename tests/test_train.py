"""The training loop, checkpoints and the command line."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuconv import backend, data, device_checks, models, nn, optim
from gpuconv.train import History, evaluate, fit, load_checkpoint, save_checkpoint
from support import assert_close, device_counts

ROOT = Path(__file__).resolve().parent.parent


ON_GPU = [pytest.mark.gpu,
          pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")]


def _setup(seed=0, n=320, device="cpu", optimizer=None):
    nn.manual_seed(seed)
    train_set, test_set = data.digits()
    part = data.Subset(train_set, np.arange(n))
    model = models.lenet5(num_classes=10, input_size=8).to(device)
    params = model.parameters()
    opt = optimizer(params) if optimizer else optim.Adam(params, lr=3e-3)
    loader = data.DataLoader(part, batch_size=32, shuffle=True, seed=seed, device=device)
    val = data.DataLoader(data.Subset(test_set, np.arange(128)), batch_size=128, device=device)
    return model, opt, loader, val


def test_fit_lowers_the_training_loss():
    model, opt, loader, val = _setup()
    h = fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=4, progress=False)
    assert h.train_loss[-1] < 0.9 * h.train_loss[0]
    assert len(h.val_accuracy) == 4 and h.best_epoch is not None


def test_same_seed_gives_the_same_final_weights():
    finals = []
    for _ in range(2):
        model, opt, loader, _ = _setup(seed=3)
        fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=2, progress=False)
        finals.append({k: v.copy() for k, v in model.state_dict().items()})
    for k in finals[0]:
        np.testing.assert_array_equal(finals[0][k], finals[1][k])


def test_evaluate_counts_every_sample():
    model, _, _, val = _setup()
    result = evaluate(model, val, nn.CrossEntropyLoss())
    assert result["samples"] == 128 and 0.0 <= result["accuracy"] <= 1.0 and result["loss"] > 0


def test_checkpoint_round_trip_restores_model_and_optimizer(tmp_path):
    model, opt, loader, _ = _setup()
    fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False)
    save_checkpoint(tmp_path / "c.npz", model, opt, {"note": "x"})
    model2, opt2, _, _ = _setup(seed=9)
    meta = load_checkpoint(tmp_path / "c.npz", model2, opt2)
    assert meta == {"note": "x"}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert opt2.state_arrays().keys() == opt.state_arrays().keys()


def test_checkpoint_writes_through_a_temporary_file(tmp_path, monkeypatch):
    model, opt, _, _ = _setup()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before  # the old checkpoint survives a failed save
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_loading_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array("{}"), **{"model/conv1.weight": np.array([object()], dtype=object)})
    model, _, _, _ = _setup()
    with pytest.raises(ValueError, match="pickle"):
        load_checkpoint(path, model)


def test_loading_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a gpuconv checkpoint"):
        load_checkpoint(tmp_path / "x.npz")


def test_resume_continues_after_the_checkpointed_epoch(tmp_path):
    model, opt, loader, val = _setup()
    ckpt = tmp_path / "best.npz"
    h1 = fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=2, checkpoint=ckpt,
             progress=False)
    model2, opt2, loader2, _ = _setup()
    h2 = fit(model2, nn.CrossEntropyLoss(), opt2, loader2, val, epochs=3, resume=ckpt,
             progress=False)
    best = h1.best_epoch
    assert len(h2.train_loss) == 3 and h2.train_loss[:best] == h1.train_loss[:best]


def test_early_stopping_stops_when_validation_stalls():
    model, opt, loader, val = _setup()
    for g in opt.param_groups:
        g["lr"] = 0.0  # nothing changes, so validation never improves after epoch 1
    h = fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=10, early_stopping=2,
            progress=False)
    assert h.stopped_early and len(h.train_loss) == 3


def test_history_is_saved_as_json_and_png(tmp_path):
    model, opt, loader, val = _setup()
    fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=1, progress=False,
        history_path=tmp_path / "h.json", plot_path=tmp_path / "h.png")
    saved = json.loads((tmp_path / "h.json").read_text())
    assert History(**saved).train_loss == saved["train_loss"]
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_last_batch_drop_skips_the_partial_batch():
    model, opt, loader, _ = _setup(n=70)  # batches of 32, 32 and 6
    seen = []
    loss_fn = nn.CrossEntropyLoss()
    original = loss_fn.forward

    def counting(out, y):
        seen.append(int(y.shape[0]))
        return original(out, y)
    loss_fn.forward = counting
    fit(model, loss_fn, opt, loader, epochs=1, progress=False, last_batch="drop")
    assert seen == [32, 32]


@pytest.mark.parametrize("kwargs, match", [
    (dict(last_batch="pad"), "last_batch must be 'eager' or 'drop'"),
    (dict(progress_every=0), "progress_every must be a positive int"),
    (dict(cuda_graph=True), "cuda_graph=True needs the model on the GPU")])
def test_bad_fit_options_are_value_errors(kwargs, match):
    model, opt, loader, _ = _setup(n=32)
    with pytest.raises(ValueError, match=match):
        fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False, **kwargs)


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "gpuconv", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0"], "--epochs must be positive"),
    (["train", "--dataset", "imagenet"], "invalid choice"),
    (["train", "--lr", "abc"], "invalid float value"),
    (["train", "lenet5", "--dataset", "mnist1d"], "takes images"),
    (["train", "nosuchnet"], "invalid choice"),
    (["eval", "missing.npz"], "missing.npz"),
    (["train", "--threads", "0"], "must be a positive int"),
])
def test_cli_bad_arguments_give_one_line_and_no_traceback(args, message, tmp_path):
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_cli_trains_then_evaluates_a_checkpoint(tmp_path):
    out = _cli("train", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "lenet5" and 0 < summary["test_accuracy"] <= 1
    for name in ("best.npz", "history.json", "curves.png"):
        assert (tmp_path / "run" / name).is_file()
    ev = _cli("eval", str(tmp_path / "run" / "best.npz"))
    assert ev.returncode == 0, ev.stderr
    assert f"accuracy {summary['test_accuracy']:.4f}" in ev.stdout


def test_cli_trains_the_text_model_and_evaluates_it_with_the_saved_vocabulary(tmp_path):
    out = _cli("train", "embedding_lstm", "--epochs", "1", "--batch-size", "512",
               "--no-progress", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "on synthetic_text" in out.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["vocab_size"] == 64 and summary["num_classes"] == 4
    ev = _cli("eval", str(tmp_path / "run" / "best.npz"))
    assert ev.returncode == 0 and f"accuracy {summary['test_accuracy']:.4f}" in ev.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "embedding_lstm", "--dataset", "digits"], "takes token sequences"),
    (["train", "lenet5", "--dataset", "synthetic_text"], "holds token sequences"),
])
def test_cli_rejects_text_and_image_mix_ups(args, message, tmp_path):
    out = _cli(*args, "--epochs", "1", cwd=tmp_path)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr


def test_the_32x32_models_default_to_cifar10_where_present_else_shapes(tmp_path):
    from gpuconv import cli
    assert cli._default_dataset("alexnet_small", str(tmp_path)) == "shapes"
    record = np.zeros(3073, np.uint8).tobytes()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (tmp_path / name).write_bytes(record)
    assert cli._default_dataset("inception_small", str(tmp_path)) == "cifar10"
    assert cli._default_dataset("embedding_lstm", None) == "synthetic_text"
    assert cli._default_dataset("lenet5", None) == "digits"


def test_cli_info_lists_the_kernel_implementations():
    out = _cli("info")
    assert out.returncode == 0, out.stderr
    assert "conv2d" in out.stdout and "numpy" in out.stdout and "cuda_im2col" in out.stdout


def test_python_m_gpuconv_runs_from_a_source_checkout_without_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-S", "-m", "gpuconv", "--help"], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout


# --------------------------------------------------------------------------- on a GPU

@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_cuda_loader_yields_the_cpu_batches_as_device_arrays(_):
    _, _, cpu, _ = _setup(n=70)
    _, _, gpu, _ = _setup(n=70, device="cuda")
    for (x, y), (gx, gy) in zip(cpu, gpu, strict=True):
        assert backend.device_of(gx) == backend.device_of(gy) == "cuda"
        np.testing.assert_array_equal(backend.to_numpy(gx), x)
        np.testing.assert_array_equal(backend.to_numpy(gy), y)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_fit_on_cuda_follows_the_cpu_run_and_stays_on_the_device(_):
    def sgd(params):
        return optim.SGD(params, lr=0.05, momentum=0.9)
    runs = {}
    for device in ("cpu", "cuda"):
        model, opt, loader, val = _setup(seed=5, n=64, device=device, optimizer=sgd)
        h = fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=2, progress=False)
        runs[device] = (model.state_dict(), h)
    (cpu, h_cpu), (gpu, h_gpu) = runs["cpu"], runs["cuda"]
    for k in cpu:
        assert backend.device_of(gpu[k]) == "cuda", k
        assert_close(gpu[k], cpu[k], "float32", k)
    np.testing.assert_allclose(h_gpu.train_loss, h_cpu.train_loss, rtol=1e-4)
    assert h_gpu.val_accuracy == h_cpu.val_accuracy


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_checkpoint_of_a_cuda_model_loads_on_the_cpu_and_back(_, tmp_path):
    model, opt, loader, _ = _setup(n=64, device="cuda")
    fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False)
    save_checkpoint(tmp_path / "c.npz", model, opt)
    cpu_model, cpu_opt, _, _ = _setup(seed=9)
    load_checkpoint(tmp_path / "c.npz", cpu_model, cpu_opt)
    gpu_model, gpu_opt, _, _ = _setup(seed=9, device="cuda")
    load_checkpoint(tmp_path / "c.npz", gpu_model, gpu_opt)
    for k, want in model.state_dict().items():
        np.testing.assert_array_equal(cpu_model.state_dict()[k], backend.to_numpy(want), k)
        assert backend.device_of(gpu_model.state_dict()[k]) == "cuda", k
        np.testing.assert_array_equal(backend.to_numpy(gpu_model.state_dict()[k]),
                                      backend.to_numpy(want), k)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_cli_info_names_the_gpu_and_its_kernels(_, capsys):
    from gpuconv import cli
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "GPU: " in out and "sees no CUDA device" not in out
    assert re.search(r"NVRTC \d+\.\d+, CUDA runtime \d+\.\d+, driver \d+\.\d+", out), out
    for family in ("conv", "pool", "activation", "linear", "loss", "norm", "rnn", "optim"):
        assert f"{family}.cu compiled" in out
    assert ", cuda_im2col" in out and ", cuda_im2col (not here)" not in out


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_cli_trains_lenet5_on_digits_on_cuda(_, tmp_path):
    from gpuconv import cli
    assert cli.main(["train", "lenet5", "--dataset", "digits", "--device", "cuda", "--epochs",
                     "1", "--no-progress", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cuda" and 0 < summary["test_accuracy"] <= 1


# --------------------------------------------------------------------------- GPU: no waiting

def _mlp_with_dropout(seed: int):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(32, 10)).to("cuda")


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_a_training_step_on_the_gpu_makes_no_host_synchronisation(_):
    model, opt, loader, _ = _setup(n=64, device="cuda", optimizer=lambda p: optim.SGD(
        p, lr=0.05, momentum=0.9))
    loss_fn = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(loader):
        with device_counts(forbid_sync=True) as counts:
            out = model(x)
            loss_fn(out, y)
            model.backward(loss_fn.backward())
            optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
        if counts is not None:
            assert counts["sync"] == 0 and counts["d2h"] == 0, (step, counts)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_an_epoch_on_the_gpu_reads_the_device_once(_):
    model, opt, loader, val = _setup(n=96, device="cuda")
    with device_counts() as counts:
        fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=2, progress=False)
    if counts is not None:
        assert counts["sync"] == 2 and counts["d2h"] == 2, counts  # once per epoch
    with device_counts() as counts:
        fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=1, progress=False)
    if counts is not None:
        assert counts["sync"] == 2, counts  # the epoch's sums, then evaluate's


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_the_progress_bar_reads_the_device_every_n_steps(_, capsys):
    model, opt, loader, _ = _setup(n=128, device="cuda")  # 4 steps
    with device_counts() as counts:
        fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=True,
            progress_every=2)
    if counts is not None:
        assert counts["sync"] == 3, counts  # steps 2 and 4, then the epoch's end


GRAPH_RUNS = [
    ("sgd-momentum", lambda p: optim.SGD(p, lr=0.05, momentum=0.9), "lenet", None),
    ("adam-clip-scheduler", lambda p: optim.Adam(p, lr=3e-3), "lenet", 1.0),
    ("adamw-dropout", lambda p: optim.AdamW(p, lr=3e-3), "dropout", None),
]


@pytest.mark.parametrize("name, make_opt, net, clip", [
    pytest.param(*run, marks=ON_GPU, id=run[0]) for run in GRAPH_RUNS])
def test_graph_replays_train_to_the_same_parameters_as_eager_steps_bit_for_bit(
        name, make_opt, net, clip):
    """Two epochs of 3 batches (32, 32 and a last partial one of 6): per epoch one eager
    or captured step, replays, and the partial batch eagerly. A learning rate that the
    scheduler lowers between epochs and dropout masks that must differ per replay are
    read from the device, so any difference shows up in the parameters."""
    finals, counted = {}, {}
    for graph in (False, True):
        model, opt, loader, _ = _setup(seed=4, n=70, device="cuda", optimizer=make_opt)
        if net == "dropout":
            model = _mlp_with_dropout(4)
            opt = make_opt(model.parameters())
        scheduler = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        with device_counts() as counts:
            fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=2, progress=False,
                scheduler=scheduler, clip_grad_norm=clip, cuda_graph=graph)
        finals[graph] = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
        counted[graph] = counts
    for k, want in finals[False].items():
        np.testing.assert_array_equal(finals[True][k], want, err_msg=k)
    if counted[True] is not None:
        assert counted[True]["capture"] == 1 and counted[True]["graph_launch"] == 3
        assert counted[False]["graph_launch"] == 0
        assert counted[True]["launch"] == counted[False]["launch"]


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_graph_replays_of_a_recurrent_classifier_match_eager_steps_bit_for_bit(_):
    rng = np.random.default_rng(8)
    sequences = data.ArrayDataset(rng.standard_normal((20, 1, 12)).astype(np.float32),
                                  rng.integers(0, 3, 20))
    finals = {}
    for graph in (False, True):
        nn.manual_seed(8)
        model = models.lstm_classifier(num_classes=3, input_size=1, hidden_size=8).to("cuda")
        opt = optim.Adam(model.parameters(), lr=1e-2)
        loader = data.DataLoader(sequences, batch_size=8, shuffle=True, seed=8, device="cuda")
        fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=2, progress=False,
            cuda_graph=graph)
        finals[graph] = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    for k, want in finals[False].items():
        np.testing.assert_array_equal(finals[True][k], want, err_msg=k)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_replayed_dropout_draws_a_new_mask_at_every_step(_, monkeypatch):
    from gpuconv import graphs

    model = _mlp_with_dropout(2)
    opt = optim.SGD(model.parameters(), lr=0.0)  # nothing moves but the masks
    x = backend.to_device(np.ones((32, 1, 8, 8), np.float32), "cuda")
    y = backend.to_device(np.zeros(32, np.int64), "cuda")
    outputs, after_replay = [], []
    replay = graphs.StepGraph.replay

    class Recorder(nn.Identity):
        def forward(self, inp):
            outputs.append(inp)
            return inp

    def recording_replay(self):
        replay(self)
        after_replay.append(backend.to_numpy(outputs[-1]))  # the captured output buffer
    model.append(Recorder())
    monkeypatch.setattr(graphs.StepGraph, "replay", recording_replay)
    fit(model, nn.CrossEntropyLoss(), opt, [(x, y)] * 4, epochs=1, progress=False,
        cuda_graph=True)
    masks = [backend.to_numpy(outputs[0])] + after_replay  # eager step, then 3 replays
    assert len(masks) == 4
    for i in range(4):
        for j in range(i):
            assert not np.array_equal(masks[i], masks[j]), (i, j)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_a_bad_target_inside_an_epoch_is_reported_at_its_end(_):
    model, opt, loader, _ = _setup(n=64, device="cuda")
    bad = [(x, y.copy()) for x, y in loader]
    bad[1][1][0] = 12  # a class that LeNet-5's 10 outputs do not have
    with pytest.raises(device_checks.DeviceCheckError,
                       match=r"cross_entropy: target values must lie in \[0, 10\).*found 12"):
        fit(model, nn.CrossEntropyLoss(), opt, bad, epochs=1, progress=False)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_a_diverged_loss_on_the_gpu_is_reported_at_the_end_of_its_epoch(_):
    model, opt, loader, _ = _setup(n=64, device="cuda")
    model.fc3.bias.data[...] = np.nan  # every logit NaN: a NaN loss from the first step
    with pytest.raises(FloatingPointError, match="training diverged.*nan in epoch 1"):
        fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False)


@pytest.mark.parametrize("_", [pytest.param(None, marks=ON_GPU, id="cuda")])
def test_cuda_graph_true_refuses_a_step_that_cannot_be_captured(_):
    model, opt, loader, _ = _setup(n=32, device="cuda")
    with device_checks.eager_checks():
        with pytest.raises(ValueError, match="cuda_graph=True.*eager device checks"):
            fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False,
                cuda_graph=True)
