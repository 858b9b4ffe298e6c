"""End-to-end training benchmark: epochs of LeNet-5 on random 28x28 images with SGD
(momentum 0.9), gpuconv beside PyTorch on the same device, in images per second of the
median epoch.

Both run the same network (conv5x5(6, pad 2)-ReLU-maxpool-conv5x5(16)-ReLU-maxpool-
fc120-ReLU-fc84-ReLU-fc10, cross-entropy) on the same synthetic data (no download), the
batches already on the device. Each framework runs in two modes on a GPU:

- eager: one launch per kernel, as a Python loop issues them (gpuconv: ``fit``'s step with
  ``cuda_graph=False``; torch: its usual loop);
- graph: the step captured once as a CUDA graph and replayed per batch (gpuconv: ``fit``'s
  step with ``cuda_graph=True``; torch: ``torch.cuda.graph`` with static input tensors, as
  its documentation shows), the last partial batch eager in both.

Warm-up steps (and the capture) come before the clock starts. Each framework and mode then
trains ``EPOCHS`` epochs in a row on the same model (one with ``quick``), each timed; a row
gives the median epoch and every epoch's seconds. gpuconv's timed epoch also reads its loss
sum and correct count once at its end, as ``fit`` does; on a GPU its steps run under
``cupyx.allow_synchronize(False)``, so a host synchronisation inside the epoch would stop
the benchmark.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from .. import backend
from . import _torch

LR = 0.01
MOMENTUM = 0.9
# Warm-up steps at most while fit chooses its CPU step (its workers start in about a second).
MAX_CHOICE_STEPS = 1000
# Eager steps before torch's capture, on a side stream (torch's documented recipe).
TORCH_WARMUP_STEPS = 3
# Epochs timed per framework and mode (odd: the median is one of them). One epoch of the
# CPU suite is 47 steps, 0.17-0.31 s on the 2-core machine, and twelve 2-thread epochs in
# one process ranged over 14% (bench/NOTES.md, eighth pass): a single epoch's figure said
# as much about the machine as about the step.
EPOCHS = 5


def _data(images: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((images, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, images)
    return x, y


def _batches(x, y, batch: int, to_device) -> list:
    return [(to_device(x[i:i + batch]), to_device(y[i:i + batch]))
            for i in range(0, len(x), batch)]


def _gpuconv_epochs(x, y, batch: int, device: str, graph: bool,
                    epochs: int) -> tuple[list, int]:
    """Seconds of each of ``epochs`` epochs, and the processes each step ran in (fit's choice
    on the CPU: more than 1 when it shards the batch, gpuconv.data_parallel)."""
    from .. import graphs, models, nn, optim
    from ..train import _Trainer

    nn.manual_seed(0)
    model = models.lenet5(num_classes=10, input_size=28).to(device)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    batches = _batches(x, y, batch, lambda a: backend.to_device(a, device))
    trainer = _Trainer(model, nn.CrossEntropyLoss(), opt, None, graph, "eager")
    on_gpu = device == "cuda"
    with graphs.side_stream() if on_gpu else contextlib.nullcontext(), \
            contextlib.closing(trainer):
        for _ in range(2):  # the eager warm-up step; in graph mode the capture and a replay
            trainer.run(*batches[0])
        # On the CPU, until fit has timed its data-parallel step against the plain one and
        # chosen (gpuconv.data_parallel): the epochs measure the step fit settles on.
        for _ in range(MAX_CHOICE_STEPS):
            if trainer.cpu_step is None or trainer.cpu_step.chosen is not None:
                break
            trainer.run(*batches[0])
        seconds = [_gpuconv_epoch(trainer, batches, on_gpu) for _ in range(epochs)]
        sharded = trainer.cpu_step.sharded if trainer.cpu_step is not None else None
        return seconds, sharded.shards if sharded is not None else 1


def _gpuconv_epoch(trainer, batches: list, on_gpu: bool) -> float:
    """Seconds for one epoch of ``trainer`` on ``batches``, from an idle device to the
    epoch's statistics read back."""
    trainer.stats.read()
    t0 = time.perf_counter()
    trainer.stats.reset()
    with _no_sync(on_gpu):
        for xb, yb in batches:
            trainer.run(xb, yb)
    trainer.stats.read()  # fit's one read per epoch; waits for the last step
    return time.perf_counter() - t0


