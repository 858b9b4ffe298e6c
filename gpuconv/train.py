"""The training loop: fit, evaluate, checkpoints and history.

One step is explicit, with no autograd tape::

    out = model(x); loss = loss_fn(out, y)
    model.backward(loss_fn.backward())      # accumulates every parameter's .grad
    optimizer.step(); optimizer.zero_grad()

Checkpoints are ``.npz`` files of named arrays (model state, optimizer state, and a JSON
string of metadata), written to a temporary file in the same folder and then renamed, so a
crash never leaves half a file; loading uses ``allow_pickle=False``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import backend

__all__ = ["History", "fit", "evaluate", "save_checkpoint", "load_checkpoint"]

_MODEL = "model/"
_OPTIM = "optim/"
_META = "meta"


@dataclass
class History:
    """Per-epoch figures of one training run."""

    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def save_json(self, path: str | os.PathLike) -> None:
        _atomic_write(Path(path), lambda f: f.write(json.dumps(asdict(self), indent=2).encode()))

    def plot(self, path: str | os.PathLike) -> None:
        """Draw loss and accuracy curves (train and validation) to a PNG."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = range(1, len(self.train_loss) + 1)
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for ax, name, train, val in ((ax_loss, "loss", self.train_loss, self.val_loss),
                                     (ax_acc, "accuracy", self.train_accuracy, self.val_accuracy)):
            ax.plot(epochs, train, label="train")
            if val:
                ax.plot(epochs, val, label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.legend()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        _atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, meta: dict | None = None) -> None:
    """Save ``model.state_dict()``, the optimizer's state and JSON-able ``meta`` to ``path``."""
    arrays = {_MODEL + k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({_OPTIM + k: backend.to_numpy(v)
                       for k, v in optimizer.state_arrays().items()})
    arrays[_META] = np.array(json.dumps(meta or {}))
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str | os.PathLike, model=None, optimizer=None) -> dict:
    """Load a checkpoint into ``model`` (and ``optimizer``); return its metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if _META not in data.files:
            raise ValueError(f"{path} is not a gpuconv checkpoint (no '{_META}' entry)")
        meta = json.loads(str(data[_META]))
        if model is not None:
            model.load_state_dict({k[len(_MODEL):]: data[k] for k in data.files
                                   if k.startswith(_MODEL)})
        if optimizer is not None:
            optimizer.load_state_arrays({k[len(_OPTIM):]: data[k] for k in data.files
                                         if k.startswith(_OPTIM)})
    return meta


def _accuracy_count(out, y) -> int:
    xp = backend.array_module(out)
    return int(xp.sum(xp.argmax(out, axis=1) == y))


def evaluate(model, loader: Iterable, loss_fn=None) -> dict:
    """Mean loss (when ``loss_fn`` is given) and accuracy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    try:
        for x, y in loader:
            out = model(x)
            n = int(y.shape[0])
            correct += _accuracy_count(out, y)
            if loss_fn is not None:
                loss_sum += float(loss_fn(out, y)) * n
            total += n
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    result = {"accuracy": correct / total, "samples": total}
    if loss_fn is not None:
        result["loss"] = loss_sum / total
    return result


def _train_epoch(model, loss_fn, optimizer, loader, clip_grad_norm, bar) -> tuple[float, float]:
    from .optim import clip_grad_norm_

    model.train()
    total, correct, loss_sum = 0, 0, 0.0
    start = time.perf_counter()
    for x, y in loader:
        out = model(x)
        loss = float(loss_fn(out, y))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged: the loss became {loss}; "
                                     "lower the learning rate or clip gradients")
        model.backward(loss_fn.backward())
        if clip_grad_norm is not None:
            clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        n = int(y.shape[0])
        total += n
        correct += _accuracy_count(out, y)
        loss_sum += loss * n
        if bar is not None:
            bar.update(n)
            bar.set_postfix(loss=f"{loss_sum / total:.4f}", acc=f"{correct / total:.3f}",
                            samples_s=f"{total / (time.perf_counter() - start):.0f}")
    return loss_sum / total, correct / total


