"""The compiled GRU kernels (``rnnfast._core.kernels.gru_*``) against a NumPy per-step oracle
and torch.nn.GRU: the output and every gradient, on every step product, SIMD level and
overlap setting; bit-identical whatever the thread tuning; the streaming step; the GIL.

PyTorch's GRU: r = sig(W_ir x + b_ir + W_hr h + b_hr), z alike,
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import (
    RTOL,
    assert_close,
    blas_threads,
    one_cpu_then_repeated,
    results_under_contention,
    runnable_simd_levels,
)
from test_threads import main_thread_progress

import rnnfast

pytestmark = pytest.mark.usefixtures("compiled")

K = rnnfast._backend.kernels
PRODUCTS = ("auto", "blas", "small", "panel")
GRAD_NAMES = ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")


SIMD_LEVELS = runnable_simd_levels()


@contextmanager
def simd_level(level: str):
    previous = K.set_simd_level(level)
    try:
        yield
    finally:
        K.set_simd_level(previous)


# ---- the NumPy oracle: plain per-step code ---------------------------------------------------


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def oracle_forward(x, h0, w_ih, w_hh, b_ih, b_hh):
    """h (T, B, H) and the per-step values the backward needs."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    b_ih = np.zeros(3 * H) if b_ih is None else b_ih
    b_hh = np.zeros(3 * H) if b_hh is None else b_hh
    h = np.zeros((B, H)) if h0 is None else h0
    hs, saved = [], []
    for t in range(T):
        gx = x[t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = _sig(gx[:, :H] + gh[:, :H])
        z = _sig(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
        saved.append((h, r, z, n, gh[:, 2 * H :]))
        h = (1 - z) * n + z * h
        hs.append(h)
    return np.stack(hs), saved


def oracle_backward(dh, x, h0, w_ih, w_hh, b_ih, b_hh):
    """(dx, dh0, dw_ih, dw_hh, db_ih, db_hh), in float64."""
    T, B, D = x.shape
    H = w_hh.shape[1]
    _, saved = oracle_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros((T, B, D))
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih, db_hh = np.zeros(3 * H), np.zeros(3 * H)
    carry = np.zeros((B, H))
    for t in range(T - 1, -1, -1):
        h_prev, r, z, n, a = saved[t]
        d = dh[t] + carry
        dn = d * (1 - z) * (1 - n * n)
        dz = d * (h_prev - n) * z * (1 - z)
        dr = dn * a * r * (1 - r)
        da_x = np.concatenate([dr, dz, dn], axis=1)
        da_h = np.concatenate([dr, dz, r * dn], axis=1)
        dx[t] = da_x @ w_ih
        dw_ih += da_x.T @ x[t]
        dw_hh += da_h.T @ h_prev
        db_ih += da_x.sum(0)
        db_hh += da_h.sum(0)
        carry = d * z + da_h @ w_hh
    return dx, carry, dw_ih, dw_hh, db_ih, db_hh


# ---- problems --------------------------------------------------------------------------------


def make(rng, T, B, D, H, dtype=np.float64, bias=True, h0=True):
    s = 1 / np.sqrt(H)
    p = {
        "x": rng.standard_normal((T, B, D)),
        "h0": rng.standard_normal((B, H)) if h0 else None,
        "w_ih": rng.uniform(-s, s, (3 * H, D)),
        "w_hh": rng.uniform(-s, s, (3 * H, H)),
        "b_ih": rng.uniform(-s, s, 3 * H) if bias else None,
        "b_hh": rng.uniform(-s, s, 3 * H) if bias else None,
        "dh": rng.standard_normal((T, B, H)),
    }
    return {k: None if v is None else v.astype(dtype) for k, v in p.items()}


def run(p, training=True):
    h, ws = K.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], training)
    if not training:
        return h, None
    grads = K.gru_backward(p["dh"], p["x"], p["h0"], h, ws, p["w_ih"], p["w_hh"], p["b_hh"])
    return h, grads


