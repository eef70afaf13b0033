"""Both backends' gradients match central finite differences of the loss, in float64."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from conftest import Problem, assert_close, finite_difference_gradient, make_problem

import rnnfast

EPS = 1e-6
RTOL = 1e-6
SIZE = {"T": 4, "B": 3, "D": 5, "H": 4}
# Chosen so that no relu pre-activation lies within KINK_MARGIN of 0, where the finite difference
# would straddle the kink; test_problem_is_meaningful checks that this still holds.
SEED = 8
KINK_MARGIN = 1e-2

# The gradient of each argument in RNNGrads, by the name of the argument.
GRAD_OF = {"x": "dx", "h0": "dh0", "w_ih": "dw_ih", "w_hh": "dw_hh", "b": "db"}


def problem() -> Problem:
    return make_problem(np.random.default_rng(SEED), **SIZE, dtype=np.float64)


def pre_activations(p: Problem, h: np.ndarray) -> np.ndarray:
    """a[t] = x[t] @ w_ih.T + h[t-1] @ w_hh.T + b, recomputed from the states."""
    h_prev = np.concatenate([p.h0[None], h[:-1]])
    return p.x @ p.w_ih.T + h_prev @ p.w_hh.T + p.b


def check_gradients(
    p: Problem, upstream: np.ndarray, loss: Callable[[], float], nonlinearity: str, backend: str
) -> None:
    """The analytic gradients for dh = upstream match finite differences of ``loss``."""
    h = p.forward(nonlinearity, backend)
    grads = rnnfast.rnn_backward(
        upstream, p.x, p.h0, h, p.w_ih, p.w_hh, nonlinearity=nonlinearity, backend=backend
    )
    for arg, grad_name in GRAD_OF.items():
        analytic = getattr(grads, grad_name)
        numeric = finite_difference_gradient(loss, getattr(p, arg), EPS)
        # A check against an all-zero gradient would prove little.
        assert np.max(np.abs(numeric)) > 1e-2, f"{grad_name} is ~0: not a meaningful check"
        assert_close(analytic, numeric, RTOL, grad_name)


def test_problem_is_meaningful(nonlinearity):
    """Pre-activations stay clear of relu's kink, and relu has active and inactive units."""
    p = problem()
    h = p.forward(nonlinearity, "numpy")
    a = pre_activations(p, h)
    assert np.min(np.abs(a)) > KINK_MARGIN, f"seed {SEED} puts a pre-activation near 0"
    assert 0.2 < np.mean(a > 0) < 0.8
    if nonlinearity == "relu":
        np.testing.assert_array_equal(h == 0, a < 0)


def test_gradients_match_finite_differences(backend, nonlinearity):
    p = problem()

    def loss() -> float:
        return float(np.sum(p.forward(nonlinearity, backend) * p.dh))

    check_gradients(p, p.dh, loss, nonlinearity, backend)


def test_final_state_gradient_matches_finite_differences(backend, nonlinearity):
    """A loss on the final state only: dh is zero except dh[-1] = g."""
    p = problem()
    g = p.dh[-1]
    upstream = np.zeros_like(p.dh)
    upstream[-1] = g

    def loss() -> float:
        return float(np.sum(p.forward(nonlinearity, backend)[-1] * g))

    check_gradients(p, upstream, loss, nonlinearity, backend)


@pytest.mark.parametrize("missing", ["h0", "b"])
def test_none_means_zeros(backend, nonlinearity, missing):
    """h0=None and b=None behave as zeros, and dh0 / db are still the gradients at zero."""
    p = problem()
    zeros = np.zeros_like(getattr(p, missing))
    with_zeros = replace(p, **{missing: zeros})
    without = replace(p, **{missing: None})
    h_zeros = with_zeros.forward(nonlinearity, backend)
    h_none = without.forward(nonlinearity, backend)
    assert_close(h_none, h_zeros, 1e-14, "h")
    assert_close(without.forward(nonlinearity, "numpy"), h_zeros, 1e-12, "h vs reference")
    # b is not an argument of rnn_backward: db is the same with or without it.
    g_zeros = with_zeros.backward(h_zeros, nonlinearity, backend)
    g_none = without.backward(h_none, nonlinearity, backend)
    for name, a, e in zip(rnnfast.RNNGrads._fields, g_none, g_zeros, strict=True):
        assert_close(a, e, 1e-14, name)


# ---------------------------------------------------------------------------------------------
# The gated cells: every argument's gradient of lstm_backward / gru_backward against central
# finite differences of a loss on every state (and an LSTM's every cell), in float64.

GATED_SIZE = {"T": 4, "B": 2, "D": 3, "H": 3}


