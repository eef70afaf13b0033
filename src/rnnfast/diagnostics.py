"""Vanishing and exploding gradients, measured.

Backpropagation through time multiplies the gradient, once per step back, by the transposed
recurrent weights and the slope of the activation: ``dL/dh[t-1] = (dL/dh[t] * act'(a[t])) @
w_hh`` (plus whatever the step's own loss adds). Over k steps that is a product of k such
factors, so the gradient shrinks or grows geometrically with the distance from the loss, at a
rate set by the spectral radius of ``w_hh`` and by how many units sit in the flat parts of the
activation (saturated tanh units, inactive ReLU units).

- :func:`gradient_norms`: the norm of dL/dh_t at every distance from a loss on the last step,
  for given weights and inputs (computed with the same BPTT kernels as training).
- :func:`decay_rate`: the per-step factor of such a curve (< 1 vanishing, > 1 exploding).
- :func:`spectral_radius`, :func:`saturation`: the two causes, measured.
- :func:`scaled_orthogonal`: recurrent weights with an exact spectral radius.
- :func:`scale_sweep` and :func:`model_diagnosis`: the measurements ``rnnfast diagnose`` prints,
  for random weights at several spectral radii or for the layers of a trained model;
  :func:`plot_gradient_norms` draws them (needs matplotlib).
- :func:`layer_gradient_norms`: the same curve for any recurrent layer, the gated cells (LSTM,
  GRU) included, through the layer's own forward and backward; :func:`model_diagnosis` uses it
  for a model built on a gated cell, and :func:`plot_cell_comparison` draws the cells side by
  side.

Example:
    >>> from rnnfast import diagnostics
    >>> rows = diagnostics.scale_sweep(hidden=64, seq_len=100, scales=(0.5, 1.0, 2.0))
    >>> [(r.label, round(r.decay_rate, 2)) for r in rows]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rnnfast import functional
from rnnfast._validation import (
    NONLINEARITIES,
    Seed,
    check_choice,
    check_finite_nonnegative,
    check_int,
    to_numpy,
)
from rnnfast.nn import RNN, Module, RNNBase

__all__ = [
    "Diagnosis",
    "GradientNorms",
    "decay_rate",
    "gradient_norms",
    "layer_gradient_norms",
    "model_diagnosis",
    "plot_cell_comparison",
    "plot_gradient_norms",
    "saturation",
    "scale_sweep",
    "scaled_orthogonal",
    "spectral_radius",
]

SATURATION_THRESHOLD = 0.99
"""|tanh| above this counts as saturated: the slope 1 - h^2 is below 0.02 there."""


class GradientNorms(NamedTuple):
    """The result of :func:`gradient_norms`."""

    distance: np.ndarray
    """(T + 1,) int: steps back from the last step, 0..T (T is the initial state h0)."""
    norm: np.ndarray
    """(T + 1,) float64: the mean over the batch of ||dL/dh|| at each distance."""
    states: np.ndarray
    """(T, B, H): the forward pass's states (for :func:`saturation`)."""


class Diagnosis(NamedTuple):
    """One curve of :func:`scale_sweep` or :func:`model_diagnosis`, with its summary."""

    label: str
    """What was measured, e.g. ``"scale 0.5"`` or ``"layer 0"``."""
    nonlinearity: str
    spectral_radius: float
    """Of the recurrent weights."""
    decay_rate: float
    """Per-step factor of the gradient norm (:func:`decay_rate`)."""
    saturation: float
    """Fraction of saturated (tanh) or inactive (ReLU) units over the forward pass."""
    norms: GradientNorms
    cell: str = "rnn"
    """The recurrent cell: ``"rnn"``, ``"lstm"`` or ``"gru"``. A gated cell's recurrent weights
    are not one square matrix and its state passes through gates, so its spectral radius and
    saturation are NaN (not measured)."""


def spectral_radius(w_hh: Any) -> float:
    """The largest absolute eigenvalue of a square matrix (e.g. ``weight_hh_l0``).

    Gradients through many steps of a linear recurrence grow or shrink like its powers: the
    spectral radius is their asymptotic per-step factor.

    Raises:
        ValueError: ``w_hh`` is not a square 2-D matrix, or holds NaN or Inf.
    """
    try:
        w = np.asarray(to_numpy(w_hh), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"w_hh must be a matrix of numbers: {exc}") from None
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"w_hh must be a square matrix (H, H), got shape {w.shape}")
    if w.size == 0:
        return 0.0
    if not np.isfinite(w).all():
        raise ValueError("w_hh holds NaN or Inf")
    return float(np.max(np.abs(np.linalg.eigvals(w))))


