"""The 1-d CNN of the MNIST-1D paper."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .. import nn

__all__ = ["cnn1d"]


def _conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def cnn1d(num_classes: int = 10, channels: int = 25, input_length: int = 40,
          dtype: Any = None) -> nn.Sequential:
    """ConvBase of Greydanus' MNIST-1D (models.py): three Conv1d layers of ``channels``
    channels, stride 2, padding 1, kernels 5, 3, 3, each followed by ReLU, then a linear layer
    on the flattened features (25 * 5 = 125 for the 40-sample signals).

    input (N, 1, input_length) -> logits (N, num_classes). Children: conv1, relu1, conv2,
    relu2, conv3, relu3, flatten, linear.
    """
    length = input_length
    for kernel in (5, 3, 3):
        length = _conv_length(length, kernel, 2, 1)
    if length < 1:
        raise ValueError(f"cnn1d: input_length {input_length} is too short for three "
                         "stride-2 convolutions")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv1d(1, channels, 5, stride=2, padding=1, dtype=dtype)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv1d(channels, channels, 3, stride=2, padding=1, dtype=dtype)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv1d(channels, channels, 3, stride=2, padding=1, dtype=dtype)),
        ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("linear", nn.Linear(channels * length, num_classes, dtype=dtype)),
    ]))
