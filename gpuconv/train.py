"""The training loop: fit, evaluate, checkpoints and history.

One step is explicit, with no autograd tape::

    out = model(x); loss = loss_fn(out, y)
    model.backward_params(loss_fn.backward())   # adds into every parameter's .grad
    optimizer.step(); optimizer.zero_grad()

(``backward_params`` is ``backward`` without the gradient of the data, which nothing needs.)

Checkpoints are ``.npz`` files of named arrays (model state, optimizer state, and a JSON
string of metadata), written to a temporary file in the same folder and then renamed, so a
crash never leaves half a file; loading uses ``allow_pickle=False``. A file that is not a
readable checkpoint (empty, truncated, not a zip, a ``.npy``, a zip with a bad CRC, a
checkpoint missing an entry, one that holds pickled objects) raises one
:class:`CheckpointError` that names the file and what is wrong with it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import backend, data_parallel as _data_parallel, device_checks, graphs
from .data.download import atomic_write

__all__ = ["History", "fit", "evaluate", "save_checkpoint", "load_checkpoint", "read_checkpoint",
           "CheckpointError"]

_MODEL = "model/"
_OPTIM = "optim/"
_META = "meta"
_NPY_MAGIC = b"\x93NUMPY"


class CheckpointError(ValueError):
    """A file that is not a readable gpuconv checkpoint; the message names it and says why."""


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

    def plot(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Draw loss and accuracy curves (train and validation) to a PNG, under ``title``
        (e.g. the model and the dataset), with whole-numbered epoch ticks and the best
        epoch marked."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        epochs = range(1, len(self.train_loss) + 1)
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for ax, name, train, val in ((ax_loss, "loss", self.train_loss, self.val_loss),
                                     (ax_acc, "accuracy", self.train_accuracy, self.val_accuracy)):
            ax.plot(epochs, train, marker=".", label="train")
            if val:
                ax.plot(epochs, val, marker=".", label="validation")
            if self.best_epoch is not None:
                ax.axvline(self.best_epoch, color="grey", linestyle=":", linewidth=1,
                           label=f"best epoch ({self.best_epoch})")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.set_title(name)
            ax.legend()
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        _atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename."""
    with atomic_write(path) as f:
        write(f)


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, meta: dict | None = None) -> None:
    """Save ``model.state_dict()``, the optimizer's state and JSON-able ``meta`` to ``path``."""
    arrays = {_MODEL + k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({_OPTIM + k: backend.to_numpy(v)
                       for k, v in optimizer.state_arrays().items()})
    arrays[_META] = np.array(json.dumps(meta or {}))
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _check_container(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete zip archive whose entries
    all pass their CRC check (``np.load`` would guess at anything else, down to advising
    ``allow_pickle=True`` for a file of arbitrary bytes)."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is not a gpuconv checkpoint: the file is empty")
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head == _NPY_MAGIC:
        raise CheckpointError(f"{path} is not a gpuconv checkpoint: it is a single NumPy array "
                              "(.npy), not an .npz archive of named arrays")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a gpuconv checkpoint: it is not a complete .npz "
                              "(zip) archive; it is truncated or another kind of file")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint: its zip archive cannot be "
                              f"read ({exc})") from None
    if bad is not None:
        raise CheckpointError(f"{path} is a damaged checkpoint: entry {bad!r} fails its CRC "
                              "check")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """The metadata and the arrays (``{name: numpy array}``) of the checkpoint at ``path``.

    Raises ``FileNotFoundError`` when there is no such file and :class:`CheckpointError`
    when it is not a readable gpuconv checkpoint. Nothing is ever unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" if not path.exists() else
                                f"checkpoint {path} is not a file")
    _check_container(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CheckpointError(f"{path} is not a safe checkpoint: it holds Python objects "
                                  "(pickled data), which gpuconv never loads") from None
        raise CheckpointError(f"{path} is a damaged checkpoint: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint: {exc}") from None
    if _META not in arrays:
        raise CheckpointError(f"{path} is not a gpuconv checkpoint: it has no '{_META}' entry")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except ValueError:
        raise CheckpointError(f"{path} is a damaged checkpoint: its '{_META}' entry is not "
                              "JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is a damaged checkpoint: its '{_META}' entry is not a "
                              "JSON object")
    return meta, arrays


def load_checkpoint(path: str | os.PathLike, model=None, optimizer=None) -> dict:
    """Load a checkpoint into ``model`` (and ``optimizer``); return its metadata.

    A checkpoint whose arrays do not fit the model or the optimizer (another architecture,
    a missing entry) raises :class:`CheckpointError` naming the file.
    """
    meta, arrays = read_checkpoint(path)
    for target, prefix, load, what in (
            (model, _MODEL, "load_state_dict", "model"),
            (optimizer, _OPTIM, "load_state_arrays", "optimizer")):
        if target is None:
            continue
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        try:
            getattr(target, load)(state)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path} does not fit this {what}: {exc}") from None
    return meta


# --------------------------------------------------------------------------- epoch statistics

class _Stats:
    """Loss sum and correct count of the samples seen so far, on the arrays' device: on the
    GPU a float64 device array that each step adds to (one launch, no synchronisation) and
    the host reads only when it reports; on the CPU plain floats."""

    def __init__(self, like):
        self.on_device = backend.device_of(like) == "cuda"
        self.samples = 0
        self.loss_sum, self.correct = 0.0, 0
        if self.on_device:
            self.device = backend.array_module(like).zeros(2, np.float64)

    def reset(self) -> None:
        self.samples, self.loss_sum, self.correct = 0, 0.0, 0
        if self.on_device:
            self.device.fill(0)

    def add(self, loss, out, y) -> None:
        """Count a batch (``loss`` its mean loss, ``out`` its scores, ``y`` its targets);
        ``loss`` None counts only the correct predictions."""
        if self.on_device:
            _accumulate_on_device(self.device, loss, out, y)
            return
        self.add_counts(loss, _data_parallel.correct_count(out, y), y)

    def add_counts(self, loss, correct: int | None, y) -> None:
        """Count a batch of targets ``y`` on the CPU from its mean ``loss`` (or None) and its
        number of ``correct`` predictions (None: ``y`` is not class indices, an error)."""
        if correct is None:
            raise _no_accuracy(y)
        self.correct += correct
        if loss is not None:
            self.loss_sum += float(loss) * int(y.shape[0])

    def read(self) -> tuple[float, int]:
        """``(loss_sum, correct)`` so far: on the GPU one device-to-host copy, which also
        raises any error the kernels flagged (gpuconv.device_checks)."""
        if self.on_device:
            (host,) = device_checks.read(self.device)
            self.loss_sum, self.correct = float(host[0]), int(host[1])
        return self.loss_sum, self.correct


def _no_accuracy(y) -> ValueError:
    return ValueError(f"fit and evaluate count correct predictions of integer class-index "
                      f"targets (N, ...) for scores (N, C, ...); got targets of shape "
                      f"{tuple(y.shape)} and dtype {y.dtype}")


def _accumulate_on_device(stats, loss, out, y) -> None:
    """``stats += [loss * N, correct]`` for class-index targets (a clear error for others,
    as on the CPU): the fused kernel for float32/float64 scores, CuPy operations
    otherwise."""
    if not _data_parallel.is_class_target(out, y):
        raise _no_accuracy(y)
    xp = backend.array_module(out)
    n = int(y.shape[0])
    if loss is None:
        loss = xp.zeros((), out.dtype)
    if out.dtype in (np.float32, np.float64):
        from .kernels.cuda_c.loss import classification_stats

        classification_stats(stats, xp.ascontiguousarray(loss, dtype=out.dtype), out,
                             y.astype(np.int64, copy=False))
    else:
        stats[0] += loss.astype(np.float64) * n
        stats[1] += xp.sum(xp.argmax(out, axis=1) == y)


def evaluate(model, loader: Iterable, loss_fn=None) -> dict:
    """Mean loss (when ``loss_fn`` is given) and accuracy of ``model`` over ``loader``.

    On the GPU the sums stay on the device until the end: one synchronisation, which also
    raises any value check the kernels flagged (:mod:`gpuconv.device_checks`)."""
    was_training = model.training
    model.eval()
    stats, total = None, 0
    try:
        for x, y in loader:
            out = model(x)
            if stats is None:
                stats = _Stats(out)
            stats.add(None if loss_fn is None else loss_fn(out, y), out, y)
            total += int(y.shape[0])
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    loss_sum, correct = stats.read()
    result = {"accuracy": correct / total, "samples": total}
    if loss_fn is not None:
        result["loss"] = loss_sum / total
    return result


# --------------------------------------------------------------------------- training steps

class _Trainer:
    """The training step of :func:`fit`, eager or replayed from a CUDA graph.

    A step is forward, loss, backward, optional clipping, the optimizer step and the
    statistics update, with no host synchronisation on the GPU. On the CPU with more than
    one thread, forward, loss and backward run as a data-parallel step when the model allows
    (:mod:`gpuconv.data_parallel`: the batch in shards, one per worker process); ``close``
    stops its workers. In graph mode the first
    batch of the static shape runs eagerly (it makes the optimizer's state and compiles every
    kernel), the second is copied into static input buffers and captured (nothing runs), and
    that and every later batch of the same shape is copied in and replayed: one launch per
    step. A batch of another shape (the last, partial one) runs eagerly, or is dropped with
    ``last_batch="drop"``.
    """

    def __init__(self, model, loss_fn, optimizer, clip_grad_norm, use_graph: bool,
                 last_batch: str, shard: bool | None = None):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.shard = shard     # fit's data_parallel
        self.clip, self.use_graph, self.last_batch = clip_grad_norm, use_graph, last_batch
        self.shape = None      # the (x, y) shapes of the first batch: the static shape
        self.eager_steps = 0
        self.graph = self.static = None
        self.stats: _Stats | None = None
        self.cpu_step = None    # the data-parallel choice, made by the first CPU step

    def run(self, x, y) -> bool:
        """Train on one batch; False when it was dropped."""
        shape = (tuple(x.shape), tuple(y.shape))
        if self.shape is None:
            self.shape = shape
        if self.stats is None:
            self.stats = _Stats(x)
            if not self.use_graph and not self.stats.on_device and self.shard is not False:
                self.cpu_step = _data_parallel.start(self.model, self.loss_fn, x, y,
                                                    always=bool(self.shard))
        if shape != self.shape:
            if self.last_batch == "drop":
                return False
            self._step(x, y)
        elif not self.use_graph or self.eager_steps < GRAPH_WARMUP_STEPS:
            self._step(x, y)
            self.eager_steps += 1
        else:
            self._replay(x, y)
        self.stats.samples += int(y.shape[0])
        return True

    def close(self) -> None:
        """Stop the data-parallel step's workers, if any."""
        if self.cpu_step is not None:
            self.cpu_step.close()

    def _forward_backward(self, x, y):
        """The batch's loss and output; every parameter's gradient added into ``.grad``."""
        out = self.model(x)
        loss = self.loss_fn(out, y)
        self.model.backward_params(self.loss_fn.backward())   # x is data: no grad_input
        return loss, out

    def _step(self, x, y) -> None:
        from .optim import clip_grad_norm_

        if self.cpu_step is not None:
            loss, correct = self.cpu_step.run(x, y, self._forward_backward)
        else:
            loss, out = self._forward_backward(x, y)
        if self.clip is not None:
            clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.cpu_step is not None:
            self.stats.add_counts(loss, correct, y)
        else:
            self.stats.add(loss, out, y)

    def _replay(self, x, y) -> None:
        if self.graph is None:
            # Static inputs, made before the capture from the default memory pool.
            self.static = (x.copy(), y.copy())
            self.graph = graphs.StepGraph()
            self.graph.capture(lambda: self._step(*self.static))
        else:
            self.static[0][...] = x
            self.static[1][...] = y
        self.optimizer.refresh_device_hyperparameters()  # a scheduler's new learning rate
        self.graph.replay()


