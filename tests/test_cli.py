"""The command line as a new user meets it: usage and help, damaged and foreign checkpoints,
a checkpoint evaluated on a dataset it does not fit, --data-root that only reads, missing
optional packages, --no-progress, a closed output pipe, --threads, file permissions.

Every failure is one line on stderr with a non-zero status and no traceback."""
from __future__ import annotations

import gzip
import json
import os
import stat
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from gpuconv import __version__
from gpuconv.cli import main
from gpuconv.train import CheckpointError, load_checkpoint

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def run(capsys, *args) -> tuple[int, str, str]:
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "warning" not in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of LeNet-5 trained for one epoch on digits (by the command line)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- usage

def test_gpuconv_alone_prints_the_usage(capsys):
    status, out, _ = run(capsys)
    assert status == 2
    assert out.startswith("usage: gpuconv") and "train" in out and "eval" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"gpuconv {__version__}"


def test_train_help_lists_the_models_the_datasets_and_every_default(capsys):
    from gpuconv.cli import DATASETS, IMAGE_MODELS, SIGNAL_MODELS, TEXT_MODELS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in IMAGE_MODELS + SIGNAL_MODELS + TEXT_MODELS + DATASETS:
        assert name in text, name
    for default in ("(default: lenet5)", "(default: digits;", "else shapes", "digits: 30", "mnist1d: 60",
                    "others: 10", "digits: 32", "digits: 0.002", "(default: 0.0)",
                    "(default: auto)", "(default: 0)", "runs/MODEL-DATASET"):
        assert default in text, default


# --------------------------------------------------------------------------- checkpoints

def _damage(kind: str, good, path) -> None:
    """Write a file of ``kind`` at ``path`` (``good`` is a valid checkpoint)."""
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.with_suffix(".npy").rename(path)
    elif kind == "bad_crc":
        with zipfile.ZipFile(good) as archive:
            info = archive.infolist()[0]
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
        path.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    elif kind == "no_meta":
        np.savez(path, a=np.zeros(2))
    elif kind == "missing_entry":
        with np.load(good) as f:
            arrays = {k: f[k] for k in f.files if k != "model/conv1.weight"}
        np.savez(path, **arrays)
    elif kind == "pickled":
        with np.load(good) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["model/conv1.weight"] = np.array([object()], dtype=object)
        np.savez(path, **arrays)
    elif kind == "meta_not_json":
        with np.load(good) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["meta"] = np.array("{not json")
        np.savez(path, **arrays)


DAMAGED = {"empty": "the file is empty", "truncated": "truncated",
           "random_bytes": "not a complete .npz", "npy": "single NumPy array",
           "bad_crc": "fails its CRC check", "no_meta": "no 'meta' entry",
           "missing_entry": "missing keys conv1.weight", "pickled": "pickled",
           "meta_not_json": "not JSON"}


@pytest.mark.parametrize("kind", DAMAGED)
def test_eval_of_a_damaged_or_foreign_file_is_one_line_naming_the_file(kind, trained, tmp_path,
                                                                       capsys):
    path = tmp_path / f"{kind}.npz"
    _damage(kind, trained / "best.npz", path)
    status, _, err = run(capsys, "eval", str(path))
    assert_one_line_error(status, err, str(path), DAMAGED[kind])
    assert "allow_pickle" not in err


@pytest.mark.parametrize("kind", DAMAGED)
def test_loading_a_damaged_or_foreign_file_is_a_checkpoint_error(kind, trained, tmp_path):
    from gpuconv import models

    path = tmp_path / f"{kind}.npz"
    _damage(kind, trained / "best.npz", path)
    with pytest.raises(CheckpointError, match=DAMAGED[kind]) as error:
        load_checkpoint(path, models.lenet5(num_classes=10, input_size=8))
    assert str(path) in str(error.value) and "allow_pickle" not in str(error.value)


def test_eval_on_a_dataset_the_model_cannot_take_says_they_do_not_match(trained, capsys):
    status, _, err = run(capsys, "eval", str(trained / "best.npz"), "--dataset", "mnist1d")
    assert_one_line_error(status, err, "the model and the dataset do not match",
                          "(1, 8, 8)", "(1, 40)")


