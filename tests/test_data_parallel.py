"""fit's data-parallel CPU step (gpuconv.data_parallel): shards of a batch in worker processes
give the whole batch's loss, correct count and gradients; what may be sharded; a worker's
error reaches the caller; the workers stop when the step is closed."""
from __future__ import annotations

import os
import time
from collections import OrderedDict

import numpy as np
import pytest

from support import assert_close

from gpuconv import backend, data, data_parallel, models, nn, optim, threads
from gpuconv.nn.module import independent as module_independent
from gpuconv.train import fit

BATCH = 100   # two shards of 50, or three of 33-34 (>= MIN_SHARD_SAMPLES)


def _model(dtype=np.float64):
    nn.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 4, 3, padding=1, dtype=dtype)), ("relu", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * 4 * 4, 5, dtype=dtype))]))


def _batch(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), rng.integers(0, 5, n)


def _unsharded(model, loss_fn, x, y):
    """The oracle: the batch's loss, output and parameter gradients in one forward/backward."""
    out = model(x)
    loss = float(loss_fn(out, y))
    model.backward_params(loss_fn.backward())
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    return loss, out, grads


def _assert_step_is_unsharded(step, model, loss_fn, x, y):
    """``step.step(x, y)`` gives the batch's loss and gradients; returns its correct count
    and the oracle's output."""
    ref_loss, out, ref_grads = _unsharded(model, loss_fn, x, y)
    got_loss, correct = step.step(x, y)
    assert_close(np.asarray(got_loss), np.asarray(ref_loss), np.float64, "loss")
    for p, ref in zip(model.parameters(), ref_grads):
        assert_close(p.grad, ref, np.float64, "gradient")
    return correct, out


@pytest.fixture
def sharded():
    """``make(model, loss_fn, x, y, shards)``: a started ShardedStep, closed after the test."""
    made = []

    def make(model, loss_fn, x, y, shards=2):
        step = data_parallel.ShardedStep(model, loss_fn, shards, x, y)
        made.append(step)
        while not step.ready():
            time.sleep(0.01)
        return step
    yield make
    for step in made:
        step.close()


_LOSSES = {
    "cross_entropy_mean": lambda: nn.CrossEntropyLoss(),
    "cross_entropy_sum": lambda: nn.CrossEntropyLoss(reduction="sum"),
    "weighted_ignore_smoothing": lambda: nn.CrossEntropyLoss(
        weight=np.linspace(0.5, 2.0, 5), ignore_index=2, label_smoothing=0.1),
    "nll_mean": lambda: nn.NLLLoss(),
}


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("loss", list(_LOSSES))
def test_shards_give_the_batch_loss_correct_count_and_gradients(sharded, loss, shards):
    model, loss_fn = _model(), _LOSSES[loss]()
    x, y = _batch()
    correct, out = _assert_step_is_unsharded(sharded(model, loss_fn, x, y, shards), model,
                                             loss_fn, x, y)
    assert correct == int((out.argmax(axis=1) == y).sum())


def test_mse_loss_shards_add_up_to_the_mean(sharded):
    model, loss_fn = _model(), nn.MSELoss()
    x, _ = _batch()
    y = np.random.default_rng(1).standard_normal((BATCH, 5))
    correct, _ = _assert_step_is_unsharded(sharded(model, loss_fn, x, y), model, loss_fn, x, y)
    assert correct is None   # a regression's targets: no correct predictions to count


def test_workers_see_the_parameters_of_each_step(sharded):
    """The caller's optimizer updates its parameters; the next step's shards use them."""
    model, loss_fn = _model(), nn.CrossEntropyLoss()
    x, y = _batch()
    step = sharded(model, loss_fn, x, y)
    opt = optim.SGD(model.parameters(), lr=0.5)
    step.step(x, y)
    opt.step()
    opt.zero_grad()
    _assert_step_is_unsharded(step, model, loss_fn, x, y)


