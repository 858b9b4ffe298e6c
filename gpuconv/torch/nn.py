"""``torch.nn`` modules whose forward runs gpuconv's kernels (the ``gpuconv::`` custom ops).

Each class subclasses the ``torch.nn`` module of the same name: the constructor arguments,
parameters, buffers, initialisation, ``state_dict`` keys and ``repr`` are PyTorch's own, and
``isinstance(m, torch.nn.Conv2d)`` holds (the recurrent layers subclass ``torch.nn.RNNBase``,
see below). Only ``forward`` differs. So a model swaps layers
one at a time, and ``load_state_dict`` works both ways between a gpuconv layer and its
PyTorch twin. Options gpuconv does not implement (a ``padding_mode`` other than "zeros", an
LSTM ``proj_size``, packed sequences, ``inplace=True``) raise a ValueError.
"""
from __future__ import annotations

import torch

from . import _activation as A, _conv, _linear, _loss, _norm, _pool, _rnn

__all__ = [
    "Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
    "LocalResponseNorm", "Linear", "Embedding", "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh",
    "Softmax", "LogSoftmax", "Dropout", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
]

nn = torch.nn


def _zeros_padding(module) -> None:
    if module.padding_mode != "zeros":
        raise ValueError(f"{type(module).__name__}: only padding_mode='zeros' is supported by "
                         f"gpuconv, got {module.padding_mode!r}")


# --------------------------------------------------------------------------- convolution

class Conv1d(nn.Conv1d):
    def forward(self, input):
        _zeros_padding(self)
        return _conv.conv1d(input, self.weight, self.bias, self.stride, self.padding,
                            self.dilation, self.groups)


class Conv2d(nn.Conv2d):
    def forward(self, input):
        _zeros_padding(self)
        return _conv.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                            self.dilation, self.groups)


class ConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, input, output_size=None):
        _zeros_padding(self)
        if output_size is not None:
            raise ValueError("ConvTranspose2d: output_size is not supported by gpuconv; set "
                             "output_padding in the constructor")
        return _conv.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                      self.output_padding, self.groups, self.dilation)


# --------------------------------------------------------------------------- pooling

class MaxPool1d(nn.MaxPool1d):
    def forward(self, input):
        return _pool.max_pool1d(input, self.kernel_size, self.stride, self.padding,
                                self.dilation, self.ceil_mode, self.return_indices)


class MaxPool2d(nn.MaxPool2d):
    def forward(self, input):
        return _pool.max_pool2d(input, self.kernel_size, self.stride, self.padding,
                                self.dilation, self.ceil_mode, self.return_indices)


class AvgPool1d(nn.AvgPool1d):
    def forward(self, input):
        return _pool.avg_pool1d(input, self.kernel_size, self.stride, self.padding,
                                self.ceil_mode, self.count_include_pad)