def saturation(
    h: Any, nonlinearity: str = "tanh", threshold: float = SATURATION_THRESHOLD
) -> float:
    """The fraction of unit activations where the activation's slope (almost) vanishes.

    For tanh, states with ``|h| > threshold`` (slope ``1 - h^2`` below ``1 - threshold^2``);
    for ReLU, states ``h <= 0`` (inactive units, slope 0). Through such units no gradient
    flows back, whatever the weights.

    Args:
        h: states of any shape, e.g. the (T, B, H) output of :func:`rnnfast.rnn_forward`.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        threshold: in (0, 1), for tanh.

    Returns:
        A fraction in [0, 1] (0.0 for an empty array).
    """
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    arr = np.asarray(h)
    if arr.size == 0:
        return 0.0
    stuck = np.abs(arr) > threshold if nonlinearity == "tanh" else arr <= 0
    return float(np.mean(stuck))


def scaled_orthogonal(
    hidden: int, scale: float, seed: Seed = None, dtype: Any = np.float64
) -> np.ndarray:
    """A random orthogonal (H, H) matrix times ``scale``: every eigenvalue and every singular
    value has modulus exactly ``scale``, so its spectral radius is ``scale`` and each step of
    a linear recurrence changes every vector's norm by exactly that factor.

    Drawn from the Haar distribution (QR of a Gaussian matrix, signs fixed by R's diagonal).
    """
    hidden = check_int("hidden", hidden, 1)
    scale = check_finite_nonnegative("scale", scale)
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    return (scale * q).astype(dtype)


def gradient_norms(
    x: Any,
    w_ih: Any,
    w_hh: Any,
    b: Any | None = None,
    *,
    h0: Any | None = None,
    nonlinearity: str = "tanh",
    seed: Seed = 0,
    backend: str = "auto",
) -> GradientNorms:
    """The norm of dL/dh_t at every distance from a loss on the last step.

    The loss is ``L = sum_b <g_b, h[T-1, b]>`` with ``g_b`` random unit vectors: a gradient of
    norm 1 enters each sequence's last state and is propagated back by BPTT, so the norm at
    distance k is how much k steps of backpropagation shrink or stretch it. The gradients come
    from :func:`rnnfast.rnn_backward` itself (the kernels training uses).

    Args:
        x: (T, B, D) inputs, time-major; w_ih (H, D), w_hh (H, H), b (H,) or None, h0 (B, H)
            or None: as in :func:`rnnfast.rnn_forward`.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        seed: of the directions ``g_b``.
        backend: of the kernels.

    Returns:
        GradientNorms(distance 0..T, norm at each distance (mean over the batch), states).
    """
    h = functional.rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity=nonlinearity, backend=backend)
    T, B, H = h.shape
    g = np.random.default_rng(seed).standard_normal((B, H))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    dh = np.zeros_like(h)
    dh[-1] = g
    # rnn_backward returns dx = da @ w_ih with da[t] = dL/d(pre-activation at t): with an
    # identity w_ih (and a dummy x, which only dw_ih sees) dx *is* da. Then
    # dL/dh[t-1] = da[t] @ w_hh, and dL/dh[T-1] = g.
    w_hh_arr = np.asarray(w_hh, dtype=h.dtype)
    grads = functional.rnn_backward(
        dh,
        np.zeros_like(h),
        h0,
        h,
        np.eye(H, dtype=h.dtype),
        w_hh_arr,
        nonlinearity=nonlinearity,
        backend=backend,
    )
    d_state = np.empty((T + 1, B, H), dtype=np.float64)  # index k: dL/dh[T-1-k]; k = T: h0
    d_state[0] = g
    d_state[1:] = (grads.dx[::-1] @ w_hh_arr).astype(np.float64)
    norms = np.linalg.norm(d_state, axis=2).mean(axis=1)
    return GradientNorms(np.arange(T + 1), norms, h)


