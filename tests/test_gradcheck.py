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
