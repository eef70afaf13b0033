"""functional.gathered_forward / gathered_backward: a layer fed token ids, its input
projection gathered from a table. The same numbers as the cell's plain forward and backward on
the one-hot (or embedded) input, on every backend; bad input named."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnnfast
from rnnfast import functional as F

BACKENDS = ("numpy", "cython") if rnnfast.HAVE_COMPILED else ("numpy",)
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def case(cell, dtype, T=6, B=3, V=5, H=4, seed=0, init=True, bias=True):
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    f = lambda *shape, s=1.0: (rng.standard_normal(shape) * s).astype(dtype)  # noqa: E731
    return {
        "ids": rng.integers(0, V, (T, B)),
        "w_ih": f(G, V),
        "w_hh": f(G, H, s=0.5),
        "b_ih": f(G) if bias else None,
        "b_hh": f(G) if bias else None,
        "h0": f(B, H) if init else None,
        "c0": f(B, H) if init and cell == "lstm" else None,
        "dh": f(T, B, H),
        "dc": f(T, B, H) if cell == "lstm" else None,
        "V": V,
    }


def plain(cell, c, x, w_ih):
    """The cell's own forward and backward on input x (reference backend): (states, grads as
    (dw_ih, d_states0, dw_hh, db_ih, db_hh), dx)."""
    kw = {"backend": "numpy"}
    b = None if c["b_ih"] is None else c["b_ih"] + c["b_hh"]
    if cell == "rnn":
        h = F.rnn_forward(x, c["h0"], w_ih, c["w_hh"], b, **kw)
        g = F.rnn_backward(c["dh"], x, c["h0"], h, w_ih, c["w_hh"], **kw)
        return (h,), (g.dw_ih, (g.dh0,), g.dw_hh, g.db, g.db), g.dx
    if cell == "lstm":
        h, cc, ws = F.lstm_forward(x, c["h0"], c["c0"], w_ih, c["w_hh"], b, training=True, **kw)
        g = F.lstm_backward(c["dh"], c["dc"], x, c["h0"], c["c0"], h, cc, ws, w_ih, c["w_hh"], **kw)
        return (h, cc), (g.dw_ih, (g.dh0, g.dc0), g.dw_hh, g.db, g.db), g.dx
    h, ws = F.gru_forward(x, c["h0"], w_ih, c["w_hh"], c["b_ih"], c["b_hh"], training=True, **kw)
    g = F.gru_backward(c["dh"], x, c["h0"], h, ws, w_ih, c["w_hh"], c["b_hh"], **kw)
    return (h,), (g.dw_ih, (g.dh0,), g.dw_hh, g.db_ih, g.db_hh), g.dx


def gathered(cell, c, table, backend):
    out = F.gathered_forward(
        cell, c["ids"], table, c["h0"], c["c0"], c["w_hh"], c["b_ih"], c["b_hh"], backend=backend
    )
    g = F.gathered_backward(
        cell, c["dh"], c["dc"], c["ids"], c["h0"], c["c0"], out.states, out.workspace,
        c["w_hh"], c["b_hh"], backend=backend,
    )  # fmt: skip
    return out, g


def close(actual, expected, dtype, what):
    if expected is None:
        assert actual is None, what
        return
    scale = 1 + float(np.max(np.abs(expected), initial=0))
    assert actual.dtype == dtype, what
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("options", [{}, {"init": False}, {"bias": False}, {"T": 1, "B": 1}])
def test_one_hot_equals_the_plain_call(cell, dtype, backend, options):
    """table = w_ih.T: the states of the forward on one-hot x, and d_table = dw_ih.T."""
    c = case(cell, dtype, **options)
    x = np.eye(c["V"], dtype=dtype)[c["ids"]]
    states, (dw_ih, d0, dw_hh, db_ih, db_hh), _ = plain(cell, c, x, c["w_ih"])
    out, g = gathered(cell, c, c["w_ih"].T, backend)
    for i, s in enumerate(states):
        close(out.states[i], s, dtype, f"state {i}")
    close(g.d_table, dw_ih.T, dtype, "d_table")
    for i, s in enumerate(d0):
        close(g.d_states0[i], s, dtype, f"d_states0[{i}]")
    close(g.dw_hh, dw_hh, dtype, "dw_hh")
    close(g.db_ih, None if c["b_ih"] is None else db_ih, dtype, "db_ih")
    close(g.db_hh, None if c["b_ih"] is None else db_hh, dtype, "db_hh")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_an_embedding_table_equals_the_plain_call(cell, backend):
    """table = E @ w_ih.T for x = E[ids]: dw_ih = d_table.T @ E and the input's gradient
    summed by id, dE = d_table @ w_ih."""
    dtype = np.float64
    c = case(cell, dtype, V=7, seed=1)
    E = np.random.default_rng(2).standard_normal((7, 3))
    w_ih = np.random.default_rng(3).standard_normal((c["w_ih"].shape[0], 3))
    x = E[c["ids"]]
    states, (dw_ih, _, _, _, _), dx = plain(cell, c, x, w_ih)
    out, g = gathered(cell, c, E @ w_ih.T, backend)
    close(out.states[0], states[0], dtype, "h")
    close(g.d_table.T @ E, dw_ih, dtype, "dw_ih")
    dE = np.zeros_like(E)
    np.add.at(dE, c["ids"].reshape(-1), dx.reshape(-1, 3))
    close(g.d_table @ w_ih, dE, dtype, "dE")


@pytest.mark.skipif(not rnnfast.HAVE_COMPILED, reason="the compiled kernels")
def test_compiled_forward_is_the_plain_compiled_forward_bit_for_bit():
    """The gathered rows are what the one-hot GEMM writes: every later operation the same."""
    for cell in GATES:
        c = case(cell, np.float32, T=9, B=8, V=11, H=16)
        x = np.eye(11, dtype=np.float32)[c["ids"]]
        b = c["b_ih"] + c["b_hh"]
        if cell == "rnn":
            expected = (F.rnn_forward(x, c["h0"], c["w_ih"], c["w_hh"], b),)
        elif cell == "lstm":
            expected = F.lstm_forward(x, c["h0"], c["c0"], c["w_ih"], c["w_hh"], b)[:2]
        else:
            expected = (F.gru_forward(x, c["h0"], c["w_ih"], c["w_hh"], c["b_ih"], c["b_hh"]).h,)
        out = F.gathered_forward(
            cell, c["ids"], c["w_ih"].T, c["h0"], c["c0"], c["w_hh"], c["b_ih"], c["b_hh"]
        )
        for a, e in zip(out.states, expected, strict=True):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_second_gated_backward_recomputes_its_workspace(cell, backend):
    # the compiled backwards write their gate gradients over the workspace
    c = case(cell, np.float64)
    out, g1 = gathered(cell, c, c["w_ih"].T, backend)
    g2 = F.gathered_backward(
        cell, c["dh"], c["dc"], c["ids"], c["h0"], c["c0"], out.states, out.workspace,
        c["w_hh"], c["b_hh"], backend=backend,
    )  # fmt: skip
    np.testing.assert_allclose(g2.d_table, g1.d_table, rtol=1e-12)
    np.testing.assert_allclose(g2.dw_hh, g1.dw_hh, rtol=1e-12)


def test_a_workspace_of_the_other_backend_gives_the_same_gradients():
    if len(BACKENDS) < 2:
        pytest.skip("the compiled kernels")
    for cell in GATES:
        c = case(cell, np.float64)
        out = F.gathered_forward(
            cell, c["ids"], c["w_ih"].T, c["h0"], c["c0"], c["w_hh"], c["b_ih"], c["b_hh"],
            backend="numpy",
        )  # fmt: skip
        args = (cell, c["dh"], c["dc"], c["ids"], c["h0"], c["c0"], out.states, out.workspace,
                c["w_hh"], c["b_hh"])  # fmt: skip
        a = F.gathered_backward(*args, backend="cython")
        b = F.gathered_backward(*args, backend="numpy")
        np.testing.assert_allclose(a.d_table, b.d_table, rtol=1e-11, atol=1e-13)


def call_forward(cell="gru", **changes):
    c = case(cell, np.float64)
    kw = {k: c[k] for k in ("ids", "h0", "c0", "w_hh", "b_ih", "b_hh")}
    kw["table"] = c["w_ih"].T
    kw.update(changes)
    return F.gathered_forward(
        cell, kw["ids"], kw["table"], kw["h0"], kw["c0"], kw["w_hh"], kw["b_ih"], kw["b_hh"],
        backend=kw.get("backend", "auto"), nonlinearity=kw.get("nonlinearity", "tanh"),
    )  # fmt: skip


@pytest.mark.parametrize(
    "changes, error, words",
    [
        ({"ids": np.zeros((6, 3))}, TypeError, "ids must hold integers"),
        ({"ids": np.full((6, 3), 5)}, ValueError, "ids must be in [0, 5)"),
        ({"ids": np.full((6, 3), -1)}, ValueError, "ids must be in [0, 5)"),
        ({"ids": np.zeros(6, int)}, ValueError, "ids must have 2 dimensions"),
        ({"ids": None}, TypeError, "ids"),
        ({"table": np.zeros((5, 12), int)}, TypeError, "table must have dtype float32"),
        ({"table": "a"}, TypeError, "table"),
        ({"w_hh": np.zeros((12, 5))}, ValueError, "w_hh"),
        ({"w_hh": np.zeros((8, 4))}, ValueError, "w_hh"),
        ({"w_hh": np.zeros((12, 4), np.float32)}, TypeError, "w_hh has dtype float32"),
        ({"h0": np.zeros((2, 4))}, ValueError, "h0"),
        ({"b_ih": np.zeros(11)}, ValueError, "b_ih"),
        ({"b_hh": None}, ValueError, "both be arrays or both None"),
        ({"c0": np.zeros((3, 4))}, ValueError, "c0 and dc are an LSTM's"),
        ({"backend": "fast"}, ValueError, "backend"),
        ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity"),
    ],
)
def test_bad_forward_arguments_are_named(changes, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace(")", r"\)")):
        call_forward(**changes)


def test_unknown_cell():
    c = case("gru", np.float64)
    with pytest.raises(ValueError, match="cell"):
        F.gathered_forward("elman", c["ids"], c["w_ih"].T, None, None, c["w_hh"])


def test_bad_backward_arguments_are_named():
    c = case("lstm", np.float64)
    out = call_forward("lstm")
    args = dict(
        cell="lstm",
        dh=c["dh"],
        dc=c["dc"],
        ids=c["ids"],
        h0=c["h0"],
        c0=c["c0"],
        states=out.states,
        workspace=out.workspace,
        w_hh=c["w_hh"],
        b_hh=c["b_hh"],
    )

    def call(**changes):
        return F.gathered_backward(**{**args, **changes})

    gru_ws = call_forward("gru").workspace
    with pytest.raises(TypeError, match="workspace must be what gathered_forward"):
        call(workspace=gru_ws)
    with pytest.raises(TypeError, match="workspace must be what gathered_forward"):
        call(workspace=None)
    with pytest.raises(ValueError, match="states must be"):
        call(states=out.states[:1])
    with pytest.raises(ValueError, match="dh"):
        call(dh=c["dh"][:, :2])
    with pytest.raises(ValueError, match="workspace is from a gathered_forward of sizes"):
        call(ids=c["ids"][:4], dh=c["dh"][:4], dc=c["dc"][:4],
             states=tuple(s[:4] for s in out.states))  # fmt: skip
    with pytest.raises(ValueError, match="b_hh must be None exactly when"):
        call(b_hh=None)
    with pytest.raises(ValueError, match="ids must be in"):
        call(ids=c["ids"] + 5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_kept_buffers_give_the_same_numbers_in_the_same_memory(cell):
    """Calls with a GatheredBuffers equal calls without; a second call of the same sizes
    computes in the first one's arrays (no allocation); other sizes start afresh."""
    kept = F.GatheredBuffers()
    c = case(cell, np.float64, T=5, B=4, V=6, H=8)
    table = c["w_ih"].T

    def both(c, buffers):
        args = (c["ids"], table, c["h0"], c["c0"], c["w_hh"], c["b_ih"], c["b_hh"])
        out = F.gathered_forward(cell, *args, buffers=buffers)
        g = F.gathered_backward(
            cell, c["dh"], c["dc"], c["ids"], c["h0"], c["c0"], out.states, out.workspace,
            c["w_hh"], c["b_hh"], buffers=buffers,
        )  # fmt: skip
        return [s.copy() for s in out.states], g

    plain_states, plain = both(c, None)
    first_states, first = both(c, kept)
    for a, b in zip(first_states, plain_states, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in ((first.d_table, plain.d_table), (first.dw_hh, plain.dw_hh)):
        np.testing.assert_array_equal(a, b)
    d_table = first.d_table
    second_c = case(cell, np.float64, T=5, B=4, V=6, H=8, seed=9)  # other values, same sizes
    _, second = both(second_c, kept)
    if os.environ.get("RNNFAST_BACKEND", "auto") != "numpy" and rnnfast.HAVE_COMPILED:
        assert np.shares_memory(second.d_table, d_table)
    _, expected = both(second_c, None)
    np.testing.assert_array_equal(second.d_table, expected.d_table)
    np.testing.assert_array_equal(second.d_states0[0], expected.d_states0[0])
    smaller = case(cell, np.float64, T=3, B=2, V=6, H=8, seed=10)
    smaller["w_hh"] = c["w_hh"]
    states, got = both(smaller, kept)
    _, want = both(smaller, None)
    np.testing.assert_array_equal(got.d_table, want.d_table)
    assert states[0].shape == (3, 2, 8)


def test_kept_buffers_pickle_empty_and_are_checked():
    import pickle

    kept = F.GatheredBuffers()
    c = case("gru", np.float64)
    F.gathered_forward("gru", c["ids"], c["w_ih"].T, None, None, c["w_hh"], buffers=kept)
    assert len(pickle.dumps(kept)) < 200
    with pytest.raises(TypeError, match="buffers must be a GatheredBuffers"):
        F.gathered_forward("gru", c["ids"], c["w_ih"].T, None, None, c["w_hh"], buffers={})
