"""The gated streaming steps' fast paths: the compiled step against the NumPy reference at sizes
whose scratch the kernel keeps on its stack and at sizes it allocates, the layers' state
argument taken as given (a tuple) or checked (anything else), and the backend chosen per call."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import RTOL, assert_close, reference_only_run, runnable_simd_levels

import rnnfast
from rnnfast import _reference, functional

# (B, H): the kernel's scratch (LSTM B*5H, GRU B*6H elements) is on its stack up to 16 KiB,
# so B=1 H=128 float32 is on it, B=8 H=128 (and float64 at H=128) past it.
SIZES = [(1, 4), (1, 128), (8, 128), (3, 300)]


def _layers(rng, cell, D, H, L, dtype, proj=0, bias=True):
    G = 4 if cell == "lstm" else 3
    S = proj or H
    layers = []
    for k in range(L):
        d_in = D if k == 0 else S
        w = [rng.standard_normal((G * H, d_in)) * 0.3, rng.standard_normal((G * H, S)) * 0.3]
        b = [rng.standard_normal(G * H) * 0.1, rng.standard_normal(G * H) * 0.1]
        layer = [a.astype(dtype) for a in w + (b if bias else [])] + ([] if bias else [None] * 2)
        if cell == "lstm":
            layer.append((rng.standard_normal((S, H)) * 0.3).astype(dtype) if proj else None)
        layers.append(tuple(layer))
    return tuple(layers)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("B", "H"), SIZES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_matches_the_reference(cell, B, H, dtype):
    rng = np.random.default_rng(B * 1000 + H)
    D, L = 7, 2
    params = _layers(rng, cell, D, H, L, dtype)
    x = rng.standard_normal((B, D)).astype(dtype)
    h = rng.standard_normal((L, B, H)).astype(dtype)
    rtol = RTOL[np.dtype(dtype)]
    if cell == "lstm":
        c = rng.standard_normal((L, B, H)).astype(dtype)
        got = functional.lstm_step(x, h, c, params)
        want = _reference.lstm_step(x, h, c, params)
    else:
        got = functional.gru_step(x, h, params)
        want = _reference.gru_step(x, h, params)
    assert len(got) == len(want)
    for name, a, b in zip(("output", "h", "c"), got, want, strict=False):
        assert a.dtype == dtype
        assert_close(a, b, rtol, name)
    assert not np.shares_memory(got[0], got[1])  # the output is a copy of h_new[-1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_projection_step_matches_the_reference(dtype):
    rng = np.random.default_rng(5)
    params = _layers(rng, "lstm", 6, 128, 2, dtype, proj=40)
    x = rng.standard_normal((1, 6)).astype(dtype)
    h = rng.standard_normal((2, 1, 40)).astype(dtype)
    c = rng.standard_normal((2, 1, 128)).astype(dtype)
    got, want = functional.lstm_step(x, h, c, params), _reference.lstm_step(x, h, c, params)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_steps_follow_the_forward_through_the_fast_path(cell):
    # B=1 D=32 H=128 float32: the benchmarked streaming case, its scratch on the stack.
    layer = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(32, 128, num_layers=2, seed=3)
    x = np.random.default_rng(0).standard_normal((5, 1, 32)).astype(np.float32)
    out, _ = layer(x)
    state = None
    for t in range(5):
        y, state = layer.step(x[t], state)
        assert_close(y, out[t], RTOL[np.dtype(np.float32)], f"output[{t}]")


def test_lstm_step_state_checks():
    lstm = rnnfast.LSTM(3, 4, seed=0)
    x = np.ones((2, 3), np.float32)
    h = np.zeros((1, 2, 4), np.float32)
    y, (_, c1) = lstm.step(x, (h, h.copy()))
    y_list, (_, c2) = lstm.step(x, [h, h.copy()])  # a list is checked, then the same
    np.testing.assert_array_equal(y, y_list)
    np.testing.assert_array_equal(c1, c2)
    with pytest.raises(TypeError, match="hx"):
        lstm.step(x, (h, None))
    with pytest.raises(TypeError, match="hx"):
        lstm.step(x, (None, h))
    with pytest.raises(ValueError, match="hx"):
        lstm.step(x, (h, h, h))
    with pytest.raises(TypeError, match="hx"):
        lstm.step(x, h)
    with pytest.raises(ValueError, match="c"):
        lstm.step(x, (h, np.zeros((1, 2, 5), np.float32)))


def _arrays(result):
    """A step's (output, state) as a flat list of arrays (state: one array or a tuple)."""
    output, state = result
    return [output, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.skipif(reference_only_run(), reason="compares the compiled step with the reference")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_backend_is_chosen_per_call(cell, monkeypatch):
    layer = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(5, 6, seed=1, backend="numpy")
    x = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    ref = _arrays(layer.step(x))
    layer.backend = "auto"
    for a, b in zip(_arrays(layer.step(x)), ref, strict=True):
        assert_close(a, b, RTOL[np.dtype(np.float32)])
    monkeypatch.setenv("RNNFAST_BACKEND", "numpy")  # read on every call
    for a, b in zip(_arrays(layer.step(x)), ref, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- the time loop at a batch of one: the dot-form product ------------------------------------
# Where BLAS would take each step's product at B=1, the loop takes the streaming step's dot form:
# forward on w_hh as stored, or (while w_hh is at most step_sliced_max_weight_bytes) on a copy of
# w_hh.T in column slices; backward the small product on w_hh while a row of H fits in
# registers (H=100), else the dot form on a copy of w_hh.T (H=300).


@pytest.mark.skipif(reference_only_run(), reason="compares the compiled loop with the reference")
@pytest.mark.parametrize("sliced", [True, False], ids=["sliced", "dot"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [100, 300])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_batch_of_one_loops_match_the_reference(cell, H, dtype, sliced):
    from rnnfast._core import kernels

    with kernels.tuned(step_sliced_max_weight_bytes=2**20 if sliced else 0):
        _batch_of_one_matches_the_reference(kernels, cell, H, dtype, sliced)


@pytest.mark.skipif(reference_only_run(), reason="compares the compiled loop with the reference")
@pytest.mark.parametrize("level", runnable_simd_levels())
@pytest.mark.parametrize("H", [37, 100])  # a partial last vector at every level; whole ones
def test_sliced_forward_at_each_simd_level(level, H):
    """The sliced forward's transposed copy and column slices at each level's vector width."""
    from rnnfast._core import kernels

    previous = kernels.simd_level()
    try:
        kernels.set_simd_level(level)
        for dtype in (np.float32, np.float64):
            _batch_of_one_matches_the_reference(kernels, "lstm", H, dtype, True, kinds=False)
    finally:
        kernels.set_simd_level(previous)


def _batch_of_one_matches_the_reference(kernels, cell, H, dtype, sliced, kinds=True):

    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(H)
    T, D = 7, 65
    x = rng.standard_normal((T, 1, D)).astype(dtype)
    h0 = rng.standard_normal((1, H)).astype(dtype)
    w_ih = (rng.standard_normal((G * H, D)) * 0.1).astype(dtype)
    w_hh = (rng.standard_normal((G * H, H)) * 0.1).astype(dtype)
    b_ih = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    b_hh = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    dh = rng.standard_normal((T, 1, H)).astype(dtype)
    ops = kernels.step_operands(w_hh, 1, True)[0], kernels.step_operands(w_hh, 1, False)[0]
    if kinds and (cell != "rnn" or H == 300):  # (an Elman w_hh of H=100: the small product)
        assert ops[0] == (5 if sliced and w_hh.nbytes <= 2**20 else 3)  # dot, or sliced
        assert ops[1] == (1 if H == 100 else 3)  # backward: small, or dot on w_hh.T

    def run(backend):
        if cell == "rnn":
            h = functional.rnn_forward(x, h0, w_ih, w_hh, b_ih, backend=backend)
            return [h, *functional.rnn_backward(dh, x, h0, h, w_ih, w_hh, backend=backend)]
        if cell == "lstm":
            c0 = np.ones((1, H), dtype)
            h, c, ws = functional.lstm_forward(
                x, h0, c0, w_ih, w_hh, b_ih + b_hh, training=True, backend=backend
            )
            g = functional.lstm_backward(dh, None, x, h0, c0, h, c, ws, w_ih, w_hh, backend=backend)
            return [h, c, *(a for a in g if a is not None)]
        h, ws = functional.gru_forward(
            x, h0, w_ih, w_hh, b_ih, b_hh, training=True, backend=backend
        )
        g = functional.gru_backward(dh, x, h0, h, ws, w_ih, w_hh, b_hh, backend=backend)
        return [h, *g]

    for k, (got, want) in enumerate(zip(run("cython"), run("numpy"), strict=True)):
        assert_close(got, want, RTOL[np.dtype(dtype)], f"result {k}")


# ---- the split step: a batch of one shares its products' rows with the helper thread ----------


@pytest.fixture
def split_every_step():
    """Every step of one row splits (whatever its weights' size); the threshold restored after."""
    from rnnfast._core import kernels

    previous = kernels.set_step_split(0)[0]
    yield kernels
    kernels.set_step_split(previous)


@pytest.mark.skipif(reference_only_run(), reason="the compiled step's thread split")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [20, 100, 128])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_split_steps_are_bit_identical_to_steps_alone(cell, H, dtype, split_every_step):
    # H=20 and 100: parts that end past the last whole block of 16 rows.
    kernels = split_every_step
    cls = {"rnn": rnnfast.RNN, "lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell]
    layer = cls(32, H, num_layers=2, dtype=dtype, seed=7)
    x = np.random.default_rng(H).standard_normal((300, 1, 32)).astype(dtype)

    def run():
        outputs, state = [], None
        for t in range(len(x)):
            y, state = layer.step(x[t], state)
            outputs.append(y)
        return np.stack(outputs), state

    shared = kernels.set_step_split()[1]
    deadline = time.monotonic() + 10
    while True:  # until the helper took part in some steps (it may be descheduled a while)
        split = run()
        if kernels.set_step_split()[1] > shared:
            break
        assert time.monotonic() < deadline, "the step's helper thread never took part in 10 s"
        kernels.set_step_split(0)  # past any back-off a late or missing helper caused
    kernels.set_step_split(1 << 60)  # no step splits
    alone = run()
    np.testing.assert_array_equal(split[0], alone[0])
    for a, b in zip(_arrays(split), _arrays(alone), strict=True):
        np.testing.assert_array_equal(a, b)
    ref, _ = layer(x)
    assert_close(split[0], ref, RTOL[np.dtype(dtype)], "outputs against the forward")
