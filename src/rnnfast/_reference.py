"""The NumPy reference: the Elman RNN and BPTT written as plainly as the math.

This is the oracle of the parity tests and the fallback backend. It has the signatures of
rnnfast._kernels and, like them, expects arrays already checked by rnnfast.functional.
"""

from __future__ import annotations

import numpy as np


def _activate(a: np.ndarray, nonlinearity: str) -> np.ndarray:
    if nonlinearity == "tanh":
        return np.tanh(a)
    if nonlinearity == "relu":
        return np.maximum(a, 0)
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _activation_grad(g: np.ndarray, h: np.ndarray, nonlinearity: str) -> np.ndarray:
    """dL/da from dL/dh, where h = act(a); written in terms of h."""
    if nonlinearity == "tanh":
        return g * (1 - h * h)
    if nonlinearity == "relu":
        return np.where(h > 0, g, 0)  # an inactive unit passes no gradient, not even inf
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def rnn_forward(
    x: np.ndarray,
    h0: np.ndarray | None,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b: np.ndarray | None,
    nonlinearity: str,
) -> np.ndarray:
    """h[t] = act(x[t] @ w_ih.T + h[t-1] @ w_hh.T + b), with h[-1] = h0 (zeros if None)."""
    T, B, _ = x.shape
    H = w_ih.shape[0]
    h = np.empty((T, B, H), dtype=x.dtype)
    h_prev = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0
    for t in range(T):
        a = x[t] @ w_ih.T + h_prev @ w_hh.T
        if b is not None:
            a = a + b
        h[t] = _activate(a, nonlinearity)
        h_prev = h[t]
    return h


def rnn_backward(
    dh: np.ndarray,
    x: np.ndarray,
    h0: np.ndarray | None,
    h: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    nonlinearity: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BPTT: returns (dx, dh0, dw_ih, dw_hh, db), the gradients summed over all steps.

    dh[t] is the gradient reaching h[t] from outside the recurrence. Walking back in time,
    the gradient at step t's pre-activation is da[t] = (dh[t] + da[t+1] @ w_hh) * act'(h[t]).
    """
    T, B, _ = x.shape
    H = w_ih.shape[0]
    h0_or_zeros = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0
    dx = np.empty_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db = np.zeros(H, dtype=x.dtype)
    da_next = np.zeros((B, H), dtype=x.dtype)  # da[t+1]; none beyond the last step
    for t in reversed(range(T)):
        da = _activation_grad(dh[t] + da_next @ w_hh, h[t], nonlinearity)
        h_prev = h[t - 1] if t > 0 else h0_or_zeros
        dw_ih += da.T @ x[t]
        dw_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx[t] = da @ w_ih
        da_next = da
    dh0 = da_next @ w_hh
    return dx, dh0, dw_ih, dw_hh, db
