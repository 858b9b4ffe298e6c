"""A small VGG-style network."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

from .. import nn

__all__ = ["vgg_small"]


def vgg_small(num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128),
              batch_norm: bool = True, dtype: Any = None) -> nn.Sequential:
    """VGG-style CNN: per stage, two 3x3 convolutions (padding 1; BatchNorm when
    ``batch_norm``, then ReLU) and a 2x2 max pool; then global average pooling and a linear
    classifier.

    input (N, in_channels, H, W), H and W >= 2**len(widths) (32x32 CIFAR, 28x28 MNIST)
    -> logits (N, num_classes). Children: features (a Sequential), pool, flatten, classifier.
    """
    layers: list = []
    channels = in_channels
    for width in widths:
        for _ in range(2):
            layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm,
                                    dtype=dtype))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width, dtype=dtype))
            layers.append(nn.ReLU())
            channels = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(*layers)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("classifier", nn.Linear(channels, num_classes, dtype=dtype)),
    ]))
