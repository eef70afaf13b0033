"""rnnfast: a fast, correct plain (Elman) RNN and backpropagation through time on the CPU."""

from rnnfast.functional import HAVE_COMPILED, RNNGrads, rnn_backward, rnn_forward

__version__ = "0.1.0"

__all__ = ["HAVE_COMPILED", "RNNGrads", "__version__", "rnn_backward", "rnn_forward"]