@pytest.mark.parametrize("x_shape, y_len", [
    ((2 * data_parallel.MIN_SHARD_SAMPLES - 1, 1, 8, 8), None),   # too few samples per shard
    ((BATCH + 10, 1, 8, 8), None),                                 # past the buffers' size
    ((BATCH, 1, 9, 9), None),                                      # another image shape
    ((BATCH, 1, 8, 8), BATCH - 1),                                 # targets of another length
])
def test_a_batch_the_buffers_do_not_take_runs_unsharded(sharded, x_shape, y_len):
    model, loss_fn = _model(), nn.CrossEntropyLoss()
    step = sharded(model, loss_fn, *_batch())
    x = np.zeros(x_shape)
    y = np.zeros(x_shape[0] if y_len is None else y_len, np.int64)
    assert step.step(x, y) is None
    assert all(p.grad is None for p in model.parameters())


class _Routed(nn.Module):
    """Layers reached through a list outside the registries, and one weight in two layers."""

    samples_independent = True

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, dtype=np.float64)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2 * 8 * 8, 2 * 8 * 8, dtype=np.float64)
        self.tied = nn.Linear(2 * 8 * 8, 2 * 8 * 8, dtype=np.float64)
        self.tied.weight = self.fc.weight
        self.out = nn.Linear(2 * 8 * 8, 5, dtype=np.float64)
        self.path = [self.conv, self.flat, self.fc, self.tied, self.out]

    def forward(self, x):
        for m in self.path:
            x = m(x)
        return x

    def backward(self, grad):
        for m in reversed(self.path):
            grad = m.backward(grad)
        return grad


def test_layers_outside_the_registries_and_tied_weights_reach_the_workers(sharded):
    nn.manual_seed(0)
    model, loss_fn = _Routed(), nn.CrossEntropyLoss()
    x, y = _batch()
    _assert_step_is_unsharded(sharded(model, loss_fn, x, y), model, loss_fn, x, y)


class _ForgetfulAway(nn.Module):
    """The identity, except that in a process other than the one that made it, it leaves
    each sample's first feature of its output unwritten, as a faulty impl would."""

    samples_independent = True

    def __init__(self):
        super().__init__()
        self.home = os.getpid()

    def forward(self, x):
        out = backend.empty(x.shape, x.dtype)
        start = 0 if os.getpid() == self.home else 1
        out[:, start:] = x[:, start:]
        return out

    def backward(self, grad_output):
        return grad_output


def test_workers_poison_new_outputs_when_the_caller_does(sharded):
    """Inside ``backend.poisoned()`` (every test runs in it: conftest), an output a worker
    leaves unwritten is NaN, as it would be in the caller."""
    assert backend.poisoning()
    nn.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), _ForgetfulAway(), nn.Linear(64, 5, dtype=np.float64))
    loss_fn = nn.CrossEntropyLoss()
    x, y = _batch()
    assert np.isfinite(_unsharded(model, loss_fn, x, y)[0])   # written in full here
    loss, _ = sharded(model, loss_fn, x, y).step(x, y)
    assert np.isnan(loss)


def test_a_workers_error_is_raised_and_leaves_the_gradients_as_they_were(sharded):
    model, loss_fn = _model(), nn.CrossEntropyLoss()
    x, y = _batch()
    step = sharded(model, loss_fn, x, y)
    bad = y.copy()
    bad[-1] = 7   # out of range, in the worker's shard only
    with pytest.raises(ValueError, match="target") as info:
        step.step(x, bad)
    assert "data-parallel worker 1" in str(info.value.__cause__)
    assert all(p.grad is None for p in model.parameters())
    _assert_step_is_unsharded(step, model, loss_fn, x, y)   # and the next step runs


@pytest.mark.parametrize("spin, watch_memory", [
    (0.0, True),      # both sides sleep on the socket at once: every byte read while waiting
    (0.0, False),     # ... and the caller waits for the byte, as off x86
    (data_parallel.SPIN_SECONDS, False),
])
def test_steps_and_errors_are_handed_over_whichever_way_a_side_waits(sharded, monkeypatch,
                                                                       spin, watch_memory):
    monkeypatch.setattr(data_parallel, "SPIN_SECONDS", spin)   # the workers get it at start
    model, loss_fn = _model(), nn.CrossEntropyLoss()
    x, y = _batch()
    step = sharded(model, loss_fn, x, y)
    monkeypatch.setattr(data_parallel, "_WATCH_MEMORY", watch_memory)   # this side's only
    bad = y.copy()
    bad[-1] = 7
    for _ in range(3):
        _assert_step_is_unsharded(step, model, loss_fn, x, y)
        model.zero_grad()
    with pytest.raises(ValueError, match="target"):
        step.step(x, bad)
    for _ in range(2):
        _assert_step_is_unsharded(step, model, loss_fn, x, y)
        model.zero_grad()