# At least one eager step before a capture: it makes the optimizer's state (momentum
# buffers, moments), so that the captured step is a steady one, and compiles every kernel.
GRAPH_WARMUP_STEPS = 1
# Progress-bar reads (one synchronisation each) at most this often when no N is given.
PROGRESS_SECONDS = 0.25


def _graph_blockers(model) -> list[str]:
    """Why ``model``'s training step cannot be captured as a CUDA graph (empty: it can)."""
    from .nn.linear import Embedding
    from .nn.norm import _BatchNorm
    from .nn.rnn import _RNNBase

    reasons = []
    if device_checks.eager():
        reasons.append("eager device checks are on (gpuconv.device_checks.set_eager)")
    for name, m in model.named_modules():
        if isinstance(m, _RNNBase) and m.dropout > 0 and m.num_layers > 1:
            reasons.append(f"{name or type(m).__name__}: recurrent dropout draws its masks' "
                           "seeds on the host")
        if isinstance(m, Embedding):
            reasons.append(f"{name or type(m).__name__}: embedding checks its indices' range "
                           "on the host")
        if isinstance(m, _BatchNorm) and m.momentum is None and m.track_running_stats:
            reasons.append(f"{name or type(m).__name__}: momentum=None reads "
                           "num_batches_tracked on the host")
    return reasons