def f64(p):
    return {k: None if v is None else v.astype(np.float64) for k, v in p.items()}


def check_oracle(p):
    """Forward and every gradient against the oracle (run on the same values in float64)."""
    dtype = p["x"].dtype
    rtol = RTOL[dtype]
    q = f64(p)
    h_ref, _ = oracle_forward(q["x"], q["h0"], q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])
    g_ref = oracle_backward(q["dh"], q["x"], q["h0"], q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])
    h, grads = run(p)
    assert h.dtype == dtype
    assert_close(h, h_ref, rtol, "h")
    assert len(grads) == 6
    for name, a, e in zip(GRAD_NAMES, grads, g_ref, strict=True):
        if name.startswith("db") and p["b_ih"] is None:
            assert a is None, name
            continue
        assert a.dtype == dtype, name
        assert_close(a, e, rtol, name)


SIZES = [
    (1, 1, 3, 5),  # T = 1, B = 1
    (7, 1, 4, 9),  # B = 1, odd H
    (6, 3, 5, 17),  # H not a multiple of any vector width
    (9, 8, 6, 20),
    (5, 33, 7, 24),  # a partial block of rows
    (4, 2, 3, 3),  # H shorter than a vector
]


def sid(size):
    return "T{}-B{}-D{}-H{}".format(*size)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("overlap", ["off", "on"])
@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("size", SIZES, ids=sid)
def test_against_oracle_every_product(size, product, overlap, dtype):
    rng = np.random.default_rng(sum(size))
    # a chunk of a step or two, so that "on" really hands chunks to the helper
    with K.tuned(step_product=product, overlap=overlap, overlap_chunk_rows=size[1]):
        for bias, h0 in ((True, True), (False, False), (True, False)):
            check_oracle(make(rng, *size, dtype=dtype, bias=bias, h0=h0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("level", SIMD_LEVELS)
@pytest.mark.parametrize("size", SIZES, ids=sid)
def test_against_oracle_every_simd_level(size, level, dtype):
    rng = np.random.default_rng(7 + sum(size))
    with simd_level(level):
        for product in ("small", "panel"):
            with K.tuned(step_product=product):
                check_oracle(make(rng, *size, dtype=dtype))


def test_overlap_on_really_uses_the_helper():
    """The control of the overlap cases: with these tunings a GRU call hands out chunks."""
    with K.tuned(step_product="panel", overlap="on", overlap_chunk_rows=8):
        assert K.gru_overlap_steps(9, 8, 6, 20, 8) == 1
    with K.tuned(step_product="blas", overlap="on"):
        assert K.gru_overlap_steps(9, 8, 6, 20, 8) == 0


def test_large_sizes_default_rules():
    """Sizes where the default rules choose the panel product with the helper thread."""
    rng = np.random.default_rng(5)
    for size in [(40, 16, 32, 96), (20, 64, 48, 128)]:
        for dtype in (np.float64, np.float32):
            check_oracle(make(rng, *size, dtype=dtype))


# ---- torch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "size", [(1, 1, 3, 5), (7, 1, 4, 9), (6, 3, 5, 17), (12, 16, 10, 33)], ids=sid
)
def test_against_torch(size, bias, dtype):
    T, B, D, H = size
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    torch.manual_seed(sum(size))
    gru = torch.nn.GRU(D, H, bias=bias, dtype=tdtype)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    dh = rng.standard_normal((T, B, H)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    out, _ = gru(xt, h0t)
    out.backward(torch.tensor(dh))

    def arr(t):
        return t.detach().numpy().copy()

    w_ih, w_hh = arr(gru.weight_ih_l0), arr(gru.weight_hh_l0)
    b_ih = arr(gru.bias_ih_l0) if bias else None
    b_hh = arr(gru.bias_hh_l0) if bias else None
    h, ws = K.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, True)
    grads = K.gru_backward(dh, x, h0, h, ws, w_ih, w_hh, b_hh)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    assert_close(h, arr(out), rtol, "h")
    expected = [
        arr(xt.grad),
        arr(h0t.grad)[0],
        arr(gru.weight_ih_l0.grad),
        arr(gru.weight_hh_l0.grad),
    ]
    expected += [arr(gru.bias_ih_l0.grad), arr(gru.bias_hh_l0.grad)] if bias else [None, None]
    for name, a, e in zip(GRAD_NAMES, grads, expected, strict=True):
        if e is None:
            assert a is None, name
        else:
            assert_close(a, e, rtol, name)


# ---- the workspace and inference ---------------------------------------------------------------


def test_workspace_layout_and_inference():
    """Training keeps (T, B, 4H) = [r, z, n, W_hn h + b_hn]; inference keeps nothing and
    gives the same h, bit for bit."""
    rng = np.random.default_rng(11)
    p = make(rng, 5, 3, 4, 6)
    h, ws = K.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], True)
    h_inf, none = K.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], False)
    assert none is None
    np.testing.assert_array_equal(h, h_inf)
    assert ws.shape == (5, 3, 24) and ws.dtype == np.float64
    _, saved = oracle_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    for t, (_, r, z, n, a) in enumerate(saved):
        assert_close(ws[t], np.concatenate([r, z, n, a], axis=1), 1e-12, f"ws[{t}]")