@pytest.mark.parametrize("watch_memory", [True, False])
def test_a_side_that_finds_each_bump_in_memory_reads_the_bytes_before_its_socket_fills(
        monkeypatch, watch_memory):
    """Thousands of steps whose results are ready before the caller looks: the other side's
    one-byte messages never fill the socket (a full one would block that side's send; its
    end here is non-blocking, so it would raise)."""
    import socket
    from multiprocessing.connection import Connection

    monkeypatch.setattr(data_parallel, "_WATCH_MEMORY", watch_memory)
    here, there = socket.socketpair()
    there.setblocking(False)
    ctl, val = np.zeros(data_parallel._HAS_GRAD, np.int64), np.zeros(2)
    caller = data_parallel._Channel(Connection(here.detach()), ctl, val, data_parallel._DONE)
    worker = data_parallel._Channel(Connection(there.detach()), ctl, val, data_parallel._START)
    for step in range(1, 3001):
        worker.signal(data_parallel._DONE, step, data_parallel._STEP_DONE)
        assert caller.wait(step, 0.0) is None
        assert caller.owed <= data_parallel._MAX_OWED
    caller.conn.close()
    worker.conn.close()


def test_routed_gradients_land_in_their_buffers_and_others_are_copied(monkeypatch):
    """A worker's gradients go straight into the shared block (nn.module.route_gradients):
    the first of a step is copied into the buffer, which becomes .grad, and later ones add
    into it; a gradient the buffer cannot hold (another dtype) is copied as without one."""
    from gpuconv.nn import module

    monkeypatch.setattr(module, "_gradient_buffers", {})
    routed, other = nn.Parameter(np.zeros(3)), nn.Parameter(np.zeros(3))
    buffers = [np.full(3, np.nan), np.full(3, np.nan, np.float32)]
    module.route_gradients([routed, other], buffers)
    module.accumulate_grad(routed, np.array([1.0, 2.0, 3.0]))
    module.accumulate_grad(routed, np.array([1.0, 1.0, 1.0]))
    assert routed.grad is buffers[0]
    np.testing.assert_array_equal(buffers[0], [2.0, 3.0, 4.0])
    module.accumulate_grad(other, np.array([5.0, 6.0, 7.0]))
    assert other.grad is not buffers[1] and other.grad.dtype == np.float64
    assert np.isnan(buffers[1]).all()


def test_close_right_after_the_start_does_not_wait_for_the_workers():
    step = data_parallel.ShardedStep(_model(), nn.CrossEntropyLoss(), 2, *_batch())
    t0 = time.perf_counter()
    step.close()
    assert time.perf_counter() - t0 < data_parallel.CLOSE_SECONDS / 2
    assert all(w.process.poll() is not None for w in step.workers)


def test_close_stops_the_workers_and_frees_the_shared_block(sharded):
    from multiprocessing.shared_memory import SharedMemory

    step = sharded(_model(), nn.CrossEntropyLoss(), *_batch())
    processes, name = [w.process for w in step.workers], step._shm.name
    step.close()
    assert all(p.poll() is not None for p in processes)
    with pytest.raises(FileNotFoundError):
        SharedMemory(name=name)
    step.close()   # a second close does nothing
    assert step.step(*_batch()) is None   # and a step after it runs unsharded


# --------------------------------------------------------------------------- what may be sharded