def _use_graph(model, cuda_graph: bool | None, on_gpu: bool) -> bool:
    if cuda_graph is False:
        return False
    if not on_gpu:
        if cuda_graph:
            raise ValueError("fit: cuda_graph=True needs the model on the GPU")
        return False
    reasons = _graph_blockers(model)
    if reasons and cuda_graph:
        raise ValueError("fit: cuda_graph=True, but the step cannot be captured: "
                         + "; ".join(reasons))
    return not reasons


def _train_epoch(trainer: _Trainer, loader, bar, progress_every: int | None,
                 epoch: int) -> tuple[float, float]:
    trainer.model.train()
    if trainer.stats is not None:
        trainer.stats.reset()
    start = last_read = time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        if not trainer.run(x, y) or bar is None:
            continue
        bar.update(int(y.shape[0]))
        now = time.perf_counter()
        due = (step % progress_every == 0) if progress_every else \
            now - last_read >= PROGRESS_SECONDS
        if due:
            last_read = now
            _show_progress(bar, trainer.stats, epoch, now - start)
    if trainer.stats is None or trainer.stats.samples == 0:
        raise ValueError("fit: the training loader yielded no batches")
    loss_sum, correct = _checked(trainer.stats, epoch)
    return loss_sum / trainer.stats.samples, correct / trainer.stats.samples


