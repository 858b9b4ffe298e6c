"""Datasets, batching, augmentation and splits (NumPy; batches can move to the GPU).

    from gpuconv import data
    train, test = data.mnist()                      # (N, 1, 28, 28) float32, int64 labels
    aug = data.Compose([data.RandomCrop(28, padding=2, seed=0), data.Normalize(0.1307, 0.3081)])
    loader = data.DataLoader(train, batch_size=128, shuffle=True, seed=0, transform=aug)
    for x, y in loader:
        ...

Importing this package loads only NumPy: scikit-learn and mnist1d are imported by the
loaders that need them, CuPy only when a loader moves batches to ``device="cuda"``.
"""
from .dataset import ArrayDataset, Dataset, Subset, get_batch
from .datasets import cifar10, digits, fashion_mnist, mnist, mnist1d, read_cifar_binary, read_idx
from .download import DownloadError, cache_dir, download_file, sha256_of
from .loader import DataLoader
from .split import random_split, split_lengths, train_val_test_split
from .synthetic import SequenceDataset, shapes, synthetic_text
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, RandomTranslation

__all__ = [
    "Dataset", "ArrayDataset", "Subset", "get_batch", "DataLoader",
    "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "RandomTranslation",
    "random_split", "train_val_test_split", "split_lengths",
    "digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "read_idx", "read_cifar_binary",
    "shapes", "synthetic_text", "SequenceDataset",
    "cache_dir", "download_file", "sha256_of", "DownloadError",
]