# --------------------------------------------------------------------------- data

def _write_idx(path, array: np.ndarray) -> None:
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def _tree(folder) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_data_root_reads_local_files_and_writes_nothing_there(tmp_path, capsys):
    root = tmp_path / "mnist_files"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in zip(IDX_FILES, (60, 60, 20, 20)):
        shape = (n, 28, 28) if "images" in name else (n,)
        _write_idx(root / f"{name}.gz", rng.integers(0, 10 if "labels" in name else 256, shape,
                                                      dtype=np.uint8))
    before = _tree(root)
    status, out, err = run(capsys, "train", "--dataset", "mnist", "--data-root", str(root),
                           "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"))
    assert status == 0, err
    assert "54 train / 6 validation / 20 test" in out
    assert _tree(root) == before


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10", "mnist1d"])
def test_data_root_without_the_files_names_the_flag_and_creates_nothing(dataset, tmp_path,
                                                                        capsys):
    root = tmp_path / "empty"
    root.mkdir()
    status, _, err = run(capsys, "train", "--dataset", dataset, "--data-root", str(root),
                         "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, f"not found in --data-root {root}")
    assert "root=" not in err and "download=True" not in err
    assert _tree(root) == [] and not (tmp_path / "run").exists()


def test_a_data_root_that_does_not_exist_is_not_created(tmp_path, capsys):
    root = tmp_path / "nowhere"
    status, _, err = run(capsys, "train", "--dataset", "mnist", "--data-root", str(root))
    assert_one_line_error(status, err, f"--data-root {root} is not a folder")
    assert not root.exists()


# --------------------------------------------------------------------------- extras

def test_without_scikit_learn_training_digits_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    status, _, err = run(capsys, "train", "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, "scikit-learn", "pip install 'gpuconv[data]'")


def test_without_matplotlib_training_writes_everything_but_the_plot(monkeypatch, tmp_path,
                                                                    capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = run(capsys, "train", "--epochs", "1", "--no-progress", "--out",
                           str(tmp_path / "run"))
    assert status == 0, err
    assert "matplotlib is not installed" in out and "gpuconv[train]" in out
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.npz", "history.json", "summary.json"]


# --------------------------------------------------------------------------- output

def test_no_progress_keeps_one_line_per_epoch(tmp_path, capsys):
    status, out, err = run(capsys, "train", "--epochs", "2", "--no-progress", "--out",
                           str(tmp_path / "run"))
    assert status == 0, err
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == [
        "epoch 1/2", "epoch 2/2"]
    assert "\r" not in err  # no progress bar


def test_a_closed_output_pipe_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    result = subprocess.run([sys.executable, "-m", "gpuconv", "info"], stdout=write_end,
                            stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_more_threads_than_cores_warns(capsys, monkeypatch):
    import gpuconv.cli as cli

    monkeypatch.setattr(cli, "_available_cores", lambda: 2)
    status, _, err = run(capsys, "eval", "nothing.npz", "--threads", "3")
    assert "warning: --threads 3 is more than the 2 CPU cores" in err
    assert status == 1  # and the command then runs (here: no such checkpoint)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_files_get_the_permissions_of_the_umask(umask, tmp_path, capsys):
    old = os.umask(umask)
    try:
        status, _, err = run(capsys, "train", "--epochs", "1", "--no-progress", "--out",
                             str(tmp_path / "run"))
    finally:
        os.umask(old)
    assert status == 0, err
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert modes == dict.fromkeys(["best.npz", "history.json", "curves.png", "summary.json"],
                                  0o666 & ~umask)



@pytest.mark.parametrize("command", ["train", "bench"])
def test_device_cuda_without_a_gpu_names_the_flag(command, capsys):
    from gpuconv import backend

    if backend.gpu_available():
        pytest.skip("a GPU is present")
    status, _, err = run(capsys, command, "--device", "cuda")
    assert_one_line_error(status, err, "--device cuda:", "--device cpu")
    assert "device='cuda'" not in err