def fit(model, loss_fn, optimizer, train_loader, val_loader=None, epochs: int = 10, *,
        scheduler=None, early_stopping: int | None = None, checkpoint: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, history_path: str | os.PathLike | None = None,
        plot_path: str | os.PathLike | None = None, clip_grad_norm: float | None = None,
        checkpoint_meta: dict | None = None, progress: bool = True) -> History:
    """Train ``model`` for ``epochs`` epochs and return the :class:`History`.

    - ``val_loader``: evaluated after every epoch; the best validation accuracy is what
      ``checkpoint`` keeps and what ``early_stopping`` (a patience in epochs) watches.
      Without it, the training figures stand in.
    - ``scheduler``: stepped once per epoch (``ReduceLROnPlateau`` gets the validation loss).
    - ``resume``: a checkpoint written by an earlier ``fit``; training continues after its
      epoch with its optimizer state and history (a checkpoint holds the best epoch, so
      training resumes from there).
    - ``checkpoint_meta``: JSON-able facts stored in each checkpoint beside the epoch and
      history (the CLI stores the model's name and arguments there).
    """
    if epochs < 1:
        raise ValueError(f"fit: epochs must be >= 1, got {epochs}")
    history, start_epoch, best = History(), 0, -math.inf
    if resume is not None:
        meta = load_checkpoint(resume, model, optimizer)
        history = History(**meta["history"])
        start_epoch, best = meta["epoch"], meta["best"]
    bar_cls = _progress_bar(progress)
    since_best = 0
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        n = _loader_samples(train_loader)
        bar = bar_cls(total=n, desc=f"epoch {epoch + 1}/{epochs}", unit="img", leave=False) \
            if bar_cls else None
        try:
            train_loss, train_acc = _train_epoch(model, loss_fn, optimizer, train_loader,
                                                 clip_grad_norm, bar)
        finally:
            if bar is not None:
                bar.close()
        history.train_loss.append(train_loss)
        history.train_accuracy.append(train_acc)
        history.lr.append(float(optimizer.param_groups[0]["lr"]))
        watched_loss, watched_acc = train_loss, train_acc
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn)
            history.val_loss.append(val["loss"])
            history.val_accuracy.append(val["accuracy"])
            watched_loss, watched_acc = val["loss"], val["accuracy"]
        history.seconds.append(time.perf_counter() - t0)
        if progress:
            _report_epoch(epoch, epochs, history)
        if scheduler is not None:
            _step_scheduler(scheduler, watched_loss)
        if watched_acc > best:
            best, since_best = watched_acc, 0
            history.best_epoch = epoch + 1
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer,
                                {**(checkpoint_meta or {}), "epoch": epoch + 1, "best": best,
                                 "history": asdict(history)})
        else:
            since_best += 1
        if early_stopping is not None and since_best >= early_stopping:
            history.stopped_early = True
            break
    if history_path is not None:
        history.save_json(history_path)
    if plot_path is not None:
        history.plot(plot_path)
    return history


def _step_scheduler(scheduler, metric: float) -> None:
    from .optim.lr_scheduler import ReduceLROnPlateau

    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()


def _loader_samples(loader) -> int | None:
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if dataset is not None else None


def _progress_bar(progress: bool):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _report_epoch(epoch: int, epochs: int, h: History) -> None:
    line = (f"epoch {epoch + 1}/{epochs}: loss {h.train_loss[-1]:.4f} "
            f"acc {h.train_accuracy[-1]:.4f}")
    if h.val_loss:
        line += f" | val loss {h.val_loss[-1]:.4f} acc {h.val_accuracy[-1]:.4f}"
    print(line + f" | {h.seconds[-1]:.1f} s", flush=True)
