"""Training: optimizers and gradient clipping (:mod:`~rnnfast.train.optim`), losses
(:mod:`~rnnfast.train.losses`) and truncated backpropagation through time
(:mod:`~rnnfast.train.tbptt`)."""

from rnnfast.train.losses import mse, softmax_cross_entropy
from rnnfast.train.optim import SGD, Adagrad, Adam, Optimizer, clip_grad_norm, clip_grad_value
from rnnfast.train.tbptt import (
    Progress,
    SequenceModel,
    TBPTTResult,
    batchify,
    bptt_windows,
    truncated_bptt,
)

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "Optimizer",
    "Progress",
    "SequenceModel",
    "TBPTTResult",
    "batchify",
    "bptt_windows",
    "clip_grad_norm",
    "clip_grad_value",
    "mse",
    "softmax_cross_entropy",
    "truncated_bptt",
]
