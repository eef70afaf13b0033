"""The NumPy reference: the Elman RNN and BPTT written as plainly as the math.

This is the oracle of the parity tests and the fallback backend. It has the signatures of
rnnfast._kernels and, like them, expects arrays already checked by rnnfast.functional.

Terms that are not there are not computed, as in the kernels: a None h0 adds no recurrent
product at step 0, and no gradient comes from beyond the last step. With finite inputs that is
the same as multiplying zeros; with a NaN or Inf in ``w_hh`` it keeps ``0 * Inf`` from making a
NaN that the mathematics does not have, so both backends propagate non-finite values alike.
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
    h_prev = h0  # None: zeros, whose product with w_hh is not computed
    for t in range(T):
        a = x[t] @ w_ih.T
        if h_prev is not None:
            a = a + h_prev @ w_hh.T
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
    dx = np.empty_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db = np.zeros(H, dtype=x.dtype)
    da_next = np.zeros((B, H), dtype=x.dtype)  # da[t+1]; none beyond the last step
    for t in reversed(range(T)):
        upstream = dh[t] if t == T - 1 else dh[t] + da_next @ w_hh
        da = _activation_grad(upstream, h[t], nonlinearity)
        dw_ih += da.T @ x[t]
        if t > 0:
            dw_hh += da.T @ h[t - 1]
        elif h0 is not None:
            dw_hh += da.T @ h0
        db += da.sum(axis=0)
        dx[t] = da @ w_ih
        da_next = da
    dh0 = da_next @ w_hh
    return dx, dh0, dw_ih, dw_hh, db


def rnn_step(
    x: np.ndarray,
    h: np.ndarray | None,
    params: tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], ...],
    nonlinearity: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of a stack of layers, each a length-1 :func:`rnn_forward`: (output, h_new)."""
    L, B, H = len(params), x.shape[0], params[0][1].shape[0]
    h_new = np.empty((L, B, H), dtype=x.dtype)
    inp = x
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
        b = None if b_ih is None else b_ih + b_hh
        h_new[k] = rnn_forward(inp[None], None if h is None else h[k], w_ih, w_hh, b, nonlinearity)[
            0
        ]
        inp = h_new[k]
    return h_new[-1].copy(), h_new
