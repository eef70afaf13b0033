"""rnnfast: a fast, correct plain (Elman) RNN and backpropagation through time on the CPU."""

from rnnfast import datasets, diagnostics
from rnnfast._threads import get_num_threads, set_num_threads
from rnnfast.functional import HAVE_COMPILED, RNNGrads, rnn_backward, rnn_forward
from rnnfast.models import CharRNN, SequenceRegressor
from rnnfast.nn import RNN, Embedding, Linear, RNNCell, one_hot
from rnnfast.train import (
    SGD,
    Adagrad,
    Adam,
    clip_grad_norm,
    clip_grad_value,
    mse,
    softmax_cross_entropy,
    truncated_bptt,
)

__version__ = "0.1.0"
"""The package version: the one place it is written (pyproject.toml reads it)."""

__all__ = [
    "HAVE_COMPILED",
    "RNN",
    "SGD",
    "Adagrad",
    "Adam",
    "CharRNN",
    "Embedding",
    "Linear",
    "RNNCell",
    "RNNGrads",
    "SequenceRegressor",
    "__version__",
    "clip_grad_norm",
    "clip_grad_value",
    "datasets",
    "diagnostics",
    "get_num_threads",
    "mse",
    "one_hot",
    "rnn_backward",
    "rnn_forward",
    "set_num_threads",
    "softmax_cross_entropy",
    "truncated_bptt",
]
