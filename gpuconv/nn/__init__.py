"""Layers with torch.nn's names, constructor arguments, parameter names and shapes, and
explicit backward passes (see :mod:`gpuconv.nn.module` for the forward/backward contract).

Weights copied from a torch module (``load_state_dict(torch_module.state_dict())`` works
with CPU torch tensors) give the same outputs. Default initialisation follows torch's
formulas and draws from the package-wide generator: ``gpuconv.nn.manual_seed(seed)`` makes
a model's initial weights, and its dropout masks, reproducible. ``gpuconv.nn.init`` is
:mod:`gpuconv.init`, as ``torch.nn.init`` is torch's.
"""
from .. import init
from ..init import manual_seed
from .activation import ELU, Dropout, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .blocks import BasicBlock
from .concat import Concat
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .flatten import Flatten
from .linear import Embedding, Linear
from .loss import CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Identity, Module, ModuleList, Parameter, Sequential
from .norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from .pool import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d,
                   MaxPool2d)
from .rnn import GRU, LSTM, RNN

__all__ = [
    "init", "manual_seed", "Parameter", "Module", "Sequential", "ModuleList", "Identity", "Concat",
    "Conv1d", "Conv2d", "ConvTranspose2d",
    "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "Linear", "Embedding", "Flatten",
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout",
    "BatchNorm1d", "BatchNorm2d", "LocalResponseNorm",
    "RNN", "LSTM", "GRU", "BasicBlock",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
]
