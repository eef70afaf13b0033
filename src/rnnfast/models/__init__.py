"""Ready-made models: ``CharRNN`` (a character-level language model) and ``SequenceRegressor``
(next-value prediction for real-valued series).

Both are an input encoding, a recurrent layer (``cell="rnn"``: :class:`rnnfast.RNN`, the
default; ``"lstm"``, ``"gru"``: the gated cells) and a :class:`rnnfast.Linear` decoder, train
with truncated BPTT (:func:`rnnfast.truncated_bptt`) and save to a single ``.npz`` file
(:mod:`rnnfast.models.file_format`); :func:`load_model` reads one back as whichever model it holds.
"""

from rnnfast.models._base import CELLS, OPTIMIZERS, load_model
from rnnfast.models.char_rnn import CharRNN
from rnnfast.models.file_format import FORMAT_VERSION
from rnnfast.models.regressor import SequenceRegressor

__all__ = ["CELLS", "FORMAT_VERSION", "OPTIMIZERS", "CharRNN", "SequenceRegressor", "load_model"]
