"""gpuconv.data: file readers, verified downloads, DataLoader, transforms, splits, datasets.

The readers run on small files written here in the real formats; no test touches the
network (urlopen is replaced where a download is exercised).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from gpuconv import backend, data
from gpuconv.data import datasets as dsets
from gpuconv.data import download

# --------------------------------------------------------------------------- file writers

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write(path, payload: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_mnist(n_train=5, n_test=3, seed=0) -> dict:
    """The four MNIST arrays (28x28 uint8 images, labels 0..9), keyed by file stem."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    return arrays


def cifar_bytes(labels: np.ndarray, images: np.ndarray) -> bytes:
    records = np.concatenate([labels[:, None], images.reshape(len(labels), -1)], axis=1)
    return records.astype(np.uint8).tobytes()


def fake_cifar(folder, seed=0) -> dict:
    """Two records per batch file, written to ``folder``; returns {file: (labels, images)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    content = {}
    for name in dsets.CIFAR_TRAIN_FILES + dsets.CIFAR_TEST_FILES:
        labels = rng.integers(0, 10, 2, dtype=np.uint8)
        images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        write(folder / name, cifar_bytes(labels, images))
        content[name] = (labels, images)
    return content


@pytest.fixture
def offline(monkeypatch):
    """Every urlopen fails as it does without a network; returns the URLs asked for."""
    asked = []

    def refuse(url, timeout=None):
        asked.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return asked


@pytest.fixture
def serve(monkeypatch):
    """urlopen answers from a dict {url: bytes}; other URLs fail. Returns (dict, asked)."""
    files, asked = {}, []

    def answer(url, timeout=None):
        asked.append(url)
        if url not in files:
            raise urllib.error.URLError("not served")
        return io.BytesIO(files[url])

    monkeypatch.setattr(urllib.request, "urlopen", answer)
    return files, asked


# --------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_round_trips_uint8_images(tmp_path, gz):
    a = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    out = data.read_idx(write(tmp_path / "x", idx_bytes(a), gz))
    assert out.dtype == np.uint8 and np.array_equal(out, a)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_decodes_big_endian_types_to_native(tmp_path, dtype):
    a = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    out = data.read_idx(write(tmp_path / "x", idx_bytes(a)))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and np.array_equal(out, a)


GOOD_IDX = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize("payload, message", [
    (b"", "not an IDX file"),
    (b"\x01" + GOOD_IDX[1:], "not an IDX file"),
    (GOOD_IDX[:2] + b"\x0a" + GOOD_IDX[3:], "unknown IDX type code 0x0a"),
    (GOOD_IDX[:3] + b"\x00", "0 dimensions"),
    (GOOD_IDX[:7], "truncated IDX header"),
    (GOOD_IDX[:-1], "holds 23 bytes"),
    (GOOD_IDX + b"\x00", "holds 25 bytes"),
], ids=["empty", "magic", "type-code", "no-dims", "short-header", "short-payload", "extra-bytes"])
def test_read_idx_rejects_corrupt_file(tmp_path, payload, message):
    path = write(tmp_path / "bad-idx", payload)
    with pytest.raises(ValueError, match=message) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD_IDX)[:-6])
    with pytest.raises(ValueError, match="corrupt gzip"):
        data.read_idx(path)


# --------------------------------------------------------------------------- MNIST files

def write_mnist(root, arrays: dict, gz_stems=()):
    root.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        gz = stem in gz_stems
        write(root / (stem + ".gz" if gz else stem), idx_bytes(a), gz)


def test_mnist_reads_a_local_root_without_downloading(tmp_path, offline):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, gz_stems=MNIST_STEMS[:2])
    train, test = data.mnist(root=tmp_path)
    assert offline == []
    assert train.x.shape == (5, 1, 28, 28) and test.x.shape == (3, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    np.testing.assert_array_equal(train.x[:, 0] * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.y, arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_names_its_classes(tmp_path):
    write_mnist(tmp_path, fake_mnist())
    train, _ = data.fashion_mnist(root=tmp_path, download=False)
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10


def test_mnist_without_download_names_the_missing_file(tmp_path):
    arrays = fake_mnist()
    del arrays["t10k-labels-idx1-ubyte"]
    write_mnist(tmp_path, arrays)
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"):
        data.mnist(root=tmp_path, download=False)


def test_mnist_rejects_image_and_label_counts_that_differ(tmp_path):
    arrays = fake_mnist()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:-1]
    write_mnist(tmp_path, arrays)
    with pytest.raises(ValueError, match="holds 5 images but .* holds 4 labels"):
        data.mnist(root=tmp_path, download=False)


def test_mnist_rejects_labels_out_of_range(tmp_path):
    arrays = fake_mnist()
    arrays["t10k-labels-idx1-ubyte"][0] = 10
    write_mnist(tmp_path, arrays)
    with pytest.raises(ValueError, match="label 10 is out of range for 10 classes"):
        data.mnist(root=tmp_path, download=False)


def test_mnist_downloads_missing_files_into_the_cache_and_verifies_them(
        tmp_path, monkeypatch, serve):
    files, asked = serve
    monkeypatch.setenv("GPUCONV_DATA", str(tmp_path))
    arrays = fake_mnist()
    for stem, a in arrays.items():
        payload = gzip.compress(idx_bytes(a))
        files[dsets.MNIST_MIRRORS[0] + stem + ".gz"] = payload
        monkeypatch.setitem(download.SHA256, f"mnist/{stem}.gz",
                            hashlib.sha256(payload).hexdigest())
    train, test = data.mnist()
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        s + ".gz" for s in MNIST_STEMS)
    assert len(asked) == 4
    np.testing.assert_array_equal(train.y, arrays["train-labels-idx1-ubyte"])


@pytest.mark.parametrize("loader", [data.mnist, data.fashion_mnist])
def test_idx_loaders_check_every_download_against_its_own_known_digest(
        tmp_path, monkeypatch, loader):
    arrays, digests = fake_mnist(), []

    def fake_download(urls, dest, sha256=None):
        digests.append(sha256)
        return write(dest, idx_bytes(arrays[dest.name.removesuffix(".gz")]), gz=True)

    monkeypatch.setattr(dsets, "download_file", fake_download)
    loader(root=tmp_path)
    assert len(set(digests)) == 4 and set(digests) <= set(download.SHA256.values())


def test_known_digests_are_sha256_hex():
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in download.SHA256.values())


# --------------------------------------------------------------------------- CIFAR-10

def test_read_cifar_binary_decodes_label_and_rgb_planes(tmp_path):
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    images[0, 0], images[0, 1], images[0, 2] = 10, 20, 30
    images[1, :, 5, 7] = (1, 2, 3)
    path = write(tmp_path / "b.bin", cifar_bytes(np.array([3, 9], dtype=np.uint8), images))
    x, y = data.read_cifar_binary([path, path])
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [3, 9, 3, 9]
    np.testing.assert_array_equal(x[:2], images)


@pytest.mark.parametrize("payload, message", [
    (b"", "0 bytes is not a whole number"),
    (bytes(3073 + 100), "3173 bytes is not a whole number of 3073-byte"),
    (bytes([10]) + bytes(3072), "label 10 is out of range"),
], ids=["empty", "partial-record", "label"])
def test_read_cifar_binary_rejects_corrupt_file(tmp_path, payload, message):
    with pytest.raises(ValueError, match=message):
        data.read_cifar_binary([write(tmp_path / "bad.bin", payload)])


@pytest.mark.parametrize("sub", ["", dsets.CIFAR_FOLDER], ids=["root", "subfolder"])
def test_cifar10_reads_batch_files_from_root(tmp_path, offline, sub):
    content = fake_cifar(tmp_path / sub)
    train, test = data.cifar10(root=tmp_path)
    assert offline == []
    assert train.x.shape == (10, 3, 32, 32) and test.x.shape == (2, 3, 32, 32)
    assert train.x.dtype == np.float32 and 0 <= train.x.min() and train.x.max() <= 1
    np.testing.assert_array_equal(test.x * 255, content["test_batch.bin"][1])
    np.testing.assert_array_equal(train.y[2:4], content["data_batch_2.bin"][0])
    assert train.classes[0] == "airplane"


def fake_cifar_archive(path, src) -> dict:
    """The official archive's layout: batch files under cifar-10-batches-bin/."""
    content = fake_cifar(src / dsets.CIFAR_FOLDER)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / dsets.CIFAR_FOLDER, arcname=dsets.CIFAR_FOLDER)
    return content