def _checked(stats: _Stats, epoch: int) -> tuple[float, int]:
    loss_sum, correct = stats.read()
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"training diverged: the loss became {loss_sum} in epoch "
                                 f"{epoch + 1}; lower the learning rate or clip gradients")
    return loss_sum, correct


def _show_progress(bar, stats: _Stats, epoch: int, seconds: float) -> None:
    loss_sum, correct = _checked(stats, epoch)
    bar.set_postfix(loss=f"{loss_sum / stats.samples:.4f}",
                    acc=f"{correct / stats.samples:.3f}",
                    samples_s=f"{stats.samples / seconds:.0f}")


def fit(model, loss_fn, optimizer, train_loader, val_loader=None, epochs: int = 10, *,
        scheduler=None, early_stopping: int | None = None, checkpoint: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, history_path: str | os.PathLike | None = None,
        plot_path: str | os.PathLike | None = None, clip_grad_norm: float | None = None,
        checkpoint_meta: dict | None = None, progress: bool = True,
        cuda_graph: bool | None = None, last_batch: str = "eager",
        progress_every: int | None = None, verbose: bool | None = None,
        plot_title: str | None = None, data_parallel: bool | None = None) -> History:
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
    - ``cuda_graph``: on the GPU, capture the training step once as a CUDA graph and replay
      it for every batch of the first batch's shape (one launch per step). None (the
      default) does so when the model's step can be captured (no eager device checks, no
      recurrent dropout, no BatchNorm with momentum=None); True insists, False never.
    - ``last_batch``: what happens to a batch whose shape differs from the first one's (the
      last, partial batch): ``"eager"`` trains on it with an eager step, ``"drop"`` skips it
      (in eager and graph mode alike, so that both see the same batches).
    - ``progress_every``: with ``progress``, the bar shows the running loss and accuracy
      every N steps (each read is a synchronisation on the GPU); None: a few times a second.
    - ``progress``: a progress bar per epoch (tqdm, when installed); ``verbose``: one line
      per epoch (default: as ``progress``); ``plot_title``: the title of ``plot_path``.
    - ``data_parallel``: on the CPU with more than one thread, run each step's forward and
      backward as shards of the batch in worker processes (at most one per thread, each of
      at least 32 samples of the first batch), where the model treats samples
      independently (:mod:`gpuconv.data_parallel`). None (the default) times the first
      steps both ways and keeps the faster; True shards every step it can; False never does. Sharded and unsharded steps differ only in rounding (the order in
      which the shards' gradients are added), so with None, whose choice is a timing, two
      runs of the same seed may differ in the last bits; True and False repeat exactly.

    On the GPU the loop never waits for the device inside an epoch: the loss sums, correct
    counts and value-check flags stay on the device and are read once per epoch (and at the
    progress-bar updates), so a diverged loss or a bad target is reported there, not at the
    step that caused it. Everything runs on a stream of its own, ordered after the work
    queued before ``fit`` and before the work queued after it.
    """
    if epochs < 1:
        raise ValueError(f"fit: epochs must be >= 1, got {epochs}")
    if last_batch not in ("eager", "drop"):
        raise ValueError(f"fit: last_batch must be 'eager' or 'drop', got {last_batch!r}")
    if progress_every is not None and (isinstance(progress_every, bool)
                                       or not isinstance(progress_every, int)
                                       or progress_every < 1):
        raise ValueError(f"fit: progress_every must be a positive int or None, "
                         f"got {progress_every!r}")
    params = list(model.parameters())
    on_gpu = bool(params) and backend.device_of(params[0].data) == "cuda"
    trainer = _Trainer(model, loss_fn, optimizer, clip_grad_norm,
                       _use_graph(model, cuda_graph, on_gpu), last_batch, data_parallel)
    if on_gpu:  # the same cuBLAS workspace, so the same GEMM algorithms, eager or captured
        graphs.prepare_cublas()
    with graphs.side_stream() if on_gpu else contextlib.nullcontext(), \
            contextlib.closing(trainer):
        return _fit_epochs(trainer, train_loader, val_loader, epochs, scheduler,
                           early_stopping, checkpoint, resume, history_path, plot_path,
                           checkpoint_meta, progress, progress_every,
                           progress if verbose is None else verbose, plot_title)


def _fit_epochs(trainer, train_loader, val_loader, epochs, scheduler, early_stopping,
                checkpoint, resume, history_path, plot_path, checkpoint_meta, progress,
                progress_every, verbose, plot_title) -> History:
    model, optimizer, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn
    history, start_epoch, best = History(), 0, -math.inf
    if resume is not None:
        meta = load_checkpoint(resume, model, optimizer)
        missing = [k for k in ("epoch", "best", "history") if k not in meta]
        if missing:
            raise CheckpointError(f"{resume} cannot resume training: its metadata lacks "
                                  f"{', '.join(missing)} (it was not written by fit)")
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
            train_loss, train_acc = _train_epoch(trainer, train_loader, bar, progress_every,
                                                 epoch)
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
        if verbose:
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
        history.plot(plot_path, plot_title)
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
