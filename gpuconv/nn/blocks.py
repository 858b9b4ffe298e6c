"""Residual blocks."""
from __future__ import annotations

from typing import Any

from .activation import ReLU
from .conv import Conv2d
from .module import Module, Sequential
from .norm import BatchNorm2d

__all__ = ["BasicBlock"]


class BasicBlock(Module):
    """The two-convolution residual block of ResNet-18/34 and the CIFAR ResNets:

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions (no bias,
    conv1 strided). The shortcut is the identity (an empty Sequential) when the shape is
    kept, else a strided 1x1 convolution and BatchNorm (``shortcut.0``, ``shortcut.1``).
    (N, in_planes, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dtype: Any = None):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, bias=False, dtype=dtype)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        if stride != 1 or in_planes != planes:
            self.shortcut = Sequential(
                Conv2d(in_planes, planes, 1, stride=stride, bias=False, dtype=dtype),
                BatchNorm2d(planes, dtype=dtype))
        else:
            self.shortcut = Sequential()
        self.relu2 = ReLU()

    def forward(self, input):
        out = self.relu1(self.bn1(self.conv1(input)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(input))

    def backward(self, grad_output):
        grad = self.relu2.backward(grad_output)
        grad_main = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(grad)))))
        return grad_main + self.shortcut.backward(grad)
