"""The generated datasets: ``shapes`` (images for the 32x32 CNNs when CIFAR-10 is absent)
and ``synthetic_text`` (token sequences with a known best accuracy for embedding_lstm)."""
import numpy as np
import pytest

from gpuconv import data
from gpuconv.data.synthetic import (KEYWORDS_PER_CLASS, LABEL_NOISE, SHAPE_CLASSES,
                                    SYNTHETIC_TEXT_BEST_ACCURACY, TEXT_CLASSES)


@pytest.fixture(scope="module")
def shapes_small():
    return data.shapes(train_size=600, test_size=200, seed=3)


@pytest.fixture(scope="module")
def text_small():
    return data.synthetic_text(train_size=4000, test_size=500, seed=5)


def test_shapes_are_32x32_colour_images_of_ten_balanced_classes(shapes_small):
    train, test = shapes_small
    assert train.x.shape == (600, 3, 32, 32) and test.x.shape == (200, 3, 32, 32)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert 0 <= train.x.min() and train.x.max() <= 1
    assert train.classes == SHAPE_CLASSES and len(SHAPE_CLASSES) == 10
    assert np.bincount(train.y, minlength=10).min() >= 30


def test_each_shape_stands_out_from_its_background(shapes_small):
    # The shape is drawn lighter than the background: the brightest pixels are far above
    # the median (the background) in every image, by more than the noise could make.
    train, _ = shapes_small
    brightness = train.x.mean(axis=1).reshape(len(train.x), -1)
    gap = np.percentile(brightness, 99, axis=1) - np.median(brightness, axis=1)
    assert gap.min() > 0.2


def test_shapes_are_the_same_for_a_seed_and_train_does_not_depend_on_test_size():
    a, _ = data.shapes(train_size=50, test_size=10, seed=1)
    b, _ = data.shapes(train_size=50, test_size=20, seed=1)
    c, _ = data.shapes(train_size=50, test_size=10, seed=2)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def _first_keyword_class(row: np.ndarray) -> int:
    keywords = row[(row >= 1) & (row <= len(TEXT_CLASSES) * KEYWORDS_PER_CLASS)]
    return int((keywords[0] - 1) // KEYWORDS_PER_CLASS)


def test_text_sequences_are_left_padded_token_ids(text_small):
    train, test = text_small
    assert train.x.shape == (4000, 32) and test.x.shape == (500, 32)
    assert train.x.dtype == np.int64 and train.vocab_size == 64 and train.padding_idx == 0
    assert 0 <= train.x.min() and train.x.max() < 64
    padded = train.x == 0
    # once a sequence starts it has no padding: the padding mask is non-increasing
    assert not np.any(padded[:, 1:] & ~padded[:, :-1])
    assert padded.sum(axis=1).max() <= 32 - 8


def test_text_label_is_the_class_of_the_first_keyword_before_noise(text_small):
    train, _ = text_small
    keywords = (train.x >= 1) & (train.x <= 16)
    assert keywords.sum(axis=1).min() >= 1 and keywords.sum(axis=1).max() <= 4
    np.testing.assert_array_equal(train.y_clean, [_first_keyword_class(r) for r in train.x])


def test_text_labels_carry_the_stated_noise_so_the_best_accuracy_is_known(text_small):
    train, _ = text_small
    kept = train.y == train.y_clean
    assert abs(kept.mean() - SYNTHETIC_TEXT_BEST_ACCURACY) < 0.02
    assert SYNTHETIC_TEXT_BEST_ACCURACY == 1 - LABEL_NOISE
    assert set(np.unique(train.y)) == {0, 1, 2, 3}


@pytest.mark.parametrize("loader", [data.shapes, data.synthetic_text])
@pytest.mark.parametrize("kwargs, match", [(dict(train_size=0), "train_size must be a positive"),
                                           (dict(test_size=2.5), "test_size must be a positive")])
def test_sizes_must_be_positive_integers(loader, kwargs, match):
    with pytest.raises(ValueError, match=match):
        loader(**kwargs)
