"""Residual blocks."""
from __future__ import annotations

from typing import Any

from .. import backend, functional as F
from .activation import ReLU
from .conv import Conv2d
from .module import Module, Sequential, _children_independent, accumulate_grad
from .norm import BatchNorm2d

__all__ = ["BasicBlock"]


class BasicBlock(Module):
    """The two-convolution residual block of ResNet-18/34 and the CIFAR ResNets:

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions (no bias,
    conv1 strided). The shortcut is the identity (an empty Sequential) when the shape is
    kept, else a strided 1x1 convolution and BatchNorm (``shortcut.0``, ``shortcut.1``).
    (N, in_planes, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride)).

    Fused passes, each exact (the same function and gradients as the layers one by one):

    - training (batch statistics): each batch norm, the residual add and the ReLU after it
      run as one pass (:meth:`BatchNorm2d.forward_relu`), so the normalised values and the
      sum never go through memory; the backward is the layers' own.
    - evaluation with running statistics (``fold_batch_norm``; by default on GPU arrays):
      each batch norm is an affine map per channel that the convolution's epilogue applies
      (:func:`~gpuconv.functional.batch_norm_fold`, then
      :func:`~gpuconv.functional.conv2d_bias_act` with ``scale``/``bias``), with the ReLU,
      and in the second convolution the shortcut's sum too: one convolution launch per
      batch norm (two, or three with the projection) and one per-channel launch per batch
      norm for its map, no intermediate but the first convolution's output (identity
      block in float32 under the emulator: 4 launches against the layers' 6; projection:
      6 against 8). Its backward gives the
      input gradient (saliency, feature inversion) and every parameter's gradient from the
      fused forward's saved arrays, with no recomputation (:meth:`_conv_bn_backward`).

    Neither fusion applies when ``relu1`` or ``relu2`` has been replaced by another module:
    the block then runs its layers one by one.
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
        # Evaluation-mode folding of the batch norms into the convolutions: None on GPU
        # arrays (where the fused epilogue saves passes over memory), True on any array,
        # False never.
        self.fold_batch_norm: bool | None = None

    @property
    def samples_independent(self) -> bool:
        """As its layers (the residual sum is per sample): with batch norm in eval mode."""
        return _children_independent(self)

    def forward(self, input):
        if not (isinstance(self.relu1, ReLU) and isinstance(self.relu2, ReLU)):
            self._save(False)  # the fused passes compute a ReLU: run the layers instead
            out = self.relu1(self.bn1(self.conv1(input)))
            return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(input))
        if self._folds(input):
            return self._forward_folded(input)
        self._save(False)
        h = self.bn1.forward_relu(self.conv1(input), self.relu1)
        residual = self.shortcut(input)
        return self.bn2.forward_relu(self.conv2(h), self.relu2, residual=residual)

    def backward(self, grad_output):
        if self._saved()[0]:
            return self._backward_folded(grad_output)
        grad = self.relu2.backward(grad_output)
        grad_main = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(grad)))))
        return grad_main + self.shortcut.backward(grad)

    # ------------------------------------------------------------------ evaluation fold

    def _pairs(self) -> list | None:
        """The (convolution, batch norm) pairs, main path first then the projection's; None
        when the shortcut is neither the identity nor a Conv2d + BatchNorm2d."""
        pairs = [(self.conv1, self.bn1), (self.conv2, self.bn2)]
        shortcut = list(self.shortcut)
        if not shortcut:
            return pairs
        if len(shortcut) == 2 and isinstance(shortcut[0], Conv2d) and \
                isinstance(shortcut[1], BatchNorm2d):
            return pairs + [tuple(shortcut)]
        return None

    def _folds(self, input) -> bool:
        if self.fold_batch_norm is False or (self.fold_batch_norm is None and
                                             backend.device_of(input) != "cuda"):
            return False
        pairs = self._pairs()
        return pairs is not None and all(conv.bias is None and bn.folds()
                                         for conv, bn in pairs)

    def _forward_folded(self, x):
        pairs = self._pairs()
        folds = [bn.fold() for _, bn in pairs]

        def conv_bn(k, input, **epilogue):
            conv, (scale, shift) = pairs[k][0], folds[k]
            return F.conv2d_bias_act(input, conv.weight.data, shift, *conv._op_args(),
                                     scale=scale, **epilogue)

        h = conv_bn(0, x, activation="relu")
        residual = x if len(pairs) == 2 else conv_bn(2, x, activation="identity")
        out = conv_bn(1, h, activation="relu", residual=residual)
        self._save(True, x, h, out, [scale for scale, _ in folds])
        return out

    def _backward_folded(self, grad_output):
        _, x, h, out, scales = self._saved()
        pairs = self._pairs()
        grad = F.relu_backward(grad_output, out)  # the sum's, the residual's gradient too
        grad_h = F.relu_backward(_conv_bn_backward(*pairs[1], scales[1], grad, h), h)
        grad_x = _conv_bn_backward(*pairs[0], scales[0], grad_h, x)
        if len(pairs) == 3:
            return grad_x + _conv_bn_backward(*pairs[2], scales[2], grad, x)
        return grad_x + grad


def _conv_bn_backward(conv: Conv2d, bn: BatchNorm2d, scale, grad, input):
    """The backward of ``bn(conv(input))`` in evaluation (``bn`` the affine map ``scale``,
    ``shift`` of its running statistics), from its output's gradient ``grad``: returns the
    input gradient and accumulates the parameter gradients, with no copy of the
    convolution's output at hand (the fused forward never wrote it).

    With g = grad, c = conv(input), W the weight: the convolution's output gradient is
    scale[k] * g, so grad_input = dgrad(g, scale[k] * W) and grad_W = scale[k] * wgrad(g,
    input). The batch norm's: grad_bias = sum(g) and grad_weight = sum(g * (c - mean)) *
    inv_std = (sum(g * c) - mean * sum(g)) * inv_std, where sum(g * c) over (n, p, q) is
    <W[k], wgrad(g, input)[k]> over (c, r, s), since c is linear in W."""
    xp = backend.array_module(grad)
    weight = conv.weight.data
    channel = (-1,) + (1,) * (weight.ndim - 1)
    bn_weight, bn_bias = bn._data("weight"), bn._data("bias")
    sums = bn_weight is not None or bn_bias is not None
    # sum(g) per channel is the gradient of a convolution bias: ``scale`` stands in for
    # that bias (conv2d_backward reads only its presence and shape), so one call gives it.
    grad_input, grad_w, grad_sum = F.conv2d_backward(
        grad, input, weight * scale.reshape(channel), scale if sums else None,
        *conv._op_args(), output_mask=(True, True, sums))
    accumulate_grad(conv.weight, grad_w * scale.reshape(channel))
    if bn_bias is not None:
        accumulate_grad(bn.bias, grad_sum)
    if bn_weight is not None:
        products = (weight * grad_w).reshape(weight.shape[0], -1).sum(axis=1)
        inv_std = 1 / xp.sqrt(bn.running_var + bn.eps)
        accumulate_grad(bn.weight, ((products - bn.running_mean * grad_sum) * inv_std)
                        .astype(weight.dtype))
    return grad_input
