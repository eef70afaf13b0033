"""The NumPy reference: the Elman RNN and BPTT written as plainly as the math.

This is the oracle of the parity tests and the fallback backend. It has the signatures of
rnnfast._kernels and, like them, expects arrays already checked by rnnfast.functional.

Terms that are not there are not computed, as in the kernels: a None h0 adds no recurrent
product at step 0, and no gradient comes from beyond the last step. With finite inputs that is
the same as multiplying zeros; with a NaN or Inf in ``w_hh`` it keeps ``0 * Inf`` from making a
NaN that the mathematics does not have, so both backends propagate non-finite values alike.
"""

from __future__ import annotations

import math

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


# --------------------------------------------------------------------------------------------
# Gated cells, PyTorch's math: LSTM gates i, f, g, o; GRU gates r, z, n with the reset applied
# after the recurrent product (b_hn inside it). Same signatures as the compiled kernels.


def _sigmoid(a: np.ndarray) -> np.ndarray:
    # exp of a non-positive argument only: no overflow warning, saturates to exactly 0 or 1.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def lstm_forward(
    x: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b: np.ndarray | None,
    w_hr: np.ndarray | None,
    training: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(h, c, gates): every step's state h (T, B, Hs) and cell c (T, B, H), and, in training,
    the gate activations i, f, g, o (T, B, 4H); h = w_hr (o * tanh(c)) with a projection."""
    T, B, _ = x.shape
    H = w_ih.shape[0] // 4
    Hs = H if w_hr is None else w_hr.shape[0]
    h = np.empty((T, B, Hs), dtype=x.dtype)
    c = np.empty((T, B, H), dtype=x.dtype)
    gates = np.empty((T, B, 4 * H), dtype=x.dtype) if training else None
    h_prev, c_prev = h0, c0  # None: zeros, whose products are not computed
    for t in range(T):
        a = x[t] @ w_ih.T
        if h_prev is not None:
            a = a + h_prev @ w_hh.T
        if b is not None:
            a = a + b
        i, f, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H]), _sigmoid(a[:, 3 * H :])
        g = np.tanh(a[:, 2 * H : 3 * H])
        c[t] = i * g if c_prev is None else f * c_prev + i * g
        m = o * np.tanh(c[t])
        h[t] = m if w_hr is None else m @ w_hr.T
        if gates is not None:
            gates[t] = np.concatenate([i, f, g, o], axis=1)
        h_prev, c_prev = h[t], c[t]
    return h, c, gates


def lstm_backward(
    dh: np.ndarray,
    dc: np.ndarray | None,
    x: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    h: np.ndarray,
    c: np.ndarray,
    gates: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    w_hr: np.ndarray | None,
) -> tuple[np.ndarray, ...]:
    """BPTT of :func:`lstm_forward`: (dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr), dw_hr None
    without a projection. dh[t], dc[t]: the gradients reaching h[t], c[t] from outside."""
    # A None c0 is zeros in df = d_c * c_prev, as in the kernels (a NaN d_c stays NaN there).
    T, B, _ = x.shape
    H = w_ih.shape[0] // 4
    dx = np.empty_like(x)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db = np.zeros(4 * H, dtype=x.dtype)
    dw_hr = None if w_hr is None else np.zeros_like(w_hr)
    dh_next = np.zeros((B, w_hh.shape[1]), dtype=x.dtype)  # from step t+1, through w_hh
    dc_next = np.zeros((B, H), dtype=x.dtype)  # from step t+1, through f
    for t in reversed(range(T)):
        i, f, g, o = (gates[t][:, k * H : (k + 1) * H] for k in range(4))
        h_prev = h0 if t == 0 else h[t - 1]
        c_prev = c0 if t == 0 else c[t - 1]
        d_h = dh[t] + dh_next
        tc = np.tanh(c[t])
        if w_hr is None:
            dm = d_h
        else:
            dw_hr += d_h.T @ (o * tc)
            dm = d_h @ w_hr
        d_c = dm * o * (1 - tc * tc) + dc_next
        if dc is not None:
            d_c = d_c + dc[t]
        da = np.concatenate(
            [
                d_c * g * i * (1 - i),
                (d_c * 0 if c_prev is None else d_c * c_prev) * f * (1 - f),
                d_c * i * (1 - g * g),
                dm * tc * o * (1 - o),
            ],
            axis=1,
        )
        dw_ih += da.T @ x[t]
        if h_prev is not None:
            dw_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx[t] = da @ w_ih
        dh_next = da @ w_hh
        dc_next = d_c * f
    return dx, dh_next, dc_next, dw_ih, dw_hh, db, dw_hr


def gru_forward(
    x: np.ndarray,
    h0: np.ndarray | None,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    training: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(h, workspace): every step's state (T, B, H), and in training r, z, n and
    w_hn h + b_hn (T, B, 4H), what the backward needs."""
    T, B, _ = x.shape
    H = w_ih.shape[0] // 3
    h = np.empty((T, B, H), dtype=x.dtype)
    ws = np.empty((T, B, 4 * H), dtype=x.dtype) if training else None
    h_prev = h0
    for t in range(T):
        gi = x[t] @ w_ih.T
        if b_ih is not None:
            gi = gi + b_ih
        gh = np.zeros((B, 3 * H), dtype=x.dtype) if h_prev is None else h_prev @ w_hh.T
        if b_hh is not None:
            gh = gh + b_hh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h[t] = (1 - z) * n if h_prev is None else (1 - z) * n + z * h_prev
        if ws is not None:
            ws[t] = np.concatenate([r, z, n, gh[:, 2 * H :]], axis=1)
        h_prev = h[t]
    return h, ws