@pytest.mark.parametrize("module, training, independent", [
    (lambda: models.lenet5(), True, True),
    (lambda: nn.BatchNorm2d(3), True, False),
    (lambda: nn.BatchNorm2d(3), False, True),
    (lambda: nn.Dropout(0.5), True, False),
    (lambda: nn.Dropout(0.5), False, True),
    (lambda: nn.Softmax(dim=0), True, False),
    (lambda: nn.Softmax(dim=1), True, True),
    (lambda: nn.Flatten(start_dim=0), True, False),
    (lambda: nn.Concat(nn.ReLU(), nn.Identity(), dim=0), True, False),
    (lambda: nn.Concat(nn.ReLU(), nn.Identity(), dim=1), True, True),
    (lambda: nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), True, False),
    (lambda: models.resnet_small(), False, True),
    (lambda: nn.LSTM(3, 4), True, False),     # its axis 0 is time, not the batch
    (lambda: type("Custom", (nn.Module,), {})(), True, False),   # undeclared: not sharded
    (lambda: type("OwnForward", (nn.Sequential,), {"forward": lambda self, x: x})(
        nn.ReLU()), True, False),                 # a container's subclass with its forward
    (lambda: type("OnlyInit", (nn.Sequential,), {})(nn.ReLU()), True, True),
    (lambda: type("OwnLinear", (nn.Linear,), {"forward": lambda self, x: x})(2, 2), True,
     False),                                      # a layer's subclass with its forward
    (lambda: type("Redeclared", (nn.Linear,), {"forward": lambda self, x: x,
                                                "samples_independent": True})(2, 2), True,
     True),                                       # ... that says it keeps samples apart
])
def test_samples_independent_says_whether_a_module_may_be_sharded(module, training,
                                                                   independent):
    m = module()
    m.train(training)
    assert module_independent(m) is independent


@pytest.fixture
def two_threads():
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(before)


def test_blockers_name_what_prevents_sharding(two_threads):
    assert data_parallel.blockers(_model(), nn.CrossEntropyLoss()) == []
    own_loss = type("OwnLoss", (nn.MSELoss,), {"forward": lambda self, x, t: x.sum()})()
    assert any("gpuconv loss" in r for r in data_parallel.blockers(_model(), own_loss))
    in_main = type("Net", (nn.Sequential,), {"__module__": "__main__"})(nn.Linear(2, 2))
    assert any("__main__" in r for r in data_parallel.blockers(in_main, nn.MSELoss()))
    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = nn.Parameter(tied[0].weight.data)   # two Parameters, one array
    assert "two parameters share one array" in data_parallel.blockers(tied, nn.MSELoss())
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert any("mixes samples" in r for r in data_parallel.blockers(bn, nn.CrossEntropyLoss()))
    assert any("reduced by mean or sum" in r for r in data_parallel.blockers(
        _model(), nn.CrossEntropyLoss(reduction="none")))
    assert any("float32 or float64" in r for r in data_parallel.blockers(
        _model(np.float16), nn.CrossEntropyLoss()))
    threads.set_num_threads(1)
    assert data_parallel.blockers(_model(), nn.CrossEntropyLoss()) == ["one gpuconv thread"]


@pytest.mark.parametrize("loss_fn, target", [
    (nn.CrossEntropyLoss(), np.array([0, 1, 2, 1])),
    (nn.CrossEntropyLoss(ignore_index=1), np.array([0, 1, 2, 1])),
    (nn.NLLLoss(weight=np.array([1.0, 2.0, 4.0]), ignore_index=0), np.array([0, 1, 2, 1])),
    (nn.MSELoss(), np.zeros((4, 3))),
])
def test_mean_divisor_is_the_sum_loss_over_the_mean_loss(loss_fn, target):
    x = np.random.default_rng(2).standard_normal((4, 3))
    if target.ndim == 1 and isinstance(loss_fn, nn.NLLLoss):
        x = np.log(np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))
    mean = float(loss_fn(x, target))
    loss_fn.reduction = "sum"
    total = float(loss_fn(x, target))
    loss_fn.reduction = "mean"
    assert loss_fn.mean_divisor(target) == pytest.approx(total / mean)


def test_serial_runs_the_pools_calls_on_this_thread(two_threads):
    import threading

    seen = []
    with threads.serial():
        assert threads.get_num_threads() == 1
        threads.parallel_for(4, lambda i: seen.append((i, threading.get_ident())))
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert {t for _, t in seen} == {threading.get_ident()}
    assert threads.get_num_threads() == 2