def layer_gradient_norms(layer: RNNBase, x: Any, *, seed: Seed = 0) -> GradientNorms:
    """The norm of dL/d(state_t) at every distance from a loss on the last step, for any
    one-layer, unidirectional recurrent layer (:class:`rnnfast.RNN`, ``LSTM``, ``GRU``), through
    the layer's own forward and backward.

    The loss is that of :func:`gradient_norms` (a random unit vector ``g_b`` against each
    sequence's last output ``h[T-1, b]``). The state after step t is what the layer carries to
    step t + 1: ``h_t``, for an LSTM the pair ``(h_t, c_t)``, whose joint norm is measured (the
    memory cell c is the path the LSTM's gradients take). dL/d(state_t) is the gradient of the
    initial state of the layer rerun from that state over ``x[t+1:]``: ``dh0`` (LSTM: ``(dh0,
    dc0)``) of its ``backward`` with ``g`` into ``h_n``. That is T reruns (O(T^2) steps), a
    measurement tool rather than a training one, exact for any cell.

    Args:
        layer: the layer, ``num_layers == 1`` and not bidirectional; its mode and gradients
            are left as they were (what its next ``backward`` would use is not).
        x: (T, B, input_size) inputs, time-major, of the layer's dtype.
        seed: of the directions ``g_b`` (the same as :func:`gradient_norms` draws).

    Returns:
        GradientNorms(distance 0..T, norm (mean over the batch), the outputs h (T, B, H)).
    """
    if not isinstance(layer, RNNBase) or layer.num_layers != 1 or layer.bidirectional:
        raise ValueError("layer must be a one-layer, unidirectional recurrent layer")
    x = np.ascontiguousarray(x, dtype=layer.dtype)
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, input_size), got shape {x.shape}")
    T, B = x.shape[:2]
    was_training = layer.training
    saved = {k: v.copy() for k, v in layer.grads.items()}  # the caller's, restored after
    layer.eval()  # no dropout, as step()
    try:
        h, _ = layer(x)
        # The state after every step, as the layer carries it (an LSTM's c is not in h).
        states, state = [], None
        for t in range(T - 1):
            _, state = layer.step(x[t], state)
            states.append(state)
        H = h.shape[2]
        g = np.random.default_rng(seed).standard_normal((B, H))
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        d_h_n = g.astype(layer.dtype)[None]
        norms = np.empty(T + 1, dtype=np.float64)
        norms[0] = 1.0  # the loss's own gradient, g, into h[T-1]
        for k in range(1, T + 1):
            start = T - k  # the state before step `start`: states[start - 1], or h0 (zeros)
            s0 = states[start - 1] if start > 0 else None
            layer(x[start:], s0)
            _, d_state = layer.backward(np.zeros((k, B, H), layer.dtype), d_h_n)
            parts = d_state if isinstance(d_state, tuple) else (d_state,)
            sq = sum(np.sum(np.asarray(p, np.float64) ** 2, axis=-1) for p in parts)
            norms[k] = float(np.sqrt(sq).mean())
    finally:
        layer.train(was_training)
        for k, v in saved.items():
            layer.grads[k][...] = v
    return GradientNorms(np.arange(T + 1), norms, h)


def decay_rate(norms: GradientNorms | Sequence[float] | np.ndarray) -> float:
    """The per-step factor of a gradient-norm curve: ``exp(slope)`` of a least-squares line
    through ``log(norm)`` against the distance.

    Below 1 the gradient vanishes (0.5: it halves every step back), above 1 it explodes. A curve
    that reaches exactly 0 (every unit inactive) has rate 0; infinite or NaN norms (overflow)
    are left out of the fit.
    """
    norm = np.asarray(norms.norm if isinstance(norms, GradientNorms) else norms, np.float64)
    if norm.ndim != 1 or norm.size < 2:
        raise ValueError(f"norms must be a curve of at least 2 values, got shape {norm.shape}")
    if np.any(norm == 0):
        return 0.0
    k = np.arange(norm.size, dtype=np.float64)
    ok = np.isfinite(norm) & (norm > 0)
    if ok.sum() < 2:
        return math.nan
    slope = np.polyfit(k[ok], np.log(norm[ok]), 1)[0]
    return float(np.exp(slope))


def _diagnosis(label: str, nonlinearity: str, w_hh: np.ndarray, norms: GradientNorms):
    return Diagnosis(
        label,
        nonlinearity,
        spectral_radius(w_hh),
        decay_rate(norms),
        saturation(norms.states, nonlinearity),
        norms,
    )