def gru_backward(
    dh: np.ndarray,
    x: np.ndarray,
    h0: np.ndarray | None,
    h: np.ndarray,
    workspace: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_hh: np.ndarray | None,
) -> tuple[np.ndarray, ...]:
    """BPTT of :func:`gru_forward`: (dx, dh0, dw_ih, dw_hh, db_ih, db_hh), the biases'
    gradients None when the layer has none (b_hh None)."""
    T, B, _ = x.shape
    H = w_ih.shape[0] // 3
    dx = np.empty_like(x)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih = db_hh = None
    if b_hh is not None:
        db_ih, db_hh = np.zeros(3 * H, dtype=x.dtype), np.zeros(3 * H, dtype=x.dtype)
    dh_next = np.zeros((B, H), dtype=x.dtype)
    for t in reversed(range(T)):
        r, z, n, hn = (workspace[t][:, k * H : (k + 1) * H] for k in range(4))
        h_prev = h0 if t == 0 else h[t - 1]
        d_h = dh[t] + dh_next
        dan = d_h * (1 - z) * (1 - n * n)
        dar = dan * hn * r * (1 - r)
        daz = (d_h * -n if h_prev is None else d_h * (h_prev - n)) * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)
        dw_ih += dgi.T @ x[t]
        if h_prev is not None:
            dw_hh += dgh.T @ h_prev
        if db_ih is not None:
            db_ih += dgi.sum(axis=0)
            db_hh += dgh.sum(axis=0)
        dx[t] = dgi @ w_ih
        dh_next = d_h * z + dgh @ w_hh
    return dx, dh_next, dw_ih, dw_hh, db_ih, db_hh


def lstm_step(
    x: np.ndarray, h: np.ndarray | None, c: np.ndarray | None, params: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of a stack of LSTM layers, each a length-1 :func:`lstm_forward`:
    (output, h_new, c_new); params per layer (w_ih, w_hh, b_ih, b_hh, w_hr)."""
    hs, cs = [], []
    inp = x
    for k, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(params):
        b = None if b_ih is None else b_ih + b_hh
        h1, c1, _ = lstm_forward(
            inp[None], None if h is None else h[k], None if c is None else c[k],
            w_ih, w_hh, b, w_hr, False,
        )  # fmt: skip
        hs.append(h1[0])
        cs.append(c1[0])
        inp = h1[0]
    return hs[-1].copy(), np.stack(hs), np.stack(cs)


def gru_step(x: np.ndarray, h: np.ndarray | None, params: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One step of a stack of GRU layers: (output, h_new); params per layer
    (w_ih, w_hh, b_ih, b_hh)."""
    hs = []
    inp = x
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
        h1, _ = gru_forward(inp[None], None if h is None else h[k], w_ih, w_hh, b_ih, b_hh, False)
        hs.append(h1[0])
        inp = h1[0]
    return hs[-1].copy(), np.stack(hs)


def linear_cross_entropy(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    targets: np.ndarray,
    z: np.ndarray,
    dx: np.ndarray,
    dweight: np.ndarray,
    dbias: np.ndarray | None,
) -> float:
    """The mean softmax cross-entropy of x @ weight.T + bias against ``targets``; writes the
    gradient of the logits transposed into z (V, N), and dx, dweight, dbias. The logits are
    kept transposed so that the reductions over the classes run along the long axis."""
    N = x.shape[0]
    np.matmul(weight, x.T, out=z)
    if bias is not None:
        z += bias[:, None]
    columns = np.arange(N)
    row = np.max(z, axis=0, keepdims=True)
    z -= row
    target_shifted = z[targets, columns]
    np.exp(z, out=z)
    np.sum(z, axis=0, keepdims=True, out=row)
    loss = float((np.log(row[0]) - target_shifted).sum(dtype=np.float64)) / N
    z /= row  # the softmax; minus one at each target, over the count:
    z[targets, columns] -= 1
    z /= z.dtype.type(N)
    np.matmul(z.T, weight, out=dx)
    np.matmul(z, x, out=dweight)
    if dbias is not None:
        np.sum(z, axis=1, out=dbias)
    return loss


def adam_constants(
    dtype: np.dtype, lr: float, beta1: float, beta2: float, eps: float, step: int
) -> tuple[float, ...]:
    """adam_update's constants (b1, c1, b2, c2, d, eps, s) after ``step`` steps, each rounded
    to ``dtype`` as PyTorch's Adam rounds them."""
    t = np.dtype(dtype).type
    constants = (t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(math.sqrt(1 - beta2**step)),
                 t(eps), t(lr / (1 - beta1**step)))  # fmt: skip
    return tuple(float(c) for c in constants)


def adam_update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    b1: float,
    c1: float,
    b2: float,
    c2: float,
    d: float,
    eps: float,
    s: float,
) -> None:
    """Adam's update in place: m = m * b1 + g * c1, v = v * b2 + (g * c2) * g,
    p -= (m * s) / (sqrt(v) / d + eps), every constant in p's dtype."""
    t = p.dtype.type
    m *= t(b1)
    m += g * t(c1)
    v *= t(b2)
    v += (g * t(c2)) * g
    p -= (m * t(s)) / (np.sqrt(v) / t(d) + t(eps))
