"""A small CIFAR-style ResNet."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

from .. import nn

__all__ = ["resnet_small"]


def resnet_small(num_classes: int = 10, in_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64), num_blocks: Sequence[int] = (1, 1, 1),
                 dtype: Any = None) -> nn.Sequential:
    """CIFAR-style ResNet (He et al. 2016, section 4.2) built from :class:`gpuconv.nn.BasicBlock`:
    a 3x3 convolution (widths[0]) with BatchNorm and ReLU, one stage per width (the first
    keeps the resolution, each later one halves it with a stride-2 block), global average
    pooling and a linear classifier. The defaults give ResNet-8; num_blocks=(3, 3, 3) is
    ResNet-20.

    input (N, in_channels, H, W) -> logits (N, num_classes). Children: conv1, bn1, relu,
    layer1, layer2, ..., pool, flatten, fc.
    """
    if len(widths) != len(num_blocks) or not widths:
        raise ValueError(f"resnet_small: widths {tuple(widths)} and num_blocks "
                         f"{tuple(num_blocks)} must be non-empty and of the same length")
    children: list = [
        ("conv1", nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False, dtype=dtype)),
        ("bn1", nn.BatchNorm2d(widths[0], dtype=dtype)),
        ("relu", nn.ReLU()),
    ]
    planes = widths[0]
    for stage, (width, blocks) in enumerate(zip(widths, num_blocks)):
        stride = 1 if stage == 0 else 2
        stage_blocks = []
        for b in range(blocks):
            stage_blocks.append(nn.BasicBlock(planes, width, stride if b == 0 else 1, dtype=dtype))
            planes = width
        children.append((f"layer{stage + 1}", nn.Sequential(*stage_blocks)))
    children += [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(planes, num_classes, dtype=dtype)),
    ]
    return nn.Sequential(OrderedDict(children))
