"""Datasets generated offline from a seed: ``shapes`` (32x32 colour images of ten shapes)
and ``synthetic_text`` (token sequences whose class is a known rule, with a known best
accuracy). Both are made with NumPy alone in about a second, the same on every machine.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .dataset import ArrayDataset

__all__ = ["shapes", "synthetic_text", "SequenceDataset", "SHAPE_CLASSES",
           "SYNTHETIC_TEXT_BEST_ACCURACY"]

# --------------------------------------------------------------------------- shapes

SHAPE_CLASSES = ("circle", "ring", "triangle", "square", "pentagon", "star", "cross",
                 "crescent", "bar", "half-disc")
SHAPE_SIZE = 32
# Each pixel's coverage is the mean of SUPERSAMPLE x SUPERSAMPLE point tests (anti-aliasing).
SUPERSAMPLE = 3
# Shape radius, centre margin and how far the shape colour lies from the background's.
RADIUS_RANGE = (7.0, 12.0)
CENTRE_RANGE = (11.0, 21.0)
DARK = 0.45
NOISE_STD = 0.03


def _polygon(u, v, sides: int):
    """Inside the regular polygon of circumradius 1 with a vertex on the +u axis: the
    intersection of its ``sides`` edge half-planes."""
    inside = np.ones(u.shape, bool)
    apothem = np.cos(np.pi / sides)
    for k in range(sides):
        normal = (2 * k + 1) * np.pi / sides
        inside &= u * np.cos(normal) + v * np.sin(normal) <= apothem
    return inside


def _inside(kind: int, u, v):
    """Whether the points (u, v), in the shape's own frame (radius 1, rotated), lie inside
    shape ``kind`` (an index into SHAPE_CLASSES)."""
    r2 = u * u + v * v
    name = SHAPE_CLASSES[kind]
    if name == "circle":
        return r2 <= 1
    if name == "ring":
        return (r2 <= 1) & (r2 >= 0.55 ** 2)
    if name in ("triangle", "square", "pentagon"):
        return _polygon(u, v, {"triangle": 3, "square": 4, "pentagon": 5}[name])
    if name == "star":
        # r <= 0.6 + 0.4 cos(5 theta), with cos(5 theta) = T5(cos theta) (Chebyshev).
        r = np.sqrt(r2)
        c = u / np.maximum(r, 1e-6)
        return r <= 0.6 + 0.4 * (16 * c ** 5 - 20 * c ** 3 + 5 * c)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1) & (av <= 0.3)) | ((av <= 1) & (au <= 0.3))
    if name == "crescent":
        return (r2 <= 1) & ((u - 0.45) ** 2 + v * v > 0.8 ** 2)
    if name == "bar":
        return (np.abs(u) <= 1) & (np.abs(v) <= 0.28)
    return (r2 <= 1) & (v >= -0.15)  # half-disc


def _coverage(labels: np.ndarray, centre, radius, angle) -> np.ndarray:
    """(N, 32, 32) fraction of each pixel inside its image's shape."""
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    fine = (np.arange(SHAPE_SIZE)[:, None] + offsets[None, :]).reshape(-1).astype(np.float32)
    cover = np.empty((len(labels), SHAPE_SIZE, SHAPE_SIZE), np.float32)
    for kind in range(len(SHAPE_CLASSES)):
        for chunk in np.array_split(np.flatnonzero(labels == kind), max(1, len(labels) // 256)):
            if not chunk.size:
                continue
            dx = (fine[None, None, :] - centre[chunk, 0, None, None]) / radius[chunk, None, None]
            dy = (fine[None, :, None] - centre[chunk, 1, None, None]) / radius[chunk, None, None]
            c, s = np.cos(angle[chunk])[:, None, None], np.sin(angle[chunk])[:, None, None]
            inside = _inside(kind, c * dx + s * dy, c * dy - s * dx)
            fine_shape = (chunk.size, SHAPE_SIZE, SUPERSAMPLE, SHAPE_SIZE, SUPERSAMPLE)
            hits = inside.reshape(fine_shape).sum(axis=(2, 4), dtype=np.uint8)
            cover[chunk] = hits * np.float32(1 / SUPERSAMPLE ** 2)
    return cover


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images (N, 3, 32, 32) float32 in [0, 1] of the shapes ``labels``."""
    n = len(labels)
    centre = rng.uniform(*CENTRE_RANGE, (n, 2)).astype(np.float32)
    radius = rng.uniform(*RADIUS_RANGE, n).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    background = rng.uniform(0, DARK, (n, 3))
    foreground = rng.uniform(1 - DARK, 1, (n, 3))
    # The background's brightness ramps across the image in a random direction.
    ramp_angle, ramp = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 0.25, n)
    grid = (np.arange(SHAPE_SIZE, dtype=np.float32) / (SHAPE_SIZE - 1) - 0.5)
    shade = ((ramp * np.cos(ramp_angle)).astype(np.float32)[:, None, None] * grid[None, None, :]
             + (ramp * np.sin(ramp_angle)).astype(np.float32)[:, None, None] * grid[None, :, None])
    cover = _coverage(labels, centre, radius, angle)[:, None]
    bg, fg = (c.astype(np.float32)[:, :, None, None] for c in (background, foreground))
    images = rng.standard_normal((n, 3, SHAPE_SIZE, SHAPE_SIZE), dtype=np.float32)
    images *= NOISE_STD
    images += (bg + shade[:, None]) * (1 - cover) + fg * cover
    return np.clip(images, 0, 1, out=images)


def _generated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(SHAPE_CLASSES), n)
    return _render(labels, rng), labels.astype(np.int64)


def _sizes(name: str, train_size, test_size) -> None:
    for arg, value in (("train_size", train_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")


def shapes(train_size: int = 8000, test_size: int = 2000,
           seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Ten shapes drawn in colour on 32x32 images: an offline stand-in for CIFAR-10.

    Each image holds one of :data:`SHAPE_CLASSES` at a random position, size (radius 5.5
    to 11 pixels) and rotation, in a random colour at least 0.35 from a random background
    colour, over a brightness ramp, anti-aliased, with Gaussian pixel noise (std 0.04).
    x ``(N, 3, 32, 32)`` float32 in [0, 1], y int64 in 0..9. The train and test images are
    drawn from independent streams of ``seed``, so neither depends on the other's size.
    """
    _sizes("shapes", train_size, test_size)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return (ArrayDataset(*_generated(train_size, train_rng), SHAPE_CLASSES),
            ArrayDataset(*_generated(test_size, test_rng), SHAPE_CLASSES))


# --------------------------------------------------------------------------- text

TEXT_CLASSES = ("A", "B", "C", "D")
PADDING_TOKEN = 0
KEYWORDS_PER_CLASS = 4
VOCAB_SIZE = 64
LENGTH_RANGE = (8, 32)          # tokens before padding; sequences are left-padded to 32
KEYWORD_COUNT_RANGE = (1, 4)    # keywords per sequence, each of a random class
LABEL_NOISE = 0.1
# The rule's accuracy on noisy labels: a label is kept with probability 1 - LABEL_NOISE
# and otherwise replaced by another class, so nothing can predict it better than the rule.
SYNTHETIC_TEXT_BEST_ACCURACY = 1 - LABEL_NOISE


class SequenceDataset(ArrayDataset):
    """Token sequences ``x`` (N, T) int64 with labels ``y``; ``vocab_size`` tokens, of which
    ``padding_idx`` pads, and ``y_clean``, the labels the task's rule gives before label
    noise (``mean(y == y_clean)`` is the best accuracy anything can reach on this split)."""

    def __init__(self, x, y, y_clean, vocab_size: int, padding_idx: int,
                 classes: Sequence[str] | None = None):
        super().__init__(x, y, classes)
        self.y_clean = np.asarray(y_clean)
        self.vocab_size, self.padding_idx = int(vocab_size), int(padding_idx)


def _keyword(cls: np.ndarray, which: np.ndarray) -> np.ndarray:
    """The token of keyword ``which`` of class ``cls``: tokens 1..16 are the keywords."""
    return 1 + cls * KEYWORDS_PER_CLASS + which


def _sequences(n: int, rng: np.random.Generator) -> SequenceDataset:
    max_len = LENGTH_RANGE[1]
    first_filler = 1 + len(TEXT_CLASSES) * KEYWORDS_PER_CLASS
    x = rng.integers(first_filler, VOCAB_SIZE, (n, max_len))
    lengths = rng.integers(LENGTH_RANGE[0], max_len + 1, n)
    x[np.arange(max_len)[None, :] < (max_len - lengths)[:, None]] = PADDING_TOKEN
    counts = rng.integers(KEYWORD_COUNT_RANGE[0], KEYWORD_COUNT_RANGE[1] + 1, n)
    y_clean = np.empty(n, np.int64)
    for i in range(n):
        start = max_len - lengths[i]
        positions = np.sort(rng.choice(lengths[i], counts[i], replace=False)) + start
        classes = rng.integers(0, len(TEXT_CLASSES), counts[i])
        x[i, positions] = _keyword(classes, rng.integers(0, KEYWORDS_PER_CLASS, counts[i]))
        y_clean[i] = classes[0]
    flip = rng.random(n) < LABEL_NOISE
    other = (y_clean + rng.integers(1, len(TEXT_CLASSES), n)) % len(TEXT_CLASSES)
    y = np.where(flip, other, y_clean)
    return SequenceDataset(x.astype(np.int64), y, y_clean, VOCAB_SIZE, PADDING_TOKEN,
                           TEXT_CLASSES)


def synthetic_text(train_size: int = 8000, test_size: int = 2000,
                   seed: int = 0) -> tuple[SequenceDataset, SequenceDataset]:
    """A sequence-classification task with a known best accuracy (for ``embedding_lstm``).

    Each sequence holds 8 to 32 tokens, left-padded with token 0 to length 32. Tokens 17..63
    are filler; tokens 1..16 are keywords, four per class of ``A``, ``B``, ``C``, ``D``; each
    sequence holds 1 to 4 keywords of random classes at random places. Its class is the class
    of its FIRST keyword (order matters: counting keywords is not enough). Then 10% of the
    labels are replaced by another class at random, so the best possible accuracy is 90%
    (:data:`SYNTHETIC_TEXT_BEST_ACCURACY`; ``y_clean`` holds the labels before the noise).
    x ``(N, 32)`` int64, y int64 in 0..3.
    """
    _sizes("synthetic_text", train_size, test_size)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return _sequences(train_size, train_rng), _sequences(test_size, test_rng)
