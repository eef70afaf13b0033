"""Losses that return ``(loss, grad)``: the value and its gradient with respect to the prediction.

The gradient is what the model's ``backward`` takes, so a training step reads
``loss, d_logits = softmax_cross_entropy(logits, targets); model.backward(d_logits)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnfast._validation import as_ids, asarray, check_choice

__all__ = ["mse", "softmax_cross_entropy"]

REDUCTIONS = ("mean", "sum", "none")


def _as_prediction(name: str, value: Any) -> np.ndarray:
    """A float array (float32 and float64 are kept; other numbers become float64)."""
    arr = asarray(name, value)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be an array of floats, got dtype {arr.dtype}")
    return arr


def _reduce(
    losses: np.ndarray, grad: np.ndarray, reduction: str, count: int
) -> tuple[float | np.ndarray, np.ndarray]:
    """Apply ``reduction`` to per-element losses and their (unreduced) gradient; ``count`` is
    the number of elements a mean divides by."""
    if reduction == "none":
        return losses, grad
    total = float(losses.sum(dtype=np.float64))
    if reduction == "sum":
        return total, grad
    if count == 0:  # nothing to average: no loss and nothing to learn
        return 0.0, grad
    grad /= grad.dtype.type(count)
    return total / count, grad


def softmax_cross_entropy(
    logits: Any,
    targets: Any,
    reduction: str = "mean",
    ignore_index: int | None = None,
) -> tuple[float | np.ndarray, np.ndarray]:
    """Cross-entropy of softmax(logits) against integer class targets, and its gradient.

    ``loss_i = logsumexp(logits_i) - logits_i[targets_i]``, computed with the max subtracted
    first, so any finite logits are safe; the gradient is ``softmax(logits_i) - onehot_i``.
    Equal to ``torch.nn.functional.cross_entropy`` (with ``ignore_index`` given).

    Args:
        logits: (..., C) unnormalized log-probabilities (e.g. (T, B, C) from a language model).
        targets: (...) integer classes in [0, C), shaped like logits without the last axis.
        reduction: ``"mean"`` over the non-ignored targets, ``"sum"``, or ``"none"`` (the loss
            of every element, shaped like targets).
        ignore_index: a target value that contributes neither loss nor gradient (e.g. padding),
            whatever the logits there, NaN included (PyTorch's loss leaves them out too, but its
            gradient there is NaN). If every target is ignored, the mean is 0 (PyTorch returns
            NaN).

    Returns:
        (loss, grad): a float (an array for ``"none"``) and dL/dlogits, shaped and typed like
        logits.

    Raises:
        TypeError: logits are not numbers, or targets not integers.
        ValueError: a target outside [0, C) (other than ignore_index), a shape mismatch, or an
            unknown reduction.

    Examples:
        >>> loss, grad = softmax_cross_entropy(np.zeros((2, 4)), np.array([1, 3]))
        >>> round(loss, 4)  # log(4): a uniform guess over 4 classes
        1.3863
        >>> grad.shape
        (2, 4)
    """
    check_choice("reduction", reduction, REDUCTIONS)
    logits = _as_prediction("logits", logits)
    if logits.ndim < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., C) with C >= 1, got {logits.shape}")
    C = logits.shape[-1]
    t = as_ids("targets", targets, C, ignore_index)
    if t.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {t.shape}"
        )
    keep = None if ignore_index is None else t != ignore_index
    if keep is not None:
        t = np.where(keep, t, 0)

    idx = t[..., None]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=-1, keepdims=True)
    losses = (np.log(sum_exp) - np.take_along_axis(shifted, idx, axis=-1))[..., 0]
    grad = exp / sum_exp  # softmax; minus one at each target:
    np.put_along_axis(grad, idx, np.take_along_axis(grad, idx, axis=-1) - 1, axis=-1)
    if keep is not None:
        # np.where, not a product with the mask: NaN * 0 is NaN, so an ignored element's NaN
        # logits would still reach the loss (PyTorch's loss leaves them out too).
        losses = np.where(keep, losses, losses.dtype.type(0))
        grad = np.where(keep[..., None], grad, grad.dtype.type(0))
    count = t.size if keep is None else int(keep.sum())
    return _reduce(losses, grad, reduction, count)


def mse(pred: Any, target: Any, reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """Mean squared error ``mean((pred - target)**2)`` and its gradient with respect to pred.

    Args:
        pred: predictions, any shape.
        target: the same shape (no broadcasting: a mismatch is an error, not a silent broadcast).
        reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.

    Returns:
        (loss, grad): a float (an array for ``"none"``) and dL/dpred, shaped and typed like pred.

    Raises:
        ValueError: the shapes differ, or an unknown reduction.

    Examples:
        >>> loss, grad = mse(np.array([1.0, 2.0]), np.array([0.0, 2.0]))
        >>> loss, grad
        (0.5, array([1., 0.]))
    """
    check_choice("reduction", reduction, REDUCTIONS)
    pred = _as_prediction("pred", pred)
    target = _as_prediction("target", target)
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {target.shape}")
    diff = pred - target.astype(pred.dtype, copy=False)
    return _reduce(diff * diff, 2 * diff, reduction, diff.size)