def test_cifar10_extracts_a_local_archive_and_keeps_it(tmp_path, offline):
    root = tmp_path / "root"
    content = fake_cifar_archive(root / dsets.CIFAR_ARCHIVE, tmp_path / "src")
    _, test = data.cifar10(root=root)
    assert offline == []
    np.testing.assert_array_equal(test.y, content["test_batch.bin"][0])
    assert (root / dsets.CIFAR_FOLDER / "data_batch_5.bin").is_file()
    assert (root / dsets.CIFAR_ARCHIVE).is_file()


def test_cifar10_downloads_the_verified_archive_and_deletes_it_after_extraction(
        tmp_path, monkeypatch):
    digests = []

    def fake_download(urls, dest, sha256=None):
        digests.append(sha256)
        fake_cifar_archive(dest, tmp_path / "src")
        return dest

    monkeypatch.setattr(dsets, "download_file", fake_download)
    train, _ = data.cifar10(root=tmp_path / "root")
    assert digests == [download.SHA256["cifar10/cifar-10-binary.tar.gz"]]
    assert len(train) == 10 and not (tmp_path / "root" / dsets.CIFAR_ARCHIVE).exists()


def test_cifar10_rejects_a_corrupt_archive(tmp_path):
    write(tmp_path / dsets.CIFAR_ARCHIVE, b"not a tar archive")
    with pytest.raises(ValueError, match="cannot read the CIFAR-10 archive"):
        data.cifar10(root=tmp_path, download=False)