def _gated_arrays(cell: str, proj: int, bias: bool) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(SEED)
    T, B, D, H = GATED_SIZE.values()
    G = (4 if cell == "lstm" else 3) * H
    S = proj or H
    a = {
        "x": rng.standard_normal((T, B, D)),
        "h0": rng.standard_normal((B, S)) * 0.5,
        "w_ih": rng.standard_normal((G, D)) * 0.6,
        "w_hh": rng.standard_normal((G, S)) * 0.6,
    }
    if cell == "lstm":
        a["c0"] = rng.standard_normal((B, H)) * 0.5
        a["b"] = rng.standard_normal(G) * 0.5 if bias else None
        a["w_hr"] = rng.standard_normal((proj, H)) * 0.6 if proj else None
        a["dh"], a["dc"] = rng.standard_normal((T, B, S)), rng.standard_normal((T, B, H))
    else:
        a["b_ih"] = rng.standard_normal(G) * 0.5 if bias else None
        a["b_hh"] = rng.standard_normal(G) * 0.5 if bias else None
        a["dh"] = rng.standard_normal((T, B, H))
    return a


@pytest.mark.parametrize(("proj", "bias"), [(0, True), (2, True), (0, False)])
def test_lstm_gradients_match_finite_differences(backend, proj, bias):
    a = _gated_arrays("lstm", proj, bias)
    args = ("x", "h0", "c0", "w_ih", "w_hh", "b", "w_hr")

    def forward(training: bool = False):
        return rnnfast.lstm_forward(*(a[k] for k in args), training=training, backend=backend)

    def loss() -> float:
        h, c, _ = forward()
        return float(np.sum(h * a["dh"]) + np.sum(c * a["dc"]))

    h, c, ws = forward(training=True)
    grads = rnnfast.lstm_backward(
        a["dh"], a["dc"], a["x"], a["h0"], a["c0"], h, c, ws, a["w_ih"], a["w_hh"], a["w_hr"],
        backend=backend,
    )  # fmt: skip
    of = {"x": "dx", "h0": "dh0", "c0": "dc0", "w_ih": "dw_ih", "w_hh": "dw_hh", "b": "db"}
    of |= {"w_hr": "dw_hr"}
    for arg, name in of.items():
        if a[arg] is None:
            continue
        numeric = finite_difference_gradient(loss, a[arg], EPS)
        assert np.max(np.abs(numeric)) > 1e-2, f"{name} is ~0: not a meaningful check"
        assert_close(getattr(grads, name), numeric, RTOL, name)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_gradients_match_finite_differences(backend, bias):
    a = _gated_arrays("gru", 0, bias)
    args = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")

    def forward(training: bool = False):
        return rnnfast.gru_forward(*(a[k] for k in args), training=training, backend=backend)

    def loss() -> float:
        return float(np.sum(forward().h * a["dh"]))

    h, ws = forward(training=True)
    grads = rnnfast.gru_backward(
        a["dh"], a["x"], a["h0"], h, ws, a["w_ih"], a["w_hh"], a["b_hh"], backend=backend
    )
    of = {"x": "dx", "h0": "dh0", "w_ih": "dw_ih", "w_hh": "dw_hh", "b_ih": "db_ih"}
    of |= {"b_hh": "db_hh"}
    for arg, name in of.items():
        if a[arg] is None:
            assert getattr(grads, name) is None
            continue
        numeric = finite_difference_gradient(loss, a[arg], EPS)
        assert np.max(np.abs(numeric)) > 1e-2, f"{name} is ~0: not a meaningful check"
        assert_close(getattr(grads, name), numeric, RTOL, name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_none_state_means_zeros(backend, cell):
    """h0 (and c0) None behave as zeros in values and gradients."""
    a = _gated_arrays(cell, 0, True)
    zeros = dict(a, h0=np.zeros_like(a["h0"]))
    none = dict(a, h0=None)
    if cell == "lstm":
        zeros["c0"], none["c0"] = np.zeros_like(a["c0"]), None
        args = ("x", "h0", "c0", "w_ih", "w_hh", "b", "w_hr")
        run = rnnfast.lstm_forward
    else:
        args = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")
        run = rnnfast.gru_forward
    out_z = run(*(zeros[k] for k in args), training=True, backend=backend)
    out_n = run(*(none[k] for k in args), training=True, backend=backend)
    assert_close(out_n[0], out_z[0], 1e-14, "h")
    if cell == "lstm":
        g_z = rnnfast.lstm_backward(
            a["dh"], a["dc"], a["x"], zeros["h0"], zeros["c0"], *out_z, a["w_ih"], a["w_hh"],
            backend=backend,
        )  # fmt: skip
        g_n = rnnfast.lstm_backward(
            a["dh"], a["dc"], a["x"], None, None, *out_n, a["w_ih"], a["w_hh"], backend=backend
        )
        fields = rnnfast.LSTMGrads._fields
    else:
        g_z = rnnfast.gru_backward(
            a["dh"], a["x"], zeros["h0"], *out_z, a["w_ih"], a["w_hh"], a["b_hh"], backend=backend
        )
        g_n = rnnfast.gru_backward(
            a["dh"], a["x"], None, *out_n, a["w_ih"], a["w_hh"], a["b_hh"], backend=backend
        )
        fields = rnnfast.GRUGrads._fields
    for name, x, e in zip(fields, g_n, g_z, strict=True):
        if e is not None:
            assert_close(x, e, 1e-14, name)
