"""The ``gpuconv`` command: ``train``, ``eval``, ``info``, ``bench`` and ``tune``.

``gpuconv train`` with no arguments trains LeNet-5 on the bundled ``digits`` data; ``gpuconv``
alone prints the usage. Bad arguments give a one-line error and exit status 2; failures
while running (a damaged checkpoint, missing data, a missing optional package) give a
one-line error and exit status 1; neither prints a traceback. A closed output pipe
(``gpuconv info | head -3``) ends the command quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__

__all__ = ["main"]

DATASETS = ("digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "shapes", "synthetic_text")
OFFLINE_DATASETS = ("digits", "mnist1d", "shapes", "synthetic_text")  # generated or bundled
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
# Per-dataset defaults that reach the accuracies stated in the README.
DEFAULTS = {
    "digits": {"epochs": 30, "batch_size": 32, "optimizer": "adam", "lr": 2e-3},
    "mnist1d": {"epochs": 60, "batch_size": 100, "optimizer": "adam", "lr": 1e-2},
    "shapes": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
    "synthetic_text": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 3e-3},
}
FALLBACK = {"epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.05}
# Training-set augmentation per dataset (off with --no-augment): MNIST-1D's signals are
# shifted by up to 3 samples, which lifts the small CNN from about 92% to 95% test accuracy.
AUGMENT_SHIFT = {"mnist1d": 3}
VALIDATION_FRACTION = 0.1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int,
                        help="CPU threads for the CPU kernels (default $GPUCONV_NUM_THREADS, "
                        "else the cores this process may use)")


def _per_dataset(key: str) -> str:
    """The default of a training setting that depends on the dataset, in words."""
    return ", ".join([f"{d}: {v[key]}" for d, v in DEFAULTS.items()]
                     + [f"others: {FALLBACK[key]}"])


DATA_ROOT_HELP = ("read the dataset's files from this folder; nothing is downloaded and no "
                  "file or folder is created (without it, mnist, fashion_mnist and cifar10 "
                  "are downloaded once to $GPUCONV_DATA or ~/.cache/gpuconv)")
DEVICE_HELP = "auto: the GPU when CuPy sees one, else the CPU (default: %(default)s)"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gpuconv", description="Train and inspect small CNNs and RNNs with gpuconv.")
    p.add_argument("--version", action="version", version=f"gpuconv {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    models = IMAGE_MODELS + SIGNAL_MODELS + TEXT_MODELS
    t = sub.add_parser("train", help="train a model on a dataset",
                       description="Train a model and write best.npz, history.json, curves.png "
                                   "and summary.json to --out.")
    t.add_argument("model", nargs="?", default="lenet5", choices=models, metavar="MODEL",
                   help=f"one of {', '.join(models)} (default: %(default)s); image models take "
                        f"digits, mnist, fashion_mnist, cifar10, shapes, the signal models take mnist1d, "
                        f"the text model synthetic_text")
    t.add_argument("--dataset", choices=DATASETS,
                   help=f"one of {', '.join(DATASETS)} (default: digits; for the 32x32 models "
                        "cifar10 where its files are present, else shapes; synthetic_text for "
                        "the text model)")
    t.add_argument("--epochs", type=int, help=f"default per dataset: {_per_dataset('epochs')}")
    t.add_argument("--batch-size", type=int,
                   help=f"default per dataset: {_per_dataset('batch_size')}")
    t.add_argument("--optimizer", choices=OPTIMIZERS,
                   help=f"one of {', '.join(OPTIMIZERS)}; default per dataset: "
                        f"{_per_dataset('optimizer')} (sgd with momentum 0.9)")
    t.add_argument("--lr", type=float, help=f"learning rate; default per dataset: "
                                            f"{_per_dataset('lr')}")
    t.add_argument("--weight-decay", type=float, default=0.0, help="(default: %(default)s)")
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help=DEVICE_HELP)
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the weights, the split and the shuffling (default: %(default)s)")
    t.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)
    t.add_argument("--out", metavar="DIR", help="output folder (default: runs/MODEL-DATASET)")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar; one line per epoch is still printed")
    t.add_argument("--no-augment", action="store_true",
                   help="no training-set augmentation (by default mnist1d's signals are shifted "
                        f"by up to {AUGMENT_SHIFT['mnist1d']} samples)")

    _add_threads(t)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a dataset's test split",
                       description="Test accuracy of a checkpoint written by 'gpuconv train'.")
    e.add_argument("checkpoint", help="a best.npz written by 'gpuconv train'")
    e.add_argument("--dataset", choices=DATASETS,
                   help=f"one of {', '.join(DATASETS)} (default: the one it was trained on)")
    e.add_argument("--batch-size", type=int, default=256, help="(default: %(default)s)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help=DEVICE_HELP)
    e.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)

    _add_threads(e)

    sub.add_parser("info", help="versions, devices and which kernel implementations run here")

    b = sub.add_parser("bench", help="time every kernel implementation against the references")
    b.add_argument("families", nargs="*", metavar="OP", default=["conv", "pool", "lstm"],
                   help="conv, pool, lstm, train, kmeans (default: conv pool lstm)")
    b.add_argument("--impl", action="append", default=[], help="only this impl (repeatable)")
    b.add_argument("--dtype", default="float32", choices=("float32", "tf32", "bfloat16", "float16"))
    b.add_argument("--suite", choices=("gpu", "cpu", "quick"),
                   help="default: gpu on a GPU, cpu otherwise, quick with --quick")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    b.add_argument("--json", help="write the report as JSON here")
    b.add_argument("--plot", help="write a PNG chart of the ratios here")
    b.add_argument("--markdown", help="write the tables as Markdown here (for bench/RESULTS.md)")
    b.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (seconds)")
    _add_threads(b)

    u = sub.add_parser("tune", help="time the implicit-GEMM conv configurations on this GPU "
                                    "and write the fastest to the tuning table")
    u.add_argument("--suite", default="gpu", choices=("gpu", "cpu", "quick"),
                   help="the conv bench suite whose shapes are tuned (default gpu)")
    u.add_argument("--mode", action="append", choices=("fp32", "tf32", "bf16", "fp16"),
                   help="precision mode (repeatable; default fp32)")
    u.add_argument("--shape", action="append", default=[], metavar="N,C,H,W,K,R,S,STRIDE,PAD",
                   help="a further convolution shape to tune (repeatable)")
    u.add_argument("--table", help="the JSON table to update (default: the package's)")
    u.add_argument("--quick", action="store_true", help="few timed runs per candidate")
    return p


def _positive(name: str, value) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"--{name} must be positive, got {value}")


def _load_dataset(name: str, root: str | None):
    """``(train, test)`` of dataset ``name``: from the cache (downloading once) without a
    root, else read from ``root`` only, which must exist and hold the files."""
    from . import data
    from .data.datasets import MissingDataError

    loader = getattr(data, name)
    if root is None:
        try:
            return loader()
        except data.DownloadError as exc:
            raise OSError(f"{str(exc).splitlines()[0]}; if this machine is offline, copy the "
                          "files into a folder and pass it as --data-root") from None
    if name in OFFLINE_DATASETS and name != "mnist1d":
        raise ValueError(f"--data-root does not apply to {name}, which is "
                         + ("bundled with scikit-learn" if name == "digits" else "generated"))
    if not Path(root).is_dir():
        raise FileNotFoundError(f"--data-root {root} is not a folder")
    try:
        return loader(root=root, download=False)
    except MissingDataError as exc:
        raise FileNotFoundError(
            f"{name}: {', '.join(exc.files)} not found in --data-root {root}; put the files "
            "there, or leave out --data-root to download them to the cache") from None


def _default_dataset(model: str, root: str | None) -> str:
    """The dataset ``gpuconv train MODEL`` uses without --dataset: CIFAR-10 for the models
    built for 32x32 colour images where its files are already here (never a download),
    else the generated ``shapes``; ``synthetic_text`` for text models; else ``digits``."""
    from . import data

    if model in CIFAR_MODELS:
        try:
            data.cifar10(root=root, download=False)
            return "cifar10"
        except FileNotFoundError:
            return "shapes"
    return "synthetic_text" if model in TEXT_MODELS else "digits"


# How each model takes its input: images (C, H, W) or sequences/signals (C, L).
IMAGE_MODELS = ("lenet5", "vgg_small", "resnet_small", "alexnet_small", "inception_small")
SIGNAL_MODELS = ("cnn1d", "lstm_classifier", "gru_classifier")
TEXT_MODELS = ("embedding_lstm",)
CIFAR_MODELS = ("alexnet_small", "inception_small")


def _model_kwargs(name: str, shape: tuple, vocab_size: int | None = None) -> dict:
    """The factory arguments that fit a model to one sample's shape (and a text dataset's
    vocabulary)."""
    if name in TEXT_MODELS:
        if len(shape) != 1 or vocab_size is None:
            raise ValueError(f"model {name} takes token sequences (T,); this dataset's samples "
                             f"have shape {shape}: use --dataset synthetic_text")
        return {"num_embeddings": vocab_size}
    if vocab_size is not None:
        raise ValueError(f"this dataset holds token sequences; model {name} does not take "
                         f"them: use one of {', '.join(TEXT_MODELS)}")
    if name in IMAGE_MODELS:
        if len(shape) != 3:
            raise ValueError(f"model {name} takes images (C, H, W); this dataset's samples have "
                             f"shape {shape}: use one of {', '.join(SIGNAL_MODELS)}")
        sized = name in ("lenet5", "alexnet_small")
        return {"in_channels": shape[0], **({"input_size": shape[-1]} if sized else {})}
    if name in SIGNAL_MODELS:
        if len(shape) != 2:
            raise ValueError(f"model {name} takes signals (C, L); this dataset's samples have "
                             f"shape {shape}: use one of {', '.join(IMAGE_MODELS)}")
        return {"input_length": shape[-1]} if name == "cnn1d" else {"input_size": shape[0]}
    raise ValueError(f"unknown model {name!r}; choose from "
                     f"{', '.join(IMAGE_MODELS + SIGNAL_MODELS + TEXT_MODELS)}")


def _build_model(name: str, sample_shape: tuple, num_classes: int, seed: int,
                 vocab_size: int | None = None):
    from . import models, nn

    kwargs = _model_kwargs(name, sample_shape, vocab_size)
    nn.manual_seed(seed)
    return models.get_model(name, num_classes=num_classes, **kwargs)


def _device(name: str) -> str:
    """``--device`` resolved to "cpu" or "cuda", with a hint that names the flag."""
    from . import backend

    if name == "cuda" and not backend.gpu_available():
        why = ("CuPy is not installed (pip install 'gpuconv[cuda13]' or [cuda12])"
               if backend.cupy_or_none() is None else "CuPy sees no CUDA device")
        raise RuntimeError(f"--device cuda: {why}; use --device cpu or --device auto")
    return backend.resolve_device(name)


def _make_optimizer(name: str, params, lr: float, weight_decay: float):
    from . import optim

    cls = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop,
           "adagrad": optim.Adagrad, "adadelta": optim.Adadelta}[name]
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        kwargs["momentum"] = 0.9
    return cls(params, **kwargs)


def _train(args) -> int:
    from . import backend, data, nn
    from .train import evaluate, fit, load_checkpoint

    if args.dataset is None:
        args.dataset = _default_dataset(args.model, args.data_root)
    defaults = DEFAULTS.get(args.dataset, FALLBACK)
    pick = lambda value, key: defaults[key] if value is None else value  # noqa: E731
    epochs, batch_size = pick(args.epochs, "epochs"), pick(args.batch_size, "batch_size")
    opt_name, lr = pick(args.optimizer, "optimizer"), pick(args.lr, "lr")
    for name, value in (("epochs", epochs), ("batch-size", batch_size), ("lr", lr)):
        _positive(name, value)
    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    device = _device(args.device)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}")

    train_set, test_set = _load_dataset(args.dataset, args.data_root)
    train_part, val_part = data.random_split(
        train_set, [1 - VALIDATION_FRACTION, VALIDATION_FRACTION], seed=args.seed)
    x0, _ = train_set[0]
    num_classes = int(train_set.y.max()) + 1
    vocab_size = getattr(train_set, "vocab_size", None)
    model = _build_model(args.model, tuple(x0.shape), num_classes, args.seed,
                         vocab_size).to(device)
    optimizer = _make_optimizer(opt_name, model.parameters(), lr, args.weight_decay)
    shift = 0 if args.no_augment else AUGMENT_SHIFT.get(args.dataset, 0)
    augment = data.RandomTranslation(shift, seed=args.seed) if shift else None
    loader = data.DataLoader(train_part, batch_size=batch_size, shuffle=True, seed=args.seed,
                             transform=augment, device=device)
    val_loader = data.DataLoader(val_part, batch_size=256, device=device)
    test_loader = data.DataLoader(test_set, batch_size=256, device=device)
    print(f"training {args.model} on {args.dataset} ({len(train_part)} train / {len(val_part)} "
          f"validation / {len(test_set)} test) on {device}: {epochs} epochs, batch {batch_size}, "
          f"{opt_name} lr {lr}" + (f", random shifts of up to {shift}" if shift else ""),
          flush=True)
    meta = {"model": args.model, "input_shape": list(x0.shape), "num_classes": num_classes,
            "dataset": args.dataset, "seed": args.seed,
            **({"vocab_size": vocab_size} if vocab_size is not None else {})}
    plot = _can_plot()
    if not plot:
        print("matplotlib is not installed, so there will be no curves.png "
              "(pip install 'gpuconv[train]')", flush=True)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loader, val_loader, epochs,
                  checkpoint=out / "best.npz", history_path=out / "history.json",
                  plot_path=out / "curves.png" if plot else None, checkpoint_meta=meta,
                  progress=not args.no_progress, verbose=True,
                  plot_title=f"{args.model} on {args.dataset}")
    load_checkpoint(out / "best.npz", model)
    test = evaluate(model, test_loader)
    summary = {**meta, "device": device, "epochs_run": len(history.train_loss),
               "best_epoch": history.best_epoch, "test_accuracy": test["accuracy"],
               "train_seconds": sum(history.seconds)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    written = ", ".join(["best.npz", "history.json"] + (["curves.png"] if plot else [])
                        + ["summary.json"])
    print(f"test accuracy {test['accuracy']:.4f} (best epoch {history.best_epoch}, "
          f"{sum(history.seconds):.1f} s of training); wrote {written} to {out}")
    return 0


def _can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


_TRAIN_META = ("model", "input_shape", "num_classes", "dataset", "seed")


def _eval(args) -> int:
    from . import backend, data
    from .train import CheckpointError, evaluate, load_checkpoint, read_checkpoint

    _positive("batch-size", args.batch_size)
    meta, _ = read_checkpoint(args.checkpoint)
    missing = [k for k in _TRAIN_META if k not in meta]
    if missing:
        raise CheckpointError(f"{args.checkpoint} is not a checkpoint written by 'gpuconv "
                              f"train': its metadata lacks {', '.join(missing)}")
    dataset = args.dataset or meta["dataset"]
    device = _device(args.device)
    _, test_set = _load_dataset(dataset, args.data_root)
    _check_model_fits_dataset(args.checkpoint, meta, dataset, test_set)
    model = _build_model(meta["model"], tuple(meta["input_shape"]), meta["num_classes"],
                         meta["seed"], meta.get("vocab_size"))
    load_checkpoint(args.checkpoint, model)
    model.to(device)
    test = evaluate(model, data.DataLoader(test_set, batch_size=args.batch_size, device=device))
    print(f"{meta['model']} on {dataset} test: accuracy {test['accuracy']:.4f} "
          f"({test['samples']} samples)")
    return 0


def _check_model_fits_dataset(path, meta: dict, dataset: str, test_set) -> None:
    """The checkpoint's model must take the dataset's samples and cover its classes."""
    x0, _ = test_set[0]
    shape, classes = tuple(meta["input_shape"]), int(test_set.y.max()) + 1
    if tuple(x0.shape) != shape or classes > meta["num_classes"]:
        raise ValueError(
            f"the model and the dataset do not match: {path} holds {meta['model']} trained on "
            f"{meta['dataset']} (samples of shape {shape}, {meta['num_classes']} classes), "
            f"but {dataset}'s samples have shape {tuple(x0.shape)} and {classes} classes")


def _info(args) -> int:
    import platform

    import numpy as np

    from . import __version__, backend, kernels

    print(f"gpuconv {__version__}, Python {platform.python_version()}, NumPy {np.__version__}")
    cp = backend.cupy_or_none()
    if cp is None:
        print("GPU: CuPy is not installed (pip install gpuconv[cuda13])")
    elif not backend.gpu_available():
        print(f"GPU: CuPy {cp.__version__} sees no CUDA device")
    else:
        from .kernels.cuda_c import compile_states, cuda_versions

        props = cp.cuda.runtime.getDeviceProperties(0)
        versions = cuda_versions()
        print(f"GPU: {props['name'].decode()} (compute capability {props['major']}.{props['minor']}), "
              f"CuPy {cp.__version__}, NVRTC {versions['nvrtc']}, CUDA runtime "
              f"{versions['runtime']}, driver {versions['driver']}")
        print("CUDA C sources (NVRTC): " + ", ".join(f"{name} {state}" for name, state
                                                     in compile_states().items()))
    from .kernels.cuda_c import conv_igemm
    devices = conv_igemm.load_table(str(conv_igemm.TABLE))
    gpu = props["name"].decode() if cp is not None and backend.gpu_available() else None
    tuned = (f"{len(devices.get(gpu, {}))} entries for {gpu}" if gpu else
             f"entries for {', '.join(devices) or 'no GPU yet'}")
    print(f"conv tuning table (cuda_igemm): {conv_igemm.TABLE} ({tuned}; other shapes: "
          "the heuristic)")
    print("kernel implementations (available here / registered):")
    for op in kernels.ops():
        impls = kernels.implementations(op)
        shown = ", ".join(i.name + ("" if i.is_available() else " (not here)") for i in impls)
        print(f"  {op:32s} {shown}")
    return 0


def _tune(args) -> int:
    from .benchmark import tune

    shapes = [tune.parse_shape(s) for s in args.shape]
    tune.run(args.suite, args.mode or ["fp32"], shapes, args.table, args.quick)
    return 0


def _bench(args) -> int:
    from . import benchmark

    _device(args.device)
    report = benchmark.run(args.families, impls=args.impl, dtype=args.dtype, suite=args.suite,
                           quick=args.quick, device=args.device, threads=args.threads)
    if args.json:
        benchmark.save_json(report, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        benchmark.plot(report, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        Path(args.markdown).write_text(benchmark.markdown(report))
        print(f"wrote {args.markdown}")
    wrong = [r for r in report["rows"] if not r["correct"]]
    for r in wrong:
        print(f"WRONG: {r['impl']} on {r['case']} {r['pass']}: relative error {r['rel_err']:.2e}",
              file=sys.stderr)
    return 1 if wrong else 0


def _available_cores() -> int:
    """The CPU cores this process may use (affinity and cgroup quota: the default threads)."""
    from .threads import available_cores

    return available_cores()


def _warn_about_threads(args) -> None:
    cores = _available_cores()
    if args.threads is not None and args.threads > cores:
        print(f"gpuconv {args.command}: warning: --threads {args.threads} is more than the "
              f"{cores} CPU core{'s' if cores > 1 else ''} this process may use; the threads "
              "will take turns on them, which is slower than one per core", file=sys.stderr)


# What each optional package is for, for the one-line error when it is missing.
EXTRAS = {"sklearn": "data", "mnist1d": "data", "tqdm": "train", "matplotlib": "train",
          "cupy": "cuda13"}


def _missing_package(exc: ImportError) -> str:
    """A one-line message for a missing optional package, naming the extra to install."""
    if "pip install" in str(exc):
        return str(exc)
    package = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(package)
    return (f"{exc}; pip install 'gpuconv[{extra}]'" if extra else
            f"{exc}; reinstall gpuconv (pip install -e .)")


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (gpuconv info | head -3): stop quietly, and keep Python from
        # complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by the signal


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("train", "eval", "bench"):
        _warn_about_threads(args)
        from .threads import default_threads, set_num_threads

        try:
            args.threads = default_threads() if args.threads is None else args.threads
            set_num_threads(args.threads)
        except ValueError as exc:
            print(f"gpuconv {args.command}: error: {exc}", file=sys.stderr)
            return 2
    handler = {"train": _train, "eval": _eval, "info": _info, "bench": _bench,
               "tune": _tune}[args.command]
    try:
        return handler(args)
    except ImportError as exc:
        print(f"gpuconv {args.command}: error: {_missing_package(exc)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, OSError,
            FloatingPointError, MemoryError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"gpuconv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpuconv {args.command}: interrupted", file=sys.stderr)
        return 130