# ---- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("product", ["small", "panel", "blas"])
def test_bit_identical_whatever_thread_ran_what(product, dtype):
    """With the chunks fixed by the tuning, the bits do not depend on which thread ran which
    chunk: calls alone, beside a busy thread, and two calls at once in two threads (one of
    them starting its own helper), with BLAS allowed 1 or 2 threads."""
    rng = np.random.default_rng(2)
    H = 12 if product == "small" else 40  # "small" only where a row fits its registers
    p = make(rng, 24, 8, 16, H, dtype=dtype)
    with K.tuned(step_product=product, overlap="on", overlap_chunk_rows=16):
        if product != "blas":
            assert K.gru_overlap_steps(24, 8, 16, H, p["x"].itemsize) == 2
        expected, results = results_under_contention(lambda: run(p))
    for h, g in results:
        np.testing.assert_array_equal(h, expected[0])
        for name, a, e in zip(GRAD_NAMES, g, expected[1], strict=True):
            np.testing.assert_array_equal(a, e, err_msg=name)


@pytest.mark.parametrize("which", ["forward_backward", "forward", "step"])
def test_gru_kernels_release_the_gil(which):
    rng = np.random.default_rng(3)
    if which == "step":
        B, D, H = 64, 64, 256
        params = (
            (rng.standard_normal((3 * H, D)), rng.standard_normal((3 * H, H)) / H, None, None),
        )
        x = rng.standard_normal((B, D))

        def work() -> None:
            h = None
            for _ in range(100):
                _, h = K.gru_step(x, h, params)

    else:
        p = make(rng, 200, 32, 64, 256)

        def work() -> None:
            for _ in range(2):
                run(p, training=which == "forward_backward")

    with blas_threads(1):
        progress = main_thread_progress(work)
    assert progress > 0, "the main thread never ran: the GIL was held throughout"


