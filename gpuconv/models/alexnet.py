"""AlexNet's structure, scaled to 32x32 inputs."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

from .. import _checks as C, init, nn

__all__ = ["alexnet_small"]

# Krizhevsky et al. 2012, section 3.3: n = 5 channels, alpha = 1e-4, beta = 0.75, k = 2.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def _pool() -> nn.MaxPool2d:
    # Overlapping pooling (section 3.4): 3x3 windows at stride 2. Padding 1 halves the
    # resolution exactly (16 -> 8 -> 4 -> 2 for a 32x32 input) instead of shaving a row.
    return nn.MaxPool2d(3, stride=2, padding=1)


def alexnet_small(num_classes: int = 10, in_channels: int = 3,
                  widths: Sequence[int] = (32, 64, 96, 96, 64), hidden: int = 256,
                  dropout: float = 0.5, input_size: int = 32, dtype: Any = None) -> nn.Sequential:
    """AlexNet (Krizhevsky et al. 2012) for 32x32 images, the original's widths / 4 or so.

    features: a large first kernel with stride (5x5, stride 2, padding 2: 32 -> 16), ReLU,
    local response normalisation and overlapping 3x3/2 max pooling (-> 8); a 5x5
    convolution, ReLU, LRN, pooling (-> 4); three 3x3 convolutions with ReLU and a last
    pooling (-> 2). classifier: dropout, linear, ReLU, dropout, linear, ReLU, linear.

    input (N, in_channels, input_size, input_size) -> logits (N, num_classes); each stride
    halves the side rounding up, so the last map is ceil(input_size / 16) wide.
    Children: features, flatten, classifier.
    """
    if len(widths) != 5:
        raise ValueError(f"alexnet_small: widths must give the 5 convolutions' channels, "
                         f"got {tuple(widths)}")
    side = math.ceil(C.positive_int("alexnet_small", "input_size", input_size) / 16)
    c1, c2, c3, c4, c5 = widths
    lrn = lambda: nn.LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)  # noqa: E731
    features = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, c1, 5, stride=2, padding=2, dtype=dtype)),
        ("relu1", nn.ReLU()), ("norm1", lrn()), ("pool1", _pool()),
        ("conv2", nn.Conv2d(c1, c2, 5, padding=2, dtype=dtype)),
        ("relu2", nn.ReLU()), ("norm2", lrn()), ("pool2", _pool()),
        ("conv3", nn.Conv2d(c2, c3, 3, padding=1, dtype=dtype)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3, padding=1, dtype=dtype)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(c4, c5, 3, padding=1, dtype=dtype)), ("relu5", nn.ReLU()),
        ("pool5", _pool()),
    ]))
    classifier = nn.Sequential(OrderedDict([
        ("drop1", nn.Dropout(dropout)), ("fc1", nn.Linear(c5 * side * side, hidden, dtype=dtype)),
        ("relu1", nn.ReLU()),
        ("drop2", nn.Dropout(dropout)), ("fc2", nn.Linear(hidden, hidden, dtype=dtype)),
        ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(hidden, num_classes, dtype=dtype)),
    ]))
    model = nn.Sequential(OrderedDict([("features", features), ("flatten", nn.Flatten()),
                                       ("classifier", classifier)]))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            # He et al. 2015's initialisation: with torch's default (variance 1 / (3 fan_in))
            # the signal shrinks about 4x per layer of this 8-layer ReLU stack without
            # normalisation, and training sat at chance for epochs.
            init.kaiming_normal_(m.weight, nonlinearity="relu")
            init.zeros_(m.bias)
    return model