def _no_sync(on_gpu: bool):
    """Refuse CuPy's host synchronisations in the block on a GPU."""
    if not on_gpu:
        return contextlib.nullcontext()
    import cupyx

    return cupyx.allow_synchronize(False)


def _torch_model(torch, device: str):
    tnn = torch.nn
    torch.manual_seed(0)
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10),
    ).to(device)


def _torch_epochs(torch, x, y, batch: int, device: str, graph: bool, epochs: int) -> list:
    """Seconds of each of ``epochs`` epochs of torch's step (eager, or its CUDA graph)."""
    model = _torch_model(torch, device)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    batches = _batches(x, y, batch, lambda a: torch.from_numpy(a).to(device))

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    run = step
    if graph:
        run = _torch_graph_step(torch, step, batches[0])
    else:
        step(*batches[0])
    seconds = []
    for _ in range(epochs):
        _torch_sync(torch, device)
        t0 = time.perf_counter()
        for xb, yb in batches:
            run(xb, yb)
        _torch_sync(torch, device)
        seconds.append(time.perf_counter() - t0)
    return seconds


def _torch_graph_step(torch, step, first):
    """torch's whole-network capture: warm-up steps on a side stream, then the step captured
    on static inputs; batches of their shape are copied in and replayed, others eager."""
    static_x, static_y = first[0].clone(), first[1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(TORCH_WARMUP_STEPS):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static_x, static_y)

    def run(xb, yb):
        if xb.shape != static_x.shape:
            step(xb, yb)
            return
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
    return run


def _torch_sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _row(case: dict, impl: str, source: str, epoch_seconds: list, device: str,
         processes: int | None = None) -> dict:
    """A row of the median of ``epoch_seconds`` (an odd count: the median is one epoch's)."""
    seconds = float(np.median(epoch_seconds))
    return {"case": case["label"], "pass": "epoch", "op": "train_lenet5", "source": source,
            "impl": impl, "dtype": "float32", "device": device, "seconds": seconds,
            "epoch_seconds": list(epoch_seconds), "images_per_s": case["images"] / seconds,
            "correct": True, "processes": processes}


def train_rows(cases: list, device: str, quick: bool, log) -> list:
    """One row per framework and mode per case, of the median of ``EPOCHS`` epochs (one
    with ``quick``); ``ratio_to_best_reference`` compares images/s with the fastest torch
    row, ``ratio_to_torch_<mode>`` with each torch row."""
    rows = []
    epochs = 1 if quick else EPOCHS
    modes = (("eager", False), ("graph", True)) if device == "cuda" else (("eager", False),)
    torch = _torch(device)
    for case in cases:
        x, y = _data(case["images"])
        case_rows = []
        for mode, graph in modes:
            seconds, processes = _gpuconv_epochs(x, y, case["batch"], device, graph, epochs)
            case_rows.append(_row(case, f"gpuconv_{mode}", "gpuconv", seconds, device,
                                  processes))
        if torch is not None:
            case_rows += [_row(case, f"torch_{mode}", "torch",
                               _torch_epochs(torch, x, y, case["batch"], device, graph, epochs),
                               device)
                          for mode, graph in modes]
        refs = {r["impl"]: r["images_per_s"] for r in case_rows if r["source"] == "torch"}
        best_ref = max(refs.values(), default=None)
        for r in case_rows:
            r["ratio_to_best_reference"] = r["images_per_s"] / best_ref if best_ref else None
            for impl, ips in refs.items():
                r[f"ratio_to_{impl}"] = r["images_per_s"] / ips
            log(f"{r['case']:>22s} {r['impl']:>14s} {r['seconds']:8.3f} s/epoch "
                f"(median of {len(r['epoch_seconds'])}) "
                f"{r['images_per_s']:10.0f} images/s"
                + "".join(f"  {r[f'ratio_to_{impl}']:.2f}x {impl}" for impl in refs)
                + (f"  (batch in {r['processes']} processes)" if (r["processes"] or 1) > 1
                   else ""))
        rows += case_rows
    return rows