# ---- the streaming step ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5, 40])  # dot form, and GEMM beyond step_dot_max_batch
@pytest.mark.parametrize("bias", [True, False])
def test_step_equals_forward(B, bias, dtype):
    """A stack of 2 layers stepped through T steps gives each layer's forward output."""
    rng = np.random.default_rng(B)
    T, D, H = 6, 7, 11
    p1 = make(rng, T, B, D, H, dtype=dtype, bias=bias)
    p2 = make(rng, T, B, H, H, dtype=dtype, bias=bias)
    h0 = np.stack([p1["h0"], p2["h0"]])
    out1, _ = K.gru_forward(
        p1["x"], p1["h0"], p1["w_ih"], p1["w_hh"], p1["b_ih"], p1["b_hh"], False
    )
    out2, _ = K.gru_forward(out1, p2["h0"], p2["w_ih"], p2["w_hh"], p2["b_ih"], p2["b_hh"], False)
    params = tuple((p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]) for p in (p1, p2))
    h = h0
    for t in range(T):
        output, h = K.gru_step(p1["x"][t], h, params)
        assert output.dtype == h.dtype == dtype
        assert_close(h[0], out1[t], RTOL[np.dtype(dtype)] * 10, f"layer 0, step {t}")
        assert_close(h[1], out2[t], RTOL[np.dtype(dtype)] * 10, f"layer 1, step {t}")
        np.testing.assert_array_equal(output, h[1])
    # h None is zeros
    out0, _ = K.gru_forward(
        p1["x"][:1], None, p1["w_ih"], p1["w_hh"], p1["b_ih"], p1["b_hh"], False
    )
    output, _ = K.gru_step(p1["x"][0], None, params[:1])
    assert_close(output, out0[0], RTOL[np.dtype(dtype)] * 10, "h None")


def test_step_declines_what_is_not_plain():
    rng = np.random.default_rng(0)
    p = make(rng, 1, 2, 3, 4)
    layer = (p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    x = p["x"][0]
    assert K.gru_step(x, None, (layer,)) is not None
    assert K.gru_step(x.astype(np.float32), None, (layer,)) is None  # mixed dtypes
    assert K.gru_step(x, None, ((p["w_hh"], p["w_hh"], None, None),)) is None  # w_ih shape
    assert K.gru_step(x, None, ((p["w_ih"], p["w_hh"], p["b_ih"], None),)) is None
    assert K.gru_step(x, np.zeros((1, 2, 5)), (layer,)) is None  # h shape
    assert K.gru_step(np.ones((3, 2)).T, None, (layer,)) is None  # not C-contiguous
    assert K.gru_step(x, None, ()) is None


def test_sigmoid_saturates_cleanly():
    """Large pre-activations give gates of exactly 0 or 1, no NaN, in both dtypes."""
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(1)
        p = make(rng, 3, 2, 4, 5, dtype=dtype)
        p["x"] = (p["x"] * 1e4).astype(dtype)
        h, grads = run(p)
        assert np.isfinite(h).all() and all(np.isfinite(g).all() for g in grads)


def test_forward_and_backward_peak_memory_is_one_workspace():
    """Beyond the results (h, the gradients), a training forward and its backward hold at the
    peak one (T, B, 4H) workspace: the backward writes its gate gradients over it."""
    import tracemalloc

    T, B, D, H = 30, 8, 16, 64
    p = make(np.random.default_rng(9), T, B, D, H)
    with K.tuned(overlap="off"):
        run(p)  # warm up
        tracemalloc.start()
        h, grads = run(p)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    results = h.nbytes + sum(g.nbytes for g in grads if g is not None)
    workspace = T * B * 4 * H * 8
    # plus weight-sized scratch (the packed w_hh where no result's memory can hold it) and a
    # step's (B, 3H) gradient
    extra = p["w_hh"].nbytes + B * 3 * H * 8 + 64 * 1024
    assert peak - results <= workspace + extra, (peak - results) / workspace


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_backward_writes_its_gradients_over_the_workspace(overlap):
    """The workspace's rows become [dr, dz, r dn, dn] (the oracle's gate gradients)."""
    rng = np.random.default_rng(12)
    p = make(rng, 7, 3, 4, 6)
    with K.tuned(step_product="panel", overlap=overlap, overlap_chunk_rows=3):
        h, ws = K.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], True)
        _, saved = oracle_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
        K.gru_backward(p["dh"], p["x"], p["h0"], h, ws, p["w_ih"], p["w_hh"], p["b_hh"])
    # the oracle's gradients of the pre-activations, step by step from the last
    H = 6
    carry = np.zeros((3, H))
    for t in reversed(range(7)):
        _, r, z, n, a = saved[t]
        hp = p["h0"] if t == 0 else h[t - 1]
        d = p["dh"][t] + carry
        dn = d * (1 - z) * (1 - n * n)
        dz = d * (hp - n) * z * (1 - z)
        dr = dn * a * r * (1 - r)
        assert_close(ws[t], np.concatenate([dr, dz, r * dn, dn], axis=1), 1e-12, f"ws[{t}]")
        carry = d * z + np.concatenate([dr, dz, r * dn], axis=1) @ p["w_hh"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_loop_that_catches_up_projects_the_next_chunk_with_the_same_bits(dtype):
    """A forward loop that reaches a chunk its helper is still projecting projects the next
    chunk meanwhile (_await_chunk): the path runs (thread_stats), and the outputs are the bits
    of calls that wait instead, and the reference's values. D >> H: the helper's chunks cost
    far more than the loop's steps, so the loop catches up."""
    p = make(np.random.default_rng(5), 120, 8, 1024, 8, dtype=dtype)
    with K.tuned(step_product="small", overlap="on", overlap_chunk_rows=8):
        with K.tuned(overlap_take_next_min_macs=2**62):
            expected = run(p, training=False)[0]
        K.reset_thread_stats()
        with K.tuned(overlap_take_next_min_macs=0):
            deadline = time.monotonic() + 10
            while True:  # until the loop has caught up with a running helper at least once
                results = [run(p, training=False)[0] for _ in range(5)]
                if K.thread_stats()["chunks_projected_ahead"] > 0:
                    break
                assert time.monotonic() < deadline, "the loop never projected a chunk ahead"
    for got in results:
        np.testing.assert_array_equal(got, expected)
    q = f64(p)
    ref = oracle_forward(q["x"], q["h0"], q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])[0]
    assert_close(expected, ref, RTOL[np.dtype(dtype)], "h")


