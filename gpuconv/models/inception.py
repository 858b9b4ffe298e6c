"""A small GoogLeNet: Inception blocks with 1x1 convolutions as channel reducers."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

from .. import nn

__all__ = ["inception_block", "inception_small"]


def _conv_unit(in_channels: int, out_channels: int, kernel_size: int,
               dtype: Any) -> nn.Sequential:
    """Convolution ('same' padding, no bias), BatchNorm, ReLU: torchvision's BasicConv2d."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                           bias=False, dtype=dtype)),
        ("bn", nn.BatchNorm2d(out_channels, dtype=dtype)),
        ("relu", nn.ReLU()),
    ]))


def inception_block(in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                    ch5x5: int, pool_proj: int, dtype: Any = None) -> nn.Concat:
    """GoogLeNet's Inception module (Szegedy et al. 2015, figure 2b), arguments as in its
    table 1: four branches over the same input, concatenated on channels.

    branch1: 1x1 conv (ch1x1); branch2: 1x1 conv to ch3x3red, then 3x3 (ch3x3); branch3:
    1x1 conv to ch5x5red, then 5x5 (ch5x5); branch4: 3x3/1 max pooling, then 1x1 conv
    (pool_proj). The 1x1 reducers keep the 3x3 and 5x5 convolutions cheap.
    (N, in_channels, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).
    """
    return nn.Concat(OrderedDict([
        ("branch1", _conv_unit(in_channels, ch1x1, 1, dtype)),
        ("branch2", nn.Sequential(_conv_unit(in_channels, ch3x3red, 1, dtype),
                                  _conv_unit(ch3x3red, ch3x3, 3, dtype))),
        ("branch3", nn.Sequential(_conv_unit(in_channels, ch5x5red, 1, dtype),
                                  _conv_unit(ch5x5red, ch5x5, 5, dtype))),
        ("branch4", nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                  _conv_unit(in_channels, pool_proj, 1, dtype))),
    ]), dim=1)


# GoogLeNet's inception (3a), (3b) and (4a) rows of table 1, channels divided by 4.
BLOCKS = ((16, 24, 32, 4, 8, 8), (32, 32, 48, 8, 24, 16), (48, 24, 52, 4, 12, 16))


def _out_channels(block: Sequence[int]) -> int:
    ch1x1, _, ch3x3, _, ch5x5, pool_proj = block
    return ch1x1 + ch3x3 + ch5x5 + pool_proj


def inception_small(num_classes: int = 10, in_channels: int = 3, stem_channels: int = 48,
                    blocks: Sequence[Sequence[int]] = BLOCKS, dtype: Any = None) -> nn.Sequential:
    """GoogLeNet for 32x32 images: a stem (3x3 convolution, BatchNorm, ReLU, 3x3/2 max
    pooling: 32 -> 16), Inception blocks (each a row ``(ch1x1, ch3x3red, ch3x3, ch5x5red,
    ch5x5, pool_proj)`` as in :func:`inception_block`) with a 3x3/2 max pooling after the
    second (16 -> 8), global average pooling and a linear classifier.

    input (N, in_channels, H, W), H and W >= 4 -> logits (N, num_classes). Children: stem,
    pool1, inception1, inception2, pool2, inception3, ..., pool, flatten, fc.
    """
    if not blocks or any(len(b) != 6 for b in blocks):
        raise ValueError(f"inception_small: blocks must be rows of 6 channel counts, "
                         f"got {blocks!r}")
    children: list = [("stem", _conv_unit(in_channels, stem_channels, 3, dtype)),
                      ("pool1", nn.MaxPool2d(3, stride=2, padding=1))]
    channels = stem_channels
    for i, block in enumerate(blocks):
        children.append((f"inception{i + 1}", inception_block(channels, *block, dtype=dtype)))
        channels = _out_channels(block)
        if i == 1:
            children.append(("pool2", nn.MaxPool2d(3, stride=2, padding=1)))
    children += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
                 ("fc", nn.Linear(channels, num_classes, dtype=dtype))]
    return nn.Sequential(OrderedDict(children))
