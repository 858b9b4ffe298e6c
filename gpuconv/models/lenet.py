"""LeNet-5."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .. import nn

__all__ = ["lenet5"]


def _conv_pool_size(size: int, kernel: int, padding: int) -> int:
    """Spatial size after a stride-1 convolution and a 2x2 max pool."""
    return (size + 2 * padding - kernel + 1) // 2


def lenet5(num_classes: int = 10, input_size: int = 28, in_channels: int = 1,
           dtype: Any = None) -> nn.Sequential:
    """LeNet-5: conv(6)-pool-conv(16)-pool-fc120-fc84-fc(num_classes), with ReLU and 2x2 max
    pooling (the modern form of LeCun et al. 1998's tanh and average subsampling).

    input (N, in_channels, input_size, input_size) -> logits (N, num_classes).
    - input_size >= 32: the classic 5x5 convolutions without padding (32x32 -> 16*5*5 = 400
      features);
    - 16 <= input_size < 32: the first convolution is padded by 2 (28x28 MNIST -> 400 features,
      exactly as the classic net on 32x32);
    - 4 <= input_size < 16 (the 8x8 scikit-learn digits): 3x3 convolutions padded by 1, so that
      8x8 -> pool 4x4 -> pool 2x2 -> 16*2*2 = 64 features.
    Children are named conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1, relu3, fc2,
    relu4, fc3.
    """
    if input_size < 4:
        raise ValueError(f"lenet5: input_size must be at least 4, got {input_size}")
    if input_size >= 16:
        kernel, pad1, pad2 = 5, (2 if input_size < 32 else 0), 0
    else:
        kernel, pad1, pad2 = 3, 1, 1
    side = _conv_pool_size(_conv_pool_size(input_size, kernel, pad1), kernel, pad2)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 6, kernel, padding=pad1, dtype=dtype)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, kernel, padding=pad2, dtype=dtype)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * side * side, 120, dtype=dtype)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84, dtype=dtype)),
        ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, num_classes, dtype=dtype)),
    ]))