# --------------------------------------------------------------------------- through fit

def _fit(data_parallel_mode, epochs=2):
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 1, 8, 8))
    y = rng.integers(0, 5, 256)
    model = _model()
    loader = data.DataLoader(data.ArrayDataset(x, y), batch_size=96)  # a last batch of 64
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=epochs, progress=False,
            data_parallel=data_parallel_mode)
    return model, h


def test_fit_with_shards_follows_fit_without(two_threads):
    sharded, h_sharded = _fit(True)
    plain, h_plain = _fit(False)
    for (name, a), b in zip(sharded.state_dict().items(), plain.state_dict().values()):
        assert_close(a, b, np.float64, name)
    assert_close(np.array(h_sharded.train_loss), np.array(h_plain.train_loss), np.float64,
                 "training loss")
    assert h_sharded.train_accuracy == h_plain.train_accuracy


def test_fit_with_shards_is_reproducible(two_threads):
    first, _ = _fit(True)
    second, _ = _fit(True)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_the_chosen_step_times_both_kinds_then_keeps_one(two_threads, monkeypatch):
    monkeypatch.setattr(data_parallel, "TRIAL_STEPS", 2)
    model, loss_fn = _model(), nn.CrossEntropyLoss()
    x, y = _batch()
    chosen = data_parallel.start(model, loss_fn, x, y)
    assert chosen is not None and chosen.chosen is None

    def unsharded(xb, yb):
        out = model(xb)
        loss = loss_fn(out, yb)
        model.backward_params(loss_fn.backward())
        return loss, out

    try:
        for _ in range(10000):
            if chosen.chosen is not None:
                break
            chosen.run(x, y, unsharded)
            model.zero_grad()
        assert chosen.chosen is not None
        assert [len(chosen.times[k]) for k in (True, False)] == [3, 3]   # alternated
        assert (chosen.sharded is None) is (not chosen.chosen)
    finally:
        chosen.close()


@pytest.mark.parametrize("sharded, unsharded, expected", [
    # Three of five sharded steps disturbed: the best of each kind decides, not the median.
    ([9.0, 14.1, 10.9, 11.0, 6.0, 6.1], [9.6, 10.0, 10.2, 10.0, 9.9, 9.6], True),
    ([9.0, 7.0, 7.1, 7.2, 7.0, 7.3], [9.6, 5.0, 9.2, 9.1, 9.0, 9.3], False),
    # The first step of each kind is not counted.
    ([1.0, 8.0, 8.0, 8.0, 8.0, 8.0], [9.0, 7.0, 7.0, 7.0, 7.0, 7.0], False),
], ids=["disturbed-shards", "the-best-step-decides", "first-steps-dropped"])
def test_the_chosen_step_is_the_kind_with_the_faster_best_step(sharded, unsharded, expected,
                                                              monkeypatch):
    monkeypatch.setattr(data_parallel, "TRIAL_STEPS", 5)
    step = object.__new__(data_parallel.ChosenStep)
    step.sharded, step.chosen = None, None
    step.times = {True: sharded, False: unsharded}
    step._choose()
    assert step.chosen is expected


def test_fit_names_targets_whose_accuracy_it_cannot_count(two_threads):
    x, _ = _batch(128)
    loader = data.DataLoader(data.ArrayDataset(x, np.zeros((128, 5))), batch_size=64)
    model = _model()
    for mode in (True, False):
        with pytest.raises(ValueError, match=r"class-index targets.*\(64, 5\) and dtype float64"):
            fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1), loader, epochs=1,
                progress=False, data_parallel=mode)


def test_fit_trains_in_one_process_when_the_workers_cannot_start(two_threads):
    model = _model()
    model.note = lambda: None   # cannot be pickled for a worker
    loader = data.DataLoader(data.ArrayDataset(*_batch(192)), batch_size=96)
    with pytest.warns(RuntimeWarning, match="did not start"):
        h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), loader,
                epochs=1, progress=False, data_parallel=True)
    assert len(h.train_loss) == 1 and np.isfinite(h.train_loss[0])