def scale_sweep(
    hidden: int = 64,
    seq_len: int = 100,
    scales: Iterable[float] = (0.5, 1.0, 2.0),
    nonlinearities: Iterable[str] = ("tanh", "relu"),
    batch: int = 16,
    input_scale: float = 0.1,
    seed: Seed = 0,
    backend: str = "auto",
) -> list[Diagnosis]:
    """Gradient norms of random RNNs whose recurrent weights have each spectral radius in
    ``scales``, for each activation, on the same random inputs.

    The recurrent weights are :func:`scaled_orthogonal` (the same orthogonal matrix for every
    scale); the inputs x_t are standard normal (D = H) and the input weights Gaussian, scaled so
    that the input's part of each pre-activation, ``x_t @ w_ih.T``, has standard deviation
    ``input_scale``; no bias. A weak drive (the default) shows the linear picture: the
    gradient shrinks or grows by about the spectral radius per step. A strong drive pushes tanh
    units into saturation, where gradients vanish whatever the radius. ReLU (positively
    homogeneous, no bias) does not depend on it; as it passes gradients through only the
    active units, about half of them, its critical radius is nearer sqrt(2) than 1. Computed
    in float64, so that an exploding curve can grow far without overflowing.

    Returns:
        One :class:`Diagnosis` per (nonlinearity, scale), in that order.
    """
    hidden = check_int("hidden", hidden, 1)
    seq_len = check_int("seq_len", seq_len, 1)
    batch = check_int("batch", batch, 1)
    input_scale = check_finite_nonnegative("input_scale", input_scale)
    # Checked up front (a bad value fails before any work) and kept (one-shot iterables).
    nonlinearities = [check_choice("nonlinearity", nl, NONLINEARITIES) for nl in nonlinearities]
    scales = [check_finite_nonnegative("scales", scale) for scale in scales]
    rng = np.random.default_rng(seed)
    q = scaled_orthogonal(hidden, 1.0, rng)
    w_ih = rng.standard_normal((hidden, hidden)) * (input_scale / math.sqrt(hidden))
    x = rng.standard_normal((seq_len, batch, hidden))
    g_seed = int(rng.integers(2**32))
    rows = []
    for nl in nonlinearities:
        for scale in scales:
            w_hh = scale * q
            norms = gradient_norms(x, w_ih, w_hh, nonlinearity=nl, seed=g_seed, backend=backend)
            rows.append(_diagnosis(f"scale {scale:g}", nl, w_hh, norms))
    return rows


def model_diagnosis(
    model: Module, inputs: Any, seed: Seed = 0, backend: str = "auto"
) -> list[Diagnosis]:
    """Gradient norms through each layer of a trained model's recurrent layer.

    Args:
        model: an :class:`rnnfast.RNN` (or LSTM, GRU), or a model with one as ``model.rnn``
            (CharRNN, SequenceRegressor); unidirectional. The Elman RNN is measured with
            :func:`gradient_norms`, a gated cell with :func:`layer_gradient_norms`.
        inputs: what the RNN reads, time-major (T, B, input_size); for a CharRNN, token ids
            (T, B) are encoded as the model does (one-hot or its embedding).
        seed: of the loss directions (:func:`gradient_norms`).
        backend: of the kernels.

    Returns:
        One :class:`Diagnosis` per layer, each measured on that layer's own inputs (the states
        of the layer below, without dropout), with the loss on its last step.
    """
    rnn = model if isinstance(model, RNNBase) else getattr(model, "rnn", None)
    if not isinstance(rnn, RNNBase):
        raise TypeError(
            f"model must be an rnnfast.RNN (LSTM, GRU) or have one as .rnn, got {type(model)}"
        )
    if rnn.bidirectional:
        raise ValueError("a bidirectional RNN has no single distance from the loss")
    x = np.asarray(inputs)
    if x.dtype.kind in "iu":
        from rnnfast.models import CharRNN  # models imports this module's helpers lazily too

        if not isinstance(model, CharRNN):
            raise TypeError("integer inputs need a model with a vocabulary (a CharRNN)")
        x = model.rnn_inputs(x)  # one-hot or the model's embedding, as the model reads them
    x = np.asarray(x, dtype=rnn.dtype)
    if x.ndim != 3 or x.shape[2] != rnn.input_size:
        raise ValueError(
            f"inputs must be (T, B, {rnn.input_size}) for this RNN, got shape {x.shape}"
        )
    rows = []
    for layer in range(rnn.num_layers):
        if isinstance(rnn, RNN):
            w_ih, w_hh, b = rnn.layer_weights(layer)  # unidirectional: layer-direction = layer
            norms = gradient_norms(
                x, w_ih, w_hh, b, nonlinearity=rnn.nonlinearity, seed=seed, backend=backend
            )
            rows.append(_diagnosis(f"layer {layer}", rnn.nonlinearity, w_hh, norms))
        else:
            cell = type(rnn).__name__.lower()
            norms = layer_gradient_norms(_one_layer(rnn, layer, backend), x, seed=seed)
            rows.append(
                Diagnosis(
                    f"layer {layer}", "tanh", math.nan, decay_rate(norms), math.nan, norms, cell
                )
            )
        x = norms.states
    return rows