# ---- the split forward: a step's gate panels (blocks of units) shared by two threads ----------

SPLIT = dict(step_product="panel", overlap="on", overlap_chunk_rows=1, split_min_step_macs=1)
WHOLE = dict(SPLIT, split_min_step_macs=2**40, split_small_max_batch=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "size, bias, h0",
    [((9, 11, 5, 37), True, True), ((6, 8, 7, 64), False, True), ((5, 3, 4, 20), True, False)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_split_forward_shares_blocks_of_units_and_keeps_the_bits(size, bias, h0, dtype):
    """A forward that shares each step's gate panels (a block of units with its r, z, n
    columns) between two threads: the oracle's values, and the same bits as whole steps on one
    thread, whichever thread took which block, alone, beside a busy thread, and with three
    calls at once; training (the projection becoming the workspace in place) and inference.
    H = 37: a last partial block; B = 11: a partial block of rows; no bias, no h0."""
    T, B, D, H = size
    p = make(np.random.default_rng(5), T, B, D, H, dtype=dtype, bias=bias, h0=h0)
    itemsize = np.dtype(dtype).itemsize
    with K.tuned(**WHOLE):
        assert K.split_panels(T, B, D, H, itemsize, gates=3) == 0
        whole = run(p)
        whole_inference = run(p, training=False)[0]
    with K.tuned(**SPLIT):
        vector = 64 if K.simd_level() == "avx512" else 32 if K.simd_level() == "avx2" else 16
        if not K.split_panels(T, B, D, H, itemsize, gates=3):
            pytest.skip("no second thread here")
        assert K.split_panels(T, B, D, H, itemsize, gates=3) == -(-H // (vector // itemsize))
        check_oracle(p)
        expected, results = results_under_contention(lambda: run(p))
        inference = [run(p, training=False)[0] for _ in range(3)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=3) as pool:
            results += list(pool.map(lambda _: run(p), range(6)))
    for h, grads in [expected, *results]:
        np.testing.assert_array_equal(h, whole[0])
        for name, a, e in zip(GRAD_NAMES, grads, whole[1], strict=True):
            np.testing.assert_array_equal(a, e, err_msg=name)
    for h in inference:
        np.testing.assert_array_equal(h, whole_inference)
    np.testing.assert_array_equal(whole_inference, whole[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_split_forward_keeps_the_workspace(dtype):
    """The training forward's workspace rows [r, z, n, W_hn h + b_hn] come out of a split
    forward (the projection's rows becoming them in place, a block of units at a time) with
    the whole steps' bits and the oracle's values; a forward fed a gathered projection (no x)
    runs whole steps, with the same bits."""
    T, B, D, H, V = 7, 12, 6, 40, 9
    rng = np.random.default_rng(8)
    p = make(rng, T, B, D, H, dtype=dtype)
    ids = rng.integers(0, V, (T, B))
    table = rng.standard_normal((V, 3 * H)).astype(dtype)
    out = {}
    for name, rules in (("whole", WHOLE), ("split", SPLIT)):
        with K.tuned(**rules):
            if name == "split" and not K.split_panels(T, B, D, H, table.itemsize, gates=3):
                pytest.skip("no second thread here")
            out[name] = (
                K.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], True),
                K.gru_forward_gathered(ids, table, p["h0"], p["w_hh"], p["b_ih"], p["b_hh"], True),
            )
    for name, a, b in zip(("x", "gathered"), out["whole"], out["split"], strict=True):
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"{name}: h")
        np.testing.assert_array_equal(a[1], b[1], err_msg=f"{name}: workspace")
    ws = out["split"][0][1]
    _, saved = oracle_forward(*(f64(p)[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")))
    for t, (_, r, z, n, a) in enumerate(saved):
        assert_close(ws[t], np.concatenate([r, z, n, a], axis=1), RTOL[np.dtype(dtype)], f"ws[{t}]")


def test_split_rule_for_the_gru_forward():
    """The GRU forward splits its steps' blocks of units under the LSTM's rule (from
    split_min_step_macs multiply-adds a step, B * 3H * H)."""
    if not K.overlap_steps(50, 64, 512, 512, 4):
        pytest.skip("no helper thread here (one CPU available)")
    vector = {"avx512": 16, "avx2": 8}.get(K.simd_level(), 4)
    assert K.split_panels(50, 64, 512, 512, 4, gates=3) == 512 // vector
    assert K.split_panels(50, 64, 1024, 1024, 4, gates=3) == 1024 // vector
    assert K.split_panels(100, 32, 128, 256, 4, gates=3) > 0  # 6.3M multiply-adds a step
    assert K.split_panels(100, 8, 64, 128, 4, gates=3) == 0  # 0.4M


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", [(7, 13, 33, 100), (7, 13, 33, 99), (9, 11, 17, 37)],
                         ids=lambda s: "x".join(map(str, s)))
def test_projection_bits_do_not_depend_on_the_path(size, dtype):
    """The input projection's GEMMs cut the steps the same way whatever the threads: a split,
    and the whole steps its call runs when the helper is declined (one CPU, another call, a
    late helper); whole steps with a helper and without. OpenBLAS's last bits of an output
    depend on the shape of the call that computed it (its edge kernels: 3H not a multiple of
    its 16 or 8 columns), so a split that projected in other chunks than its declined call's
    whole steps gave other bits at the last columns, from run to run."""
    T, B, D, H = size
    p = make(np.random.default_rng(3), T, B, D, H, dtype=dtype)
    itemsize = np.dtype(dtype).itemsize

    def forward():
        return K.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], True)

    auto = dict(overlap="auto", overlap_min_macs=0)  # a helper where two CPUs are
    whole, split = dict(WHOLE, **auto), dict(SPLIT, split_chunk_rows=2 * B, **auto)
    with K.tuned(**split):
        if not K.split_panels(T, B, D, H, itemsize, gates=3):
            pytest.skip("no second thread here")
    for rules, calls in ((whole, 5), (split, 20)):
        expected, results = one_cpu_then_repeated(K, rules, forward, lambda _: forward(), calls)
        for i, got in enumerate(results):
            for name, a, e in zip(("h", "workspace"), got, expected, strict=True):
                np.testing.assert_array_equal(a, e, err_msg=f"call {i}: {name}")
