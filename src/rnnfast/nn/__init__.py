"""Layers on NumPy arrays with PyTorch's names, shapes and initialization.

``RNN``, ``LSTM`` and ``GRU`` (drop-ins for their ``torch.nn`` namesakes), ``RNNCell``,
``LSTMCell``, ``GRUCell``, ``Linear``, ``Embedding`` and
``one_hot``. The recurrences run through :mod:`rnnfast.functional`, one call per layer and
direction, so a layer is as fast as the kernels.

There is no autograd: every layer has an explicit backward, and follows one protocol.

- ``layer(...)`` (``forward``) computes the outputs and remembers what its backward needs; only
  the most recent call is remembered.
- ``layer.backward(d_output, ...)`` returns the gradients of the inputs of that call and *adds*
  the gradients of the parameters into ``layer.grads``, which accumulate until ``zero_grad()``
  (as ``.grad`` does in PyTorch). Parameters must not be changed between the two.
- ``parameters()`` and ``grads`` are dicts of the live arrays, keyed like ``state_dict()``;
  optimizers (:mod:`rnnfast.train`) update the parameters in place. ``state_dict()`` returns
  copies; ``load_state_dict()`` copies into the existing arrays, so both dicts stay valid.

Arrays must have the layer's dtype (float32 by default, or float64): a float array of the other
dtype is a ``TypeError`` rather than a silent copy. Python lists are converted, and torch
tensors are accepted wherever an array is (converted with ``.detach().cpu().numpy()``).
"""

from rnnfast.nn.linear import Embedding, Linear, one_hot
from rnnfast.nn.module import IncompatibleKeys, Module
from rnnfast.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Embedding",
    "GRUCell",
    "IncompatibleKeys",
    "LSTMCell",
    "Linear",
    "Module",
    "RNNBase",
    "RNNCell",
    "one_hot",
]
