"""rnnfast: fast, correct recurrent networks (Elman RNN, LSTM, GRU) and backpropagation through
time on the CPU."""

from rnnfast import datasets, diagnostics
from rnnfast._threads import available_cpus, get_num_threads, set_num_threads, thread_stats
from rnnfast.functional import (
    HAVE_COMPILED,
    GRUGrads,
    LSTMGrads,
    RNNGrads,
    gru_backward,
    gru_forward,
    gru_step,
    lstm_backward,
    lstm_forward,
    lstm_step,
    rnn_backward,
    rnn_forward,
)
from rnnfast.models import CharRNN, SequenceRegressor
from rnnfast.nn import GRU, LSTM, RNN, Embedding, GRUCell, Linear, LSTMCell, RNNCell, one_hot
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
    "GRU",
    "HAVE_COMPILED",
    "LSTM",
    "RNN",
    "SGD",
    "Adagrad",
    "Adam",
    "CharRNN",
    "Embedding",
    "GRUCell",
    "GRUGrads",
    "LSTMCell",
    "LSTMGrads",
    "Linear",
    "RNNCell",
    "RNNGrads",
    "SequenceRegressor",
    "__version__",
    "available_cpus",
    "clip_grad_norm",
    "clip_grad_value",
    "datasets",
    "diagnostics",
    "get_num_threads",
    "gru_backward",
    "gru_forward",
    "gru_step",
    "lstm_backward",
    "lstm_forward",
    "lstm_step",
    "mse",
    "one_hot",
    "rnn_backward",
    "rnn_forward",
    "set_num_threads",
    "softmax_cross_entropy",
    "thread_stats",
    "truncated_bptt",
]
