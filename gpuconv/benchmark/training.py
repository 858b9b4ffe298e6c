"""End-to-end training benchmark: one epoch of LeNet-5 on random 28x28 images with SGD
(momentum 0.9), gpuconv beside PyTorch eager on the same device, in images per second.

Both run the same network (conv5x5(6, pad 2)-ReLU-maxpool-conv5x5(16)-ReLU-maxpool-
fc120-ReLU-fc84-ReLU-fc10, cross-entropy) on the same data; one warm-up step comes first.
"""
from __future__ import annotations

import time

import numpy as np

from .. import backend
from . import _torch

LR = 0.01
MOMENTUM = 0.9


def _data(images: int, device: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((images, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, images)
    return x, y


def _gpuconv_epoch(x, y, batch: int, device: str) -> float:
    from .. import models, nn, optim

    nn.manual_seed(0)
    model = models.lenet5(num_classes=10, input_size=28).to(device)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    xs = [backend.to_device(x[i:i + batch], device) for i in range(0, len(x), batch)]
    ys = [backend.to_device(y[i:i + batch], device) for i in range(0, len(y), batch)]

    def step(xb, yb):
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()

    step(xs[0], ys[0])
    _sync(device)
    t0 = time.perf_counter()
    for xb, yb in zip(xs, ys):
        step(xb, yb)
    _sync(device)
    return time.perf_counter() - t0


def _torch_epoch(torch, x, y, batch: int, device: str) -> float:
    tnn = torch.nn
    torch.manual_seed(0)
    model = tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10),
    ).to(device)
    loss_fn = tnn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    xs = [torch.from_numpy(x[i:i + batch]).to(device) for i in range(0, len(x), batch)]
    ys = [torch.from_numpy(y[i:i + batch]).to(device) for i in range(0, len(y), batch)]

    def step(xb, yb):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()

    step(xs[0], ys[0])
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for xb, yb in zip(xs, ys):
        step(xb, yb)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _sync(device: str) -> None:
    if device == "cuda":
        backend.cupy_or_none().cuda.Device().synchronize()


def _row(case: dict, impl: str, source: str, seconds: float, device: str) -> dict:
    return {"case": case["label"], "pass": "epoch", "op": "train_lenet5", "source": source,
            "impl": impl, "dtype": "float32", "device": device, "seconds": seconds,
            "images_per_s": case["images"] / seconds, "correct": True}


def train_rows(cases: list, device: str, quick: bool, log) -> list:
    """One row per framework per case; ``ratio_to_best_reference`` compares images/s."""
    rows = []
    for case in cases:
        x, y = _data(case["images"], device)
        ours = _row(case, "gpuconv", "gpuconv", _gpuconv_epoch(x, y, case["batch"], device), device)
        case_rows = [ours]
        torch = _torch(device)
        if torch is not None:
            case_rows.append(_row(case, "torch_eager", "torch",
                                  _torch_epoch(torch, x, y, case["batch"], device), device))
        best_ref = max((r["images_per_s"] for r in case_rows if r["source"] == "torch"),
                       default=None)
        for r in case_rows:
            r["ratio_to_best_reference"] = r["images_per_s"] / best_ref if best_ref else None
            log(f"{r['case']:>22s} {r['impl']:>12s} {r['seconds']:8.2f} s/epoch "
                f"{r['images_per_s']:10.0f} images/s"
                + (f"  {r['ratio_to_best_reference']:.2f}x torch" if best_ref else ""))
        rows += case_rows
    return rows
