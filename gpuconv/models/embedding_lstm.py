"""A text classifier: token embedding -> LSTM -> linear, on the last hidden state."""
from __future__ import annotations

from typing import Any

from .. import nn
from .rnn_classifier import RNNClassifier

__all__ = ["EmbeddingClassifier", "embedding_lstm"]


class EmbeddingClassifier(RNNClassifier):
    """Classify token sequences given as (N, T) integer arrays.

    ``embedding`` maps each token to a vector, (N, T) -> (N, T, E); the recurrent layer and
    ``fc`` then work as in :class:`RNNClassifier` (the last layer's final hidden state to
    logits (N, num_classes)). ``backward`` ends in the embedding's gradient, a
    deterministic scatter-add into the rows that the batch's tokens used, and returns None:
    tokens have no gradient. Children: rnn, fc, embedding.
    """

    def __init__(self, embedding: nn.Embedding, rnn: nn.LSTM | nn.GRU, num_classes: int,
                 dtype: Any = None):
        if embedding.embedding_dim != rnn.input_size:
            raise ValueError(f"EmbeddingClassifier: the embedding gives vectors of "
                             f"{embedding.embedding_dim} but the recurrent layer takes "
                             f"{rnn.input_size}")
        super().__init__(rnn, num_classes, dtype=dtype)
        self.embedding = embedding

    def forward(self, input):
        if input.ndim != 2:
            raise ValueError(f"EmbeddingClassifier: input must be token ids (N, T), got shape "
                             f"{tuple(input.shape)}")
        # RNNClassifier reads (N, features, T): hand it the (N, T, E) vectors as that view.
        return super().forward(self.embedding(input).swapaxes(1, 2))

    def backward(self, grad_output):
        grad_vectors = super().backward(grad_output).swapaxes(1, 2)    # (N, T, E)
        return self.embedding.backward(grad_vectors)


def embedding_lstm(num_classes: int = 4, num_embeddings: int = 64, embedding_dim: int = 32,
                   hidden_size: int = 64, num_layers: int = 1, bidirectional: bool = False,
                   dropout: float = 0.0, padding_idx: int | None = 0,
                   dtype: Any = None) -> EmbeddingClassifier:
    """Token embedding (``num_embeddings`` x ``embedding_dim``, row ``padding_idx`` the
    padding token, which gets no gradient) -> LSTM -> linear, for (N, T) token ids (the
    defaults fit :func:`gpuconv.data.synthetic_text`: 64 tokens, 0 pads, 4 classes)."""
    embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx,
                             dtype=dtype)
    rnn = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                  dropout=dropout, bidirectional=bidirectional, dtype=dtype)
    return EmbeddingClassifier(embedding, rnn, num_classes, dtype=dtype)