class AvgPool2d(nn.AvgPool2d):
    def forward(self, input):
        return _pool.avg_pool2d(input, self.kernel_size, self.stride, self.padding,
                                self.ceil_mode, self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool1d(nn.AdaptiveAvgPool1d):
    def forward(self, input):
        return _pool.adaptive_avg_pool1d(input, self.output_size)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    def forward(self, input):
        return _pool.adaptive_avg_pool2d(input, self.output_size)


# --------------------------------------------------------------------------- normalisation

class _BatchNorm:
    """PyTorch's ``_BatchNorm.forward`` (momentum None: the cumulative average) over gpuconv."""

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return _norm.batch_norm(input, self.running_mean if keep else None,
                                self.running_var if keep else None, self.weight, self.bias,
                                use_batch, factor, self.eps)


class BatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    pass


class BatchNorm2d(_BatchNorm, nn.BatchNorm2d):
    pass


class LocalResponseNorm(nn.LocalResponseNorm):
    def forward(self, input):
        return _norm.local_response_norm(input, self.size, self.alpha, self.beta, self.k)


# --------------------------------------------------------------------------- linear

class Linear(nn.Linear):
    def forward(self, input):
        return _linear.linear(input, self.weight, self.bias)


class Embedding(nn.Embedding):
    def forward(self, input):
        return _linear.embedding(input, self.weight, self.padding_idx, self.max_norm,
                                 self.norm_type, self.scale_grad_by_freq, self.sparse)


# --------------------------------------------------------------------------- activations

class ReLU(nn.ReLU):
    def forward(self, input):
        return A.relu(input, self.inplace)


class LeakyReLU(nn.LeakyReLU):
    def forward(self, input):
        return A.leaky_relu(input, self.negative_slope, self.inplace)


class ELU(nn.ELU):
    def forward(self, input):
        return A.elu(input, self.alpha, self.inplace)


class Sigmoid(nn.Sigmoid):
    def forward(self, input):
        return A.sigmoid(input)


class Tanh(nn.Tanh):
    def forward(self, input):
        return A.tanh(input)


class Softmax(nn.Softmax):
    def forward(self, input):
        return A.softmax(input, self.dim)


class LogSoftmax(nn.LogSoftmax):
    def forward(self, input):
        return A.log_softmax(input, self.dim)


class Dropout(nn.Dropout):
    def forward(self, input):
        return A.dropout(input, self.p, self.training, self.inplace)


# --------------------------------------------------------------------------- recurrent

class _RNNBase:
    """PyTorch's RNN/LSTM/GRU forward over gpuconv's sequence ops: batched or unbatched
    input, ``hx`` or zeros; not packed sequences nor ``proj_size``."""

    def forward(self, input, hx=None):
        name = type(self).__name__
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise ValueError(f"{name}: packed sequences are not supported by gpuconv")
        if getattr(self, "proj_size", 0):
            raise ValueError(f"{name}: proj_size is not supported by gpuconv")
        batched = input.dim() == 3
        if not batched:  # (T, I): a batch of one, as PyTorch
            input = input.unsqueeze(1 if not self.batch_first else 0)
            hx = None if hx is None else _map_states(hx, lambda s: s.unsqueeze(1))
        out, finals = self._sequence(input, hx, self._flat_weights, self.num_layers,
                                     self.bidirectional, self.batch_first, self.dropout,
                                     self.training)
        if not batched:
            out = out.squeeze(1 if not self.batch_first else 0)
            finals = _map_states(finals, lambda s: s.squeeze(1))
        return out, finals


def _map_states(states, fn):
    return tuple(fn(s) for s in states) if isinstance(states, tuple) else fn(states)


# The recurrent layers subclass torch.nn.RNNBase as torch.nn.RNN/LSTM/GRU do, with their
# constructor arguments, but not those classes themselves: torch.compile refuses to trace any
# instance of them (it assumes their cuDNN forward), while these forwards trace.

class RNN(_RNNBase, nn.RNNBase):
    """``torch.nn.RNN``: ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, ...)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", *args,
                 **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"RNN_{nonlinearity.upper()}", input_size, hidden_size, num_layers,
                         *args, **kwargs)
        self.nonlinearity = nonlinearity

    def _sequence(self, *args):
        return _rnn.rnn(*args, nonlinearity=self.nonlinearity)


class LSTM(_RNNBase, nn.RNNBase):
    """``torch.nn.LSTM``'s arguments (``proj_size`` must stay 0)."""

    _sequence = staticmethod(_rnn.lstm)

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(_RNNBase, nn.RNNBase):
    """``torch.nn.GRU``'s arguments."""

    _sequence = staticmethod(_rnn.gru)

    def __init__(self, *args, **kwargs):
        super().__init__("GRU", *args, **kwargs)


class _CellBase:
    """PyTorch's RNNCell/LSTMCell/GRUCell forward over gpuconv's cell ops (batched or not)."""

    def forward(self, input, hx=None):
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = input.new_zeros(input.shape[0], self.hidden_size)
            hx = (zeros, zeros) if self._states == 2 else zeros
        elif not batched:
            hx = _map_states(hx, lambda s: s.unsqueeze(0))
        out = self._cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return out if batched else _map_states(out, lambda s: s.squeeze(0))


class RNNCell(_CellBase, nn.RNNCell):
    _states = 1

    def _cell(self, *args):
        return (_rnn.rnn_tanh_cell if self.nonlinearity == "tanh" else _rnn.rnn_relu_cell)(*args)


class LSTMCell(_CellBase, nn.LSTMCell):
    _states = 2
    _cell = staticmethod(_rnn.lstm_cell)


class GRUCell(_CellBase, nn.GRUCell):
    _states = 1
    _cell = staticmethod(_rnn.gru_cell)


# --------------------------------------------------------------------------- losses

class CrossEntropyLoss(nn.CrossEntropyLoss):
    def forward(self, input, target):
        return _loss.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                                   reduction=self.reduction,
                                   label_smoothing=self.label_smoothing)


class NLLLoss(nn.NLLLoss):
    def forward(self, input, target):
        return _loss.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                              reduction=self.reduction)


class MSELoss(nn.MSELoss):
    def forward(self, input, target):
        return _loss.mse_loss(input, target, reduction=self.reduction)


class L1Loss(nn.L1Loss):
    def forward(self, input, target):
        return _loss.l1_loss(input, target, reduction=self.reduction)
