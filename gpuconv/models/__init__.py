"""Ready-made models, and the registry the CLI builds them from.

Each factory returns a :class:`gpuconv.nn.Module` with forward and backward; its initial
weights come from the package-wide generator (``gpuconv.nn.manual_seed``).

=================  ====================  ================================================
name               input                 what
=================  ====================  ================================================
lenet5             (N, 1, 28, 28)        LeNet-5; input_size=32 classic, 8 for 8x8 digits
vgg_small          (N, 3, 32, 32)        VGG-style 3 stages of two 3x3 convs + BatchNorm
resnet_small       (N, 3, 32, 32)        CIFAR ResNet of BasicBlocks (ResNet-8 default)
cnn1d              (N, 1, 40)            MNIST-1D paper's 1-d CNN
lstm_classifier    (N, 1, 40)            LSTM over 40 steps, last hidden state -> linear
gru_classifier     (N, 1, 40)            GRU over 40 steps, last hidden state -> linear
alexnet_small      (N, 3, 32, 32)        AlexNet: 5x5/2 first conv, LRN, overlapping pools
inception_small    (N, 3, 32, 32)        GoogLeNet of 3 Inception blocks (1x1 reducers)
embedding_lstm     (N, T) token ids      token embedding -> LSTM -> linear
=================  ====================  ================================================
"""
from __future__ import annotations

from typing import Callable

from ..nn import Module
from .alexnet import alexnet_small
from .cnn1d import cnn1d
from .embedding_lstm import EmbeddingClassifier, embedding_lstm
from .inception import inception_small
from .lenet import lenet5
from .resnet import resnet_small
from .rnn_classifier import RNNClassifier, gru_classifier, lstm_classifier
from .vgg import vgg_small

__all__ = ["MODELS", "get_model", "lenet5", "vgg_small", "resnet_small", "cnn1d",
           "lstm_classifier", "gru_classifier", "RNNClassifier", "alexnet_small",
           "inception_small", "embedding_lstm", "EmbeddingClassifier"]

MODELS: dict[str, Callable[..., Module]] = {
    "lenet5": lenet5,
    "vgg_small": vgg_small,
    "resnet_small": resnet_small,
    "cnn1d": cnn1d,
    "lstm_classifier": lstm_classifier,
    "gru_classifier": gru_classifier,
    "alexnet_small": alexnet_small,
    "inception_small": inception_small,
    "embedding_lstm": embedding_lstm,
}


def get_model(name: str, **kwargs) -> Module:
    """Build the model registered as ``name`` with the factory's keyword arguments
    (``num_classes``, ``in_channels``, ...)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"get_model: unknown model {name!r}; known: "
                         f"{', '.join(sorted(MODELS))}") from None
    return factory(**kwargs)
