"""Truncated backpropagation through time (TBPTT): training on sequences longer than memory.

A long sequence is cut into ``batch_size`` contiguous streams trained side by side
(:func:`batchify`), and walked in windows of ``bptt`` steps (:func:`bptt_windows`). The hidden
state is carried from each window to the next, so the forward pass sees the whole history, but
gradients stop at the window's start: each window's backward ends at its initial state, whose
gradient is dropped (``h.detach()`` in a PyTorch loop). :func:`truncated_bptt` is that loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np

from rnnfast._validation import check_int, check_nonnegative
from rnnfast.train._windows import window_loop
from rnnfast.train.optim import Optimizer, clip_grad_norm

__all__ = [
    "Progress",
    "SequenceModel",
    "TBPTTResult",
    "batchify",
    "bptt_windows",
    "truncated_bptt",
]


class SequenceModel(Protocol):
    """What :func:`truncated_bptt` trains: :class:`rnnfast.RNN` and the models in
    :mod:`rnnfast.models` are such models.

    ``forward(x, h0)`` maps a time-major window x (T, B, ...) and an initial state (or None) to
    ``(prediction, h_n)``; ``backward(d_prediction)`` adds the gradients of the last forward
    into ``grads`` (what it returns is ignored).
    """

    def forward(self, x: Any, h0: Any | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def backward(self, d_output: Any) -> Any: ...

    def zero_grad(self) -> None: ...

    @property
    def grads(self) -> Mapping[str, np.ndarray]: ...


class Progress(NamedTuple):
    """What :func:`truncated_bptt` reports after every optimizer step."""

    step: int
    """Optimizer steps taken so far in this call (1 after the first window)."""
    loss: float
    """The loss of the window just trained."""
    tokens: int
    """Time steps x batch trained so far in this call (characters, for a char-RNN)."""
    elapsed: float
    """Seconds since the call started."""

    @property
    def tokens_per_sec(self) -> float:
        """Training throughput, ``tokens / elapsed``."""
        return self.tokens / self.elapsed if self.elapsed > 0 else float("inf")


class TBPTTResult(NamedTuple):
    """The result of :func:`truncated_bptt`."""

    losses: list[float]
    """The loss of every window trained, in order."""
    state: np.ndarray | None
    """The hidden state after the last window (to continue from)."""


def batchify(sequence: Any, batch_size: int) -> np.ndarray:
    """Cut a sequence (N, ...) into ``batch_size`` contiguous streams, time-major.

    Returns ``(N // batch_size, batch_size, ...)`` whose column b is
    ``sequence[b * n:(b + 1) * n]`` with n = N // batch_size; the last N % batch_size items are
    dropped. Trained side by side, the streams keep their order, so the state carried from
    window to window always continues the same text.

    Raises:
        ValueError: the sequence is shorter than batch_size.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    seq = np.asarray(sequence)
    if seq.ndim < 1:
        raise ValueError("sequence must have at least one dimension (time)")
    n = seq.shape[0] // batch_size
    if n == 0:
        raise ValueError(
            f"a sequence of {seq.shape[0]} steps is too short for batch_size={batch_size}: "
            "each stream needs at least one step"
        )
    return seq[: n * batch_size].reshape(batch_size, n, *seq.shape[1:]).swapaxes(0, 1)


def bptt_windows(length: int, bptt: int) -> list[slice]:
    """The consecutive windows ``slice(t, min(t + bptt, length))`` covering [0, length)."""
    length = check_int("length", length, 0)
    bptt = check_int("bptt", bptt, 1)
    return [slice(t, min(t + bptt, length)) for t in range(0, length, bptt)]


def truncated_bptt(
    model: SequenceModel,
    inputs: Any,
    targets: Any,
    loss_fn: Callable[[np.ndarray, Any], tuple[float, np.ndarray]],
    optimizer: Optimizer,
    *,
    bptt: int,
    steps: int | None = None,
    state: np.ndarray | None = None,
    max_grad_norm: float | None = None,
    callback: Callable[[Progress], bool | None] | None = None,
) -> TBPTTResult:
    """Train ``model`` on a long sequence with truncated BPTT, one optimizer step per window.

    For each window ``w`` of :func:`bptt_windows`::

        model.zero_grad()
        prediction, h_n = model.forward(inputs[w], state)
        loss, d_prediction = loss_fn(prediction, targets[w])
        model.backward(d_prediction)              # stops at the window's initial state
        clip_grad_norm(model.grads, max_norm)     # if max_grad_norm is given
        optimizer.step()
        state = h_n                               # carried forward, with no gradient path

    After the last window, when ``steps`` asks for more, the walk starts again at the first
    window from the initial ``state`` (a new epoch).

    Args:
        model: a :class:`SequenceModel` (its mode is left as it is: call ``model.train()``).
        inputs: (T, B, ...) time-major, e.g. from :func:`batchify`.
        targets: (T, B, ...), what ``loss_fn`` compares the prediction of each step with.
        loss_fn: ``(prediction, target) -> (loss, d_prediction)``, e.g.
            :func:`rnnfast.softmax_cross_entropy` or :func:`rnnfast.mse`.
        optimizer: updates the model's parameters from ``model.grads``.
        bptt: window length in steps.
        steps: optimizer steps to take; None for one pass over the sequence.
        state: the initial state of every pass (None: zeros).
        max_grad_norm: clip the joint gradient norm to this before every step (None: no clip).
        callback: called with a :class:`Progress` after every step; returning True stops.

    Returns:
        TBPTTResult(losses, state): every window's loss and the final state.
    """
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have shape (T, B, ...) with T >= 1, got {inputs.shape}")
    if targets.shape[:2] != inputs.shape[:2]:
        raise ValueError(
            f"targets must have the same (T, B) = {inputs.shape[:2]} as inputs, "
            f"got {targets.shape[:2]}"
        )
    windows = bptt_windows(inputs.shape[0], bptt)
    total = len(windows) if steps is None else check_int("steps", steps, 0)
    if max_grad_norm is not None:
        max_grad_norm = check_nonnegative("max_grad_norm", max_grad_norm)  # before any work
    grads = model.grads  # live arrays: built once, not per step

    def train_window(w: slice, h: Any) -> tuple[float, Any]:
        prediction, h_n = model.forward(inputs[w], h)
        loss, d_prediction = loss_fn(prediction, targets[w])
        model.backward(d_prediction)
        return loss, h_n

    losses, h = window_loop(
        windows,
        total,
        inputs.shape[1],
        state,
        train_window,
        model.zero_grad,
        None if max_grad_norm is None else lambda: clip_grad_norm(grads, max_grad_norm),
        optimizer.step,
        None if callback is None else lambda *progress: callback(Progress(*progress)),
    )
    return TBPTTResult(losses, h)
