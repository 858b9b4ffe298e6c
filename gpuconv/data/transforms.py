"""Batch transforms: each takes a whole NumPy batch ``(N, C, *spatial)`` and returns one.

Random transforms draw one choice per sample (each image its own crop offset, flip or
shift) from their own generator, vectorised over the batch. Give them ``seed=`` (an int
or a ``numpy.random.Generator``) for reproducible results. The output dtype is the input
dtype.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "RandomTranslation"]

Seed = int | np.random.Generator | None


def _generator(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _batch(name: str, x: Any, min_ndim: int = 3) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expects a NumPy batch (transforms run on the CPU before "
                        f"the batch moves), got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expects a batch (N, C, *spatial) with at least {min_ndim} "
                         f"dimensions, got shape {x.shape}")
    return x


def _per_axis(name: str, arg: str, value: int | Sequence[int], nd: int, minimum: int) -> tuple:
    values = (value,) * nd if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != nd or any(not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                                or v < minimum for v in values):
        raise ValueError(f"{name}: {arg} must be an integer >= {minimum} or {nd} of them, "
                         f"got {value!r}")
    return tuple(int(v) for v in values)


def _crop(x: np.ndarray, offsets: np.ndarray, size: tuple) -> np.ndarray:
    """Window of ``size`` at ``offsets[n]`` (one row of spatial offsets per sample)."""
    axes = tuple(range(2, x.ndim))
    windows = sliding_window_view(x, size, axis=axes)  # (N, C, *positions, *size)
    index = (np.arange(len(x)), slice(None)) + tuple(offsets.T)
    return windows[index]


def _pad(x: np.ndarray, padding: tuple) -> np.ndarray:
    if not any(padding):
        return x
    return np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[np.ndarray], np.ndarray]]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {t!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel ``c`` of a batch ``(N, C, *spatial)``.

    mean, std: one number for all channels or one per channel; std must be positive.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(f"Normalize: mean and std must be numbers or 1-D sequences, got "
                             f"shapes {self.mean.shape} and {self.std.shape}")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std))
                and np.all(self.std > 0)):
            raise ValueError(f"Normalize: mean must be finite and std finite and positive, "
                             f"got mean={mean!r}, std={std!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _batch("Normalize", x, min_ndim=2)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"Normalize: expects a floating-point batch, got {x.dtype}")
        channels = x.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, channels):
                raise ValueError(f"Normalize: {name} has {len(v)} values but the batch has "
                                 f"{channels} channels (shape {x.shape})")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = self.mean.astype(x.dtype).reshape(shape)
        std = self.std.astype(x.dtype).reshape(shape)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Zero-pad each spatial side by ``padding``, then cut a ``size`` window at a random
    offset drawn per image (uniform over every position that fits).

    x: ``(N, C, *spatial)`` (``(N, C, H, W)`` images or ``(N, C, L)`` signals); size and
    padding: one integer for every spatial axis or one per axis. Returns ``(N, C, *size)``.
    """

    def __init__(self, size: int | Sequence[int], padding: int | Sequence[int] = 0,
                 seed: Seed = None):
        self.size, self.padding = size, padding
        self.rng = _generator(seed)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _batch("RandomCrop", x)
        nd = x.ndim - 2
        size = _per_axis("RandomCrop", "size", self.size, nd, 1)
        padding = _per_axis("RandomCrop", "padding", self.padding, nd, 0)
        padded = tuple(s + 2 * p for s, p in zip(x.shape[2:], padding))
        if any(c > s for c, s in zip(size, padded)):
            raise ValueError(f"RandomCrop: size {size} is larger than the padded input "
                             f"{padded} (input shape {x.shape}, padding {padding})")
        offsets = self.rng.integers(0, np.subtract(padded, size) + 1, size=(len(x), nd))
        return _crop(_pad(x, padding), offsets, size)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size!r}, padding={self.padding!r})"


class RandomTranslation:
    """Shift each image by a random whole number of pixels in ``[-max_shift, max_shift]``
    per spatial axis (drawn per image), filling the uncovered border with zeros.

    x: ``(N, C, *spatial)``; max_shift: one integer for every spatial axis or one per axis.
    ``out[n, c, i] = x[n, c, i - shift[n]]`` where that index is inside, else 0.
    """

    def __init__(self, max_shift: int | Sequence[int], seed: Seed = None):
        self.max_shift = max_shift
        self.rng = _generator(seed)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _batch("RandomTranslation", x)
        nd = x.ndim - 2
        m = _per_axis("RandomTranslation", "max_shift", self.max_shift, nd, 0)
        shifts = self.rng.integers(-np.asarray(m), np.asarray(m) + 1, size=(len(x), nd))
        # Shifting by s is cropping the m-padded input at offset m - s.
        return _crop(_pad(x, m), np.asarray(m) - shifts, x.shape[2:])

    def __repr__(self) -> str:
        return f"RandomTranslation(max_shift={self.max_shift!r})"


class RandomHorizontalFlip:
    """Reverse the last axis of each image with probability ``p`` (drawn per image)."""

    def __init__(self, p: float = 0.5, seed: Seed = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = _generator(seed)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _batch("RandomHorizontalFlip", x)
        flip = self.rng.random(len(x)) < self.p
        return np.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), x[..., ::-1], x)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