def _one_layer(rnn: RNNBase, k: int, backend: str) -> RNNBase:
    """Layer ``k`` of a unidirectional stack as a one-layer layer of the same cell (a copy)."""
    input_size = rnn.input_size if k == 0 else rnn.hidden_size
    one = type(rnn)(input_size, rnn.hidden_size, 1, bias=rnn.bias, dtype=rnn.dtype, backend=backend)
    sfx = f"_l{k}"
    one.load_state_dict(
        {n[: -len(sfx)] + "_l0": v for n, v in rnn.parameters().items() if n.endswith(sfx)}
    )
    return one


def plot_gradient_norms(
    rows: Sequence[Diagnosis], path: str | os.PathLike[str], title: str | None = None
) -> None:
    """Draw the gradient-norm curves on a log scale, one panel per activation, and save the
    figure to ``path`` (the format from its extension, e.g. ``.png``).

    Raises:
        ImportError: matplotlib is not installed (``pip install "rnnfast[plot]"``).
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    groups: dict[str, list[Diagnosis]] = {}
    for row in rows:
        groups.setdefault(row.nonlinearity, []).append(row)
    fig = Figure(figsize=(5.5 * max(len(groups), 1), 4.2), layout="constrained")
    axes = fig.subplots(1, max(len(groups), 1), squeeze=False, sharey=True)[0]
    for ax, (nl, group) in zip(axes, groups.items(), strict=True):
        for row in group:
            norm = row.norms.norm
            shown = np.where(norm > 0, norm, np.nan)  # log scale: zeros cannot be drawn
            ax.plot(
                row.norms.distance,
                shown,
                label=f"{row.label} (radius {row.spectral_radius:.2f}): "
                f"x{row.decay_rate:.3g} per step",
            )
        ax.set_yscale("log")
        ax.set_xlabel("distance from the loss (steps back)")
        ax.set_ylabel("mean ||dL/dh_t||")
        ax.set_title(f"{nl}: gradient norm vs distance")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


CELL_COLORS = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}


def plot_cell_comparison(
    panels: Mapping[str, Sequence[Diagnosis]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> None:
    """Draw gradient-norm curves of several cells side by side in one figure: one panel per
    entry of ``panels`` (e.g. ``"at initialization"``, ``"trained"``), one curve per row,
    colored by its cell, on a shared log scale; saved to ``path``.

    Raises:
        ImportError: matplotlib is not installed (``pip install "rnnfast[plot]"``).
    """
    from matplotlib.figure import Figure

    n = max(len(panels), 1)
    fig = Figure(figsize=(5.5 * n, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, (name, rows) in zip(axes, panels.items(), strict=False):
        layered = len({r.label for r in rows}) > 1
        for row in rows:
            norm = row.norms.norm
            label = row.cell.upper() + (f" {row.label}" if layered else "")
            ax.plot(
                row.norms.distance,
                np.where(norm > 0, norm, np.nan),
                color=CELL_COLORS.get(row.cell),
                ls="-" if row.label.endswith("0") or not layered else "--",
                label=f"{label}: x{row.decay_rate:.3g} per step",
            )
        ax.set_yscale("log")
        ax.set_xlabel("distance from the loss (steps back)")
        ax.set_ylabel("mean ||dL/d state_t||")
        ax.set_title(name)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