# --------------------------------------------------------------------------- downloads

def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCONV_DATA", str(tmp_path / "here"))
    assert data.cache_dir() == tmp_path / "here"
    monkeypatch.delenv("GPUCONV_DATA")
    assert data.cache_dir().parts[-2:] == (".cache", "gpuconv")


def test_download_writes_a_file_whose_digest_matches(tmp_path, serve):
    files, _ = serve
    files["https://a/f.gz"] = b"payload"
    path = data.download_file(["https://a/f.gz"], tmp_path / "f.gz",
                              hashlib.sha256(b"payload").hexdigest())
    assert path.read_bytes() == b"payload"


def test_download_rejects_a_sha256_mismatch_and_leaves_nothing(tmp_path, serve):
    files, _ = serve
    files["https://a/f.gz"] = b"tampered"
    with pytest.raises(ValueError, match="SHA-256 mismatch for f.gz"):
        data.download_file(["https://a/f.gz"], tmp_path / "f.gz", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_tries_the_next_mirror(tmp_path, serve):
    files, asked = serve
    files["https://b/f.gz"] = b"payload"
    data.download_file(["https://a/f.gz", "https://b/f.gz"], tmp_path / "f.gz")
    assert asked == ["https://a/f.gz", "https://b/f.gz"]


def test_offline_download_says_which_file_where_and_how_to_use_root(tmp_path, offline):
    with pytest.raises(data.DownloadError) as info:
        data.mnist(root=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert all(m + "train-images-idx3-ubyte.gz" in message for m in dsets.MNIST_MIRRORS)
    assert "root=" in message
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- DataLoader

def numbered(n: int) -> data.ArrayDataset:
    """x[i] is an image filled with i, y[i] = i, so a batch shows which samples it holds."""
    return data.ArrayDataset(np.arange(n, dtype=np.float32)[:, None, None, None]
                             * np.ones((1, 1, 2, 2), np.float32), np.arange(n))


class PlainDataset:
    """A dataset with only __len__ and __getitem__ (no get_batch)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((1, 2, 2), i, np.float32), i


def labels_of(loader) -> list:
    return [y.tolist() for _, y in loader]


def test_loader_batches_in_order_with_a_smaller_last_batch():
    assert labels_of(data.DataLoader(numbered(7), batch_size=3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_loader_drop_last_leaves_out_the_short_batch():
    loader = data.DataLoader(numbered(7), batch_size=3, drop_last=True)
    assert labels_of(loader) == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("n, batch_size, drop_last, expected", [
    (7, 3, False, 3), (7, 3, True, 2), (6, 3, False, 2), (6, 3, True, 2), (2, 5, True, 0),
    (0, 4, False, 0), (1, 1, False, 1)])
def test_loader_len_counts_the_batches_it_yields(n, batch_size, drop_last, expected):
    loader = data.DataLoader(numbered(n), batch_size, drop_last=drop_last)
    assert len(loader) == expected == len(list(loader))


def test_loader_batches_pair_inputs_with_their_labels():
    for x, y in data.DataLoader(numbered(10), batch_size=4, shuffle=True, seed=0):
        assert x.shape == (len(y), 1, 2, 2) and np.array_equal(x[:, 0, 0, 0], y)


def test_loader_shuffle_visits_every_sample_once_per_epoch():
    loader = data.DataLoader(numbered(10), batch_size=4, shuffle=True, seed=0)
    for _ in range(2):
        assert sorted(sum(labels_of(loader), [])) == list(range(10))


def test_loader_shuffle_is_reproducible_from_the_seed_and_new_each_epoch():
    a = data.DataLoader(numbered(50), batch_size=50, shuffle=True, seed=3)
    b = data.DataLoader(numbered(50), batch_size=50, shuffle=True, seed=3)
    epochs_a = [labels_of(a) for _ in range(3)]
    assert epochs_a == [labels_of(b) for _ in range(3)]
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    c = data.DataLoader(numbered(50), batch_size=50, shuffle=True, seed=4)
    assert labels_of(c) != epochs_a[0]


def test_loader_epoch_can_be_set_to_resume_the_sequence():
    a = data.DataLoader(numbered(20), batch_size=20, shuffle=True, seed=1)
    first, second = labels_of(a), labels_of(a)
    b = data.DataLoader(numbered(20), batch_size=20, shuffle=True, seed=1)
    b.epoch = 1
    assert labels_of(b) == second != first


def test_loader_stacks_samples_of_a_plain_dataset_like_an_array_dataset():
    plain = [(x.tolist(), y.tolist()) for x, y in data.DataLoader(PlainDataset(5), 2)]
    arrays = [(x.tolist(), y.tolist()) for x, y in data.DataLoader(numbered(5), 2)]
    assert plain == arrays


def test_loader_gathers_a_subset_through_its_parent():
    subset = data.Subset(numbered(10), [9, 2, 5])
    assert labels_of(data.DataLoader(subset, batch_size=2)) == [[9, 2], [5]]


def test_loader_applies_the_transform_to_each_batch():
    loader = data.DataLoader(numbered(5), batch_size=2, transform=lambda x: x + 100)
    assert [x[:, 0, 0, 0].tolist() for x, _ in loader] == [[100, 101], [102, 103], [104]]


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_loader_rejects_a_batch_size_that_is_not_a_positive_int(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        data.DataLoader(numbered(3), batch_size)


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present")
def test_loader_on_cuda_without_a_gpu_raises_a_clear_error():
    with pytest.raises(RuntimeError, match="device='cuda' was requested but"):
        data.DataLoader(numbered(3), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs an NVIDIA GPU with CuPy")
def test_loader_on_cuda_yields_cupy_batches():
    x, y = next(iter(data.DataLoader(numbered(5), batch_size=2, device="cuda")))
    assert backend.device_of(x) == backend.device_of(y) == "cuda"
    assert backend.to_numpy(y).tolist() == [0, 1]


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs an NVIDIA GPU with CuPy")
def test_loader_on_cuda_copies_from_pinned_memory_without_waiting_and_keeps_each_batch():
    from support import device_counts

    loader = data.DataLoader(numbered(7), batch_size=2, shuffle=True, seed=3, device="cuda")
    on_cpu = data.DataLoader(numbered(7), batch_size=2, shuffle=True, seed=3)
    for _ in range(2):  # the second epoch reuses the pinned buffers
        want = list(on_cpu)
        with device_counts(forbid_sync=True) as counts:
            batches = list(loader)  # every batch kept: none may be overwritten by a later one
        if counts is not None:
            assert counts["sync"] == 0 and counts["d2h"] == 0, counts
            assert counts["h2d"] == counts["h2d_pinned"] == 2 * len(want), counts
        for (x, y), (want_x, want_y) in zip(batches, want, strict=True):
            np.testing.assert_array_equal(backend.to_numpy(x), want_x)
            np.testing.assert_array_equal(backend.to_numpy(y), want_y)


# --------------------------------------------------------------------------- datasets

def test_array_dataset_rejects_arrays_of_different_lengths():
    with pytest.raises(ValueError, match=r"same length, got shapes \(3, 2\) and \(4,\)"):
        data.ArrayDataset(np.zeros((3, 2)), np.zeros(4))


def test_subset_rejects_indices_out_of_range():
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        data.Subset(numbered(3), [0, 3])


# --------------------------------------------------------------------------- transforms

def images(n=6, c=2, h=5, w=5, seed=0) -> np.ndarray:
    """Positive, all-distinct pixel values, so zero always means padding."""
    return np.random.default_rng(seed).permutation(n * c * h * w).reshape(n, c, h, w) \
        .astype(np.float32) + 1


def test_normalize_subtracts_and_divides_per_channel():
    x = images(c=3)
    out = data.Normalize([1.0, 2.0, 3.0], [2.0, 4.0, 8.0])(x)
    assert out.dtype == np.float32
    for c, (m, s) in enumerate([(1, 2), (2, 4), (3, 8)]):
        np.testing.assert_allclose(out[:, c], (x[:, c] - m) / s, rtol=1e-6)


def test_normalize_rejects_a_channel_count_mismatch():
    with pytest.raises(ValueError, match="mean has 3 values but the batch has 2 channels"):
        data.Normalize([0.0, 0.0, 0.0], 1.0)(images(c=2))


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan")])
def test_normalize_rejects_a_std_that_is_not_positive(std):
    with pytest.raises(ValueError, match="std finite and positive"):
        data.Normalize(0.0, std)


def crop_offsets(x, out, padding):
    """For each output image, every offset of the padded input at which it is found."""
    h, w = out.shape[2:]
    padded = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    return [[(i, j) for i in range(padded.shape[2] - h + 1) for j in range(padded.shape[3] - w + 1)
             if np.array_equal(padded[n, :, i:i + h, j:j + w], out[n])] for n in range(len(x))]


def test_random_crop_takes_a_window_of_the_padded_image_at_an_offset_in_range():
    x = images(n=40)
    out = data.RandomCrop(4, padding=1, seed=0)(x)
    assert out.shape == (40, 2, 4, 4) and out.dtype == x.dtype
    found = crop_offsets(x, out, 1)
    assert all(len(f) == 1 for f in found)  # offsets lie in [0, 5 + 2 - 4]
    assert len({f[0] for f in found}) > 1  # each image draws its own offset


def test_random_crop_full_size_without_padding_is_the_identity():
    x = images()
    np.testing.assert_array_equal(data.RandomCrop(5, seed=0)(x), x)


def test_random_crop_is_reproducible_from_the_seed():
    x = images(n=20)
    np.testing.assert_array_equal(data.RandomCrop((3, 4), 2, seed=7)(x),
                                  data.RandomCrop((3, 4), 2, seed=np.random.default_rng(7))(x))


def test_random_crop_rejects_a_size_larger_than_the_padded_input():
    with pytest.raises(ValueError, match=r"size \(8, 8\) is larger than the padded input"):
        data.RandomCrop(8, padding=1)(images())


def test_random_flip_mirrors_exactly_the_images_it_picks():
    x = images(n=50)
    out = data.RandomHorizontalFlip(0.5, seed=0)(x)
    flipped = np.array([np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert np.all(flipped ^ kept) and 0 < flipped.sum() < 50


@pytest.mark.parametrize("p, n_flipped", [(0.0, 0), (1.0, 8)])
def test_random_flip_with_p_0_or_1_flips_none_or_all(p, n_flipped):
    x = images(n=8)
    out = data.RandomHorizontalFlip(p, seed=0)(x)
    assert sum(np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x)) == n_flipped


def shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[:, i, j] = img[:, i - dy, j - dx] inside the image, else 0."""
    out = np.zeros_like(img)
    h, w = img.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_random_translation_shifts_each_image_within_range_with_zero_fill():
    x = images(n=40)
    out = data.RandomTranslation(2, seed=0)(x)
    shifts = [[(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(o, shift(xi, dy, dx))] for o, xi in zip(out, x)]
    assert all(len(s) == 1 for s in shifts)
    assert len({s[0] for s in shifts}) > 1


def test_random_translation_moves_signals_along_their_one_axis():
    x = np.arange(1, 4 * 9 + 1, dtype=np.float32).reshape(4, 1, 9)
    out = data.RandomTranslation(3, seed=1)(x)
    for o, xi in zip(out, x):
        assert any(np.array_equal(o, np.roll(np.pad(xi, [(0, 0), (3, 3)]), s, axis=1)[:, 3:-3])
                   for s in range(-3, 4))


def test_compose_applies_transforms_in_order():
    t = data.Compose([lambda x: x + 1, lambda x: x * 10])
    np.testing.assert_array_equal(t(np.zeros((1, 1, 1, 1))), np.full((1, 1, 1, 1), 10.0))


def test_random_transforms_reject_a_batch_without_channels():
    with pytest.raises(ValueError, match=r"RandomCrop: expects a batch \(N, C, \*spatial\)"):
        data.RandomCrop(2)(np.zeros((4, 5)))


# --------------------------------------------------------------------------- splits

def test_random_split_parts_are_disjoint_and_cover_everything():
    parts = data.random_split(numbered(23), [10, 8, 5], seed=0)
    idx = np.concatenate([p.indices for p in parts])
    assert [len(p) for p in parts] == [10, 8, 5] and sorted(idx.tolist()) == list(range(23))


def test_random_split_is_reproducible_from_the_seed():
    a = [p.indices.tolist() for p in data.random_split(numbered(30), [0.5, 0.5], seed=2)]
    b = [p.indices.tolist() for p in data.random_split(numbered(30), [0.5, 0.5], seed=2)]
    c = [p.indices.tolist() for p in data.random_split(numbered(30), [0.5, 0.5], seed=3)]
    assert a == b != c


@pytest.mark.parametrize("n, fractions, sizes", [
    (10, (0.5, 0.3, 0.2), [5, 3, 2]), (11, (1 / 3, 1 / 3, 1 / 3), [4, 4, 3]),
    (3, (0.9, 0.1), [3, 0])])
def test_split_fractions_round_down_and_hand_out_the_rest_in_order(n, fractions, sizes):
    assert data.split_lengths(n, fractions) == sizes


@pytest.mark.parametrize("lengths, error, message", [
    ([5, 4], ValueError, "must be non-negative and add up to the 10 samples"),
    ([0.5, 0.4], ValueError, "add up to 1"),
    ([5, 0.5], TypeError, "all integers .* or all floats"),
])
def test_split_rejects_lengths_that_do_not_cover_the_data(lengths, error, message):
    with pytest.raises(error, match=message):
        data.random_split(numbered(10), lengths)


def test_random_split_of_arrays_keeps_inputs_and_labels_aligned():
    x, y = np.arange(20) * 10, np.arange(20)
    parts = data.random_split((x, y), [0.7, 0.3], seed=0)
    assert all(np.array_equal(px, py * 10) for px, py in parts)
    assert sorted(np.concatenate([py for _, py in parts]).tolist()) == list(range(20))


def test_train_val_test_split_gives_three_parts():
    train, val, test = data.train_val_test_split(numbered(20), seed=0)
    assert (len(train), len(val), len(test)) == (16, 2, 2)


# --------------------------------------------------------------------------- bundled / generated

def test_digits_gives_the_documented_split_of_8x8_images():
    train, test = data.digits()
    assert train.x.shape == (1437, 1, 8, 8) and test.x.shape == (360, 1, 8, 8)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert train.x.min() == 0 and train.x.max() == 1
    assert set(np.unique(train.y)) == set(range(10))
    np.testing.assert_array_equal(data.digits()[1].y, test.y)


@pytest.fixture(scope="module")
def mnist1d_run(tmp_path_factory):
    """mnist1d() generated once into a cache under GPUCONV_DATA (a few seconds), with the
    global NumPy random stream seeded before and sampled after."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCONV_DATA", str(cache))
        np.random.seed(1234)
        sets = data.mnist1d()
        draw_after = np.random.random()
    np.random.seed(1234)
    return cache, sets, draw_after, np.random.random()


@pytest.mark.slow
def test_mnist1d_has_the_standard_split_of_signals(mnist1d_run):
    _, (train, test), _, _ = mnist1d_run
    assert train.x.shape == (4000, 1, 40) and test.x.shape == (1000, 1, 40)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert set(np.unique(train.y)) == set(range(10))


@pytest.mark.slow
def test_mnist1d_loads_its_cache_instead_of_generating_again(mnist1d_run, monkeypatch):
    cache, (train, _), _, _ = mnist1d_run
    assert (cache / "mnist1d" / dsets.MNIST1D_FILE).is_file()
    monkeypatch.setattr(dsets, "_generate_mnist1d", lambda: pytest.fail("generated again"))
    again, _ = data.mnist1d(root=cache / "mnist1d")
    np.testing.assert_array_equal(again.x, train.x)


@pytest.mark.slow
def test_mnist1d_leaves_the_global_random_stream_alone(mnist1d_run):
    _, _, draw_after, expected = mnist1d_run
    assert draw_after == expected


def test_mnist1d_regenerates_an_unreadable_cache(tmp_path, monkeypatch):
    fake = {"x_train": np.zeros((4, 1, 40), np.float32), "y_train": np.arange(4),
            "x_test": np.ones((2, 1, 40), np.float32), "y_test": np.arange(2)}
    monkeypatch.setattr(dsets, "_generate_mnist1d", lambda: fake)
    write(tmp_path / dsets.MNIST1D_FILE, b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        _, test = data.mnist1d(root=tmp_path)
    assert test.x.shape == (2, 1, 40)
    with np.load(tmp_path / dsets.MNIST1D_FILE, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["x_test"], fake["x_test"])
