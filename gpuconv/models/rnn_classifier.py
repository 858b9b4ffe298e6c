"""Sequence classifiers: an LSTM or GRU over the time axis, the last hidden state to a
linear layer."""
from __future__ import annotations

from typing import Any

from .. import backend, nn

__all__ = ["RNNClassifier", "lstm_classifier", "gru_classifier"]


class RNNClassifier(nn.Module):
    """Classify sequences given as (N, features, T) arrays, MNIST-1D's (N, 1, 40) layout.

    The input is read as T time steps of ``features`` values (batch-first after swapping
    the last two axes); the final hidden state of the last layer (both directions,
    concatenated, when bidirectional) goes through ``fc`` to logits (N, num_classes).
    Children: rnn, fc.
    """

    def __init__(self, rnn: nn.LSTM | nn.GRU, num_classes: int, dtype: Any = None):
        super().__init__()
        if not rnn.batch_first:
            raise ValueError("RNNClassifier: the recurrent layer must be batch_first")
        self.rnn = rnn
        self.fc = nn.Linear(rnn.hidden_size * self._directions(), num_classes, dtype=dtype)

    def _directions(self) -> int:
        return 2 if self.rnn.bidirectional else 1

    def forward(self, input):
        if input.ndim != 3:
            raise ValueError(f"RNNClassifier: input must be (N, features, T), got shape "
                             f"{tuple(input.shape)}")
        _, state = self.rnn(input.swapaxes(1, 2))
        h_n = state[0] if isinstance(self.rnn, nn.LSTM) else state
        last = h_n[-self._directions():]                      # (D, N, H)
        self._save(h_n.shape)
        return self.fc(last.swapaxes(0, 1).reshape(last.shape[1], -1))

    def backward(self, grad_output):
        (h_shape,) = self._saved()
        grad_last = self.fc.backward(grad_output)             # (N, D*H)
        xp = backend.array_module(grad_last)
        grad_h_n = xp.zeros(h_shape, grad_last.dtype)
        d = self._directions()
        grad_h_n[-d:] = grad_last.reshape(grad_last.shape[0], d, -1).swapaxes(0, 1)
        return self.rnn.backward(None, grad_h_n).swapaxes(1, 2)


def _classifier(rnn_class, num_classes: int, input_size: int, hidden_size: int,
                num_layers: int, bidirectional: bool, dropout: float, dtype: Any) -> RNNClassifier:
    rnn = rnn_class(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                    dropout=dropout, bidirectional=bidirectional, dtype=dtype)
    return RNNClassifier(rnn, num_classes, dtype=dtype)


def lstm_classifier(num_classes: int = 10, input_size: int = 1, hidden_size: int = 64,
                    num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                    dtype: Any = None) -> RNNClassifier:
    """LSTM sequence classifier for (N, input_size, T) input (MNIST-1D: (N, 1, 40))."""
    return _classifier(nn.LSTM, num_classes, input_size, hidden_size, num_layers,
                       bidirectional, dropout, dtype)


def gru_classifier(num_classes: int = 10, input_size: int = 1, hidden_size: int = 64,
                   num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                   dtype: Any = None) -> RNNClassifier:
    """GRU sequence classifier for (N, input_size, T) input (MNIST-1D: (N, 1, 40))."""
    return _classifier(nn.GRU, num_classes, input_size, hidden_size, num_layers,
                       bidirectional, dropout, dtype)
