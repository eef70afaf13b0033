"""The compiled LSTM kernels (rnnfast._core.kernels.lstm_*), called directly.

Against a short NumPy per-step oracle (below) and torch.nn.LSTM: values and every gradient, in
float64 and float32, over sizes that take every path of the pointwise loops (B = 1, T = 1, H
odd and not a multiple of any vector width), every forced step product, every SIMD level this
CPU has, the helper thread on and off; results bit for bit the same whatever the threads; the
streaming step against the forward; the GIL released.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import (
    assert_close,
    compiled_kernels,
    finite_difference_gradient,
    one_cpu_then_repeated,
    runnable_simd_levels,
)

pytestmark = pytest.mark.usefixtures("compiled")

# (T, B, D, H): T = 1, B = 1, H odd / below and between vector widths, batches that take the
# small and the panel products under the auto rule.
SIZES = [(1, 1, 3, 5), (7, 1, 4, 9), (5, 3, 6, 17), (9, 4, 5, 33), (6, 8, 7, 64), (4, 2, 3, 1)]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
PRODUCTS = ("blas", "small", "panel")


def sig(z):
    return 1 / (1 + np.exp(-z))


def oracle(x, h0, c0, w_ih, w_hh, b, dh, dc):
    """Per-step float64 forward and BPTT: (h, c, acts, dx, dh0, dc0, dw_ih, dw_hh, db)."""
    x, w_ih, w_hh = (np.asarray(a, np.float64) for a in (x, w_ih, w_hh))
    T, B, _ = x.shape
    H = w_hh.shape[1]
    b = np.zeros(4 * H) if b is None else np.asarray(b, np.float64)
    hp = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
    cp = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
    hs, cs, acts, hprev, cprev = [], [], [], [], []
    for t in range(T):
        z = x[t] @ w_ih.T + hp @ w_hh.T + b
        i, f, o = sig(z[:, :H]), sig(z[:, H:2 * H]), sig(z[:, 3 * H:])
        g = np.tanh(z[:, 2 * H:3 * H])
        c = f * cp + i * g
        h = o * np.tanh(c)
        hprev.append(hp)
        cprev.append(cp)
        hs.append(h)
        cs.append(c)
        acts.append(np.concatenate([i, f, g, o], axis=1))
        hp, cp = h, c
    dx = np.zeros_like(x)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros(4 * H)
    dh_next, dc_next = np.zeros((B, H)), np.zeros((B, H))
    for t in reversed(range(T)):
        i, f, g, o = np.split(acts[t], 4, axis=1)
        dht = dh[t] + dh_next
        tc = np.tanh(cs[t])
        dct = dc_next + dht * o * (1 - tc**2) + (0 if dc is None else dc[t])
        dz = np.concatenate([dct * g * i * (1 - i), dct * cprev[t] * f * (1 - f),
                             dct * i * (1 - g**2), dht * tc * o * (1 - o)], axis=1)
        dx[t] = dz @ w_ih
        dw_ih += dz.T @ x[t]
        dw_hh += dz.T @ hprev[t]
        db += dz.sum(0)
        dh_next, dc_next = dz @ w_hh, dct * f
    return (np.stack(hs), np.stack(cs), np.stack(acts), dx, dh_next, dc_next, dw_ih, dw_hh, db)


def problem(rng, T, B, D, H, dtype, h0=True, bias=True, dc=True):
    s = 1 / np.sqrt(H)
    a = {
        "x": rng.standard_normal((T, B, D)),
        "h0": rng.standard_normal((B, H)) if h0 else None,
        "c0": rng.standard_normal((B, H)) if h0 else None,
        "w_ih": rng.uniform(-s, s, (4 * H, D)) * 2,
        "w_hh": rng.uniform(-s, s, (4 * H, H)) * 2,
        "b_ih": rng.uniform(-s, s, 4 * H) if bias else None,
        "b_hh": rng.uniform(-s, s, 4 * H) if bias else None,
        "dh": rng.standard_normal((T, B, H)),
        "dc": rng.standard_normal((T, B, H)) if dc else None,
    }
    return {k: None if v is None else np.ascontiguousarray(v, dtype) for k, v in a.items()}


def folded(p):
    return None if p["b_ih"] is None else p["b_ih"] + p["b_hh"]


def run(p, training=True):
    k = compiled_kernels()
    h, c, gates = k.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], folded(p),
                                 None, training)
    if not training:
        return (h, c, gates)
    activations = gates.copy()  # the backward writes its gradients over them
    grads = k.lstm_backward(p["dh"], p["dc"], p["x"], p["h0"], p["c0"], h, c, gates,
                            p["w_ih"], p["w_hh"], None)
    return (h, c, activations, *grads)


NAMES = ("h", "c", "gates", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db")


def check_against_oracle(p, got, tol):
    want = oracle(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], folded(p), p["dh"], p["dc"])
    for name, a, e in zip(NAMES, got, want, strict=False):
        assert a.dtype == p["x"].dtype, name
        assert_close(a, e, tol, name)
    assert got[-1] is None  # dw_hr


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_values_and_gradients_match_the_oracle_on_every_product_and_simd_level(size, dtype):
    k = compiled_kernels()
    p = problem(np.random.default_rng(sum(size)), *size, dtype)
    previous = k.simd_level()
    try:
        for level in runnable_simd_levels():
            k.set_simd_level(level)
            for product in PRODUCTS:
                with k.tuned(step_product=product):
                    check_against_oracle(p, run(p), TOL[dtype])
    finally:
        k.set_simd_level(previous)


@pytest.mark.parametrize("variant", ["no_h0_no_bias", "no_dc", "all"])
def test_optional_operands(variant):
    p = problem(np.random.default_rng(5), 6, 3, 4, 11, np.float64,
                h0=variant != "no_h0_no_bias", bias=variant != "no_h0_no_bias",
                dc=variant != "no_dc")
    check_against_oracle(p, run(p), 1e-12)


@pytest.mark.parametrize("overlap", ["on", "off"])
@pytest.mark.parametrize("product", ["small", "panel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_helper_thread_on_and_off(overlap, product, dtype):
    """Chunks of 8 rows: the helper projects ahead and takes the weight gradients' chunks."""
    k = compiled_kernels()
    p = problem(np.random.default_rng(7), 23, 4, 9, 13, dtype)
    with k.tuned(step_product=product, overlap=overlap, overlap_chunk_rows=8):
        assert (k.overlap_steps(23, 4, 9, 13, np.dtype(dtype).itemsize) > 0) == (overlap == "on")
        first = run(p)
        check_against_oracle(p, first, TOL[dtype])
        for _ in range(3):  # the same bits whichever thread took which chunk
            for name, a, e in zip(NAMES, run(p), first, strict=False):
                np.testing.assert_array_equal(a, e, err_msg=name)


def torch_lstm(p):
    """torch.nn.LSTM (float64) on p: (output, c_n, grads of x, h0, c0, w_ih, w_hh, b_ih),
    with dc only at the last step (torch returns c_n alone)."""
    D, H = p["x"].shape[2], p["w_hh"].shape[1]
    lstm = torch.nn.LSTM(D, H, bias=p["b_ih"] is not None, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(p["w_ih"].astype(np.float64)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(p["w_hh"].astype(np.float64)))
        if p["b_ih"] is not None:
            lstm.bias_ih_l0.copy_(torch.from_numpy(p["b_ih"].astype(np.float64)))
            lstm.bias_hh_l0.copy_(torch.from_numpy(p["b_hh"].astype(np.float64)))
    x = torch.from_numpy(p["x"].astype(np.float64)).requires_grad_()
    h0 = torch.from_numpy(p["h0"].astype(np.float64))[None].requires_grad_()
    c0 = torch.from_numpy(p["c0"].astype(np.float64))[None].requires_grad_()
    out, (_, c_n) = lstm(x, (h0, c0))
    loss = (out * torch.from_numpy(p["dh"].astype(np.float64))).sum()
    loss = loss + (c_n[0] * torch.from_numpy(p["dc"][-1].astype(np.float64))).sum()
    loss.backward()
    return (out.detach().numpy(), c_n[0].detach().numpy(), x.grad.numpy(), h0.grad[0].numpy(),
            c0.grad[0].numpy(), lstm.weight_ih_l0.grad.numpy(), lstm.weight_hh_l0.grad.numpy(),
            lstm.bias_ih_l0.grad.numpy(), lstm.bias_hh_l0.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", [(1, 1, 3, 5), (8, 3, 6, 17), (10, 16, 12, 40)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_torch(size, dtype):
    k = compiled_kernels()
    p = problem(np.random.default_rng(11), *size, dtype)
    p["dc"][:-1] = 0  # torch gives c_n only
    want = torch_lstm(p)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for product in PRODUCTS:
        with k.tuned(step_product=product):
            h, c, _, dx, dh0, dc0, dw_ih, dw_hh, db, _ = run(p)
        got = (h, c[-1], dx, dh0, dc0, dw_ih, dw_hh, db, db)
        names = ("output", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")
        for name, a, e in zip(names, got, want, strict=True):
            assert_close(a, e, tol, f"{product}: {name}")


def test_inference_keeps_nothing_and_equals_training():
    p = problem(np.random.default_rng(2), 5, 3, 4, 7, np.float64)
    h, c, gates = run(p, training=False)
    assert gates is None
    ht, ct, gates_t = run(p)[:3]
    np.testing.assert_array_equal(h, ht)
    np.testing.assert_array_equal(c, ct)
    assert gates_t.shape == (5, 3, 28)
    # the workspace holds the activations: sigmoid gates in (0, 1), g in (-1, 1)
    i, f, g, o = np.split(gates_t, 4, axis=2)
    assert np.all((i > 0) & (i < 1) & (f > 0) & (f < 1) & (o > 0) & (o < 1))
    assert np.all(np.abs(g) < 1)


def projected(rng, T, B, D, H, P, dtype, h0=True):
    """A problem with a projection: w_hr (P, H), w_hh (4H, P), h0 and dh with P features."""
    p = problem(rng, T, B, D, H, dtype, h0=h0)
    s = 1 / np.sqrt(H)
    p["w_hh"] = np.ascontiguousarray(rng.uniform(-s, s, (4 * H, P)) * 2, dtype)
    p["w_hr"] = np.ascontiguousarray(rng.uniform(-s, s, (P, H)) * 2, dtype)
    p["dh"] = np.ascontiguousarray(rng.standard_normal((T, B, P)), dtype)
    if h0:
        p["h0"] = np.ascontiguousarray(rng.standard_normal((B, P)), dtype)
    return p


def run_projected(p, impl=None):
    k = compiled_kernels() if impl is None else impl
    h, c, gates = k.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], folded(p),
                                 p["w_hr"], True)
    activations = gates.copy()  # the backward writes its gradients over them
    grads = k.lstm_backward(p["dh"], p["dc"], p["x"], p["h0"], p["c0"], h, c, gates,
                            p["w_ih"], p["w_hh"], p["w_hr"])
    return (h, c, activations, *grads)


PROJ_NAMES = ("h", "c", "gates", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db", "dw_hr")
# (T, B, D, H, P): B = 1 (the dot-form projection), B = 40 (its GEMM), P = 1, T = 1.
PROJ_SIZES = [(1, 1, 3, 5, 2), (7, 1, 4, 9, 4), (6, 3, 5, 17, 1), (5, 40, 6, 12, 7)]


@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zeros"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", PROJ_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_projection_matches_the_reference_on_every_product(size, dtype, h0):
    from rnnfast import _reference

    k = compiled_kernels()
    p = projected(np.random.default_rng(sum(size)), *size, dtype, h0=h0)
    q = {n: None if a is None else a.astype(np.float64) for n, a in p.items()}
    want = run_projected(q, _reference)
    for product in PRODUCTS:
        with k.tuned(step_product=product):
            got = run_projected(p)
        for name, a, e in zip(PROJ_NAMES, got, want, strict=True):
            assert a.dtype == p["x"].dtype, name
            assert_close(a, e, TOL[dtype], f"{product}: {name}")


@pytest.mark.parametrize("overlap", ["on", "off"])
@pytest.mark.parametrize("product", ["small", "panel"])
def test_projection_with_the_helper_thread_is_the_same_bits(overlap, product):
    from rnnfast import _reference

    k = compiled_kernels()
    p = projected(np.random.default_rng(8), 23, 4, 9, 13, 5, np.float64)
    with k.tuned(step_product=product, overlap=overlap, overlap_chunk_rows=8):
        first = run_projected(p)
        for name, a, e in zip(PROJ_NAMES, first, run_projected(p, _reference), strict=True):
            assert_close(a, e, 1e-12, name)
        for _ in range(3):
            for name, a, e in zip(PROJ_NAMES, run_projected(p), first, strict=True):
                np.testing.assert_array_equal(a, e, err_msg=name)


def test_projection_matches_torch():
    rng = np.random.default_rng(12)
    T, B, D, H, P = 6, 3, 5, 11, 4
    p = projected(rng, T, B, D, H, P, np.float64)
    lstm = torch.nn.LSTM(D, H, proj_size=P, dtype=torch.float64)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"):
            key = {"weight_ih_l0": "w_ih", "weight_hh_l0": "w_hh", "bias_ih_l0": "b_ih",
                   "bias_hh_l0": "b_hh", "weight_hr_l0": "w_hr"}[name]
            getattr(lstm, name).copy_(torch.from_numpy(p[key]))
    x = torch.from_numpy(p["x"]).requires_grad_()
    h0 = torch.from_numpy(p["h0"])[None].requires_grad_()
    c0 = torch.from_numpy(p["c0"])[None].requires_grad_()
    out, (_, c_n) = lstm(x, (h0, c0))
    loss = (out * torch.from_numpy(p["dh"])).sum() + (c_n[0] * torch.from_numpy(p["dc"][-1])).sum()
    loss.backward()
    p["dc"][:-1] = 0
    h, c, _, dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = run_projected(p)
    got = (h, c[-1], dx, dh0, dc0, dw_ih, dw_hh, db, db, dw_hr)
    want = (out.detach().numpy(), c_n[0].detach().numpy(), x.grad.numpy(), h0.grad[0].numpy(),
            c0.grad[0].numpy(), lstm.weight_ih_l0.grad.numpy(), lstm.weight_hh_l0.grad.numpy(),
            lstm.bias_ih_l0.grad.numpy(), lstm.bias_hh_l0.grad.numpy(),
            lstm.weight_hr_l0.grad.numpy())
    names = ("output", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr")
    for name, a, e in zip(names, got, want, strict=True):
        assert_close(a, e, 1e-10, name)


def test_projection_finite_differences():
    """dL/dw_hr and dL/dw_hh of L = sum(h * dh) + sum(c * dc), by central differences."""
    p = projected(np.random.default_rng(13), 4, 2, 3, 5, 3, np.float64)
    k = compiled_kernels()
    grads = dict(zip(PROJ_NAMES, run_projected(p), strict=True))

    def loss():
        h, c, _ = k.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], folded(p),
                                 p["w_hr"], False)
        return float((h * p["dh"]).sum() + (c * p["dc"]).sum())

    for name, grad in (("w_hr", "dw_hr"), ("w_hh", "dw_hh"), ("h0", "dh0"), ("c0", "dc0")):
        assert_close(finite_difference_gradient(loss, p[name]), grads[grad], 1e-7, name)


def test_backward_needs_the_training_gates():
    k = compiled_kernels()
    p = problem(np.random.default_rng(2), 2, 1, 3, 4, np.float64)
    h, c = run(p, training=True)[:2]
    with pytest.raises(ValueError):
        k.lstm_backward(p["dh"], None, p["x"], None, None, h, c, None, p["w_ih"], p["w_hh"],
                        None)


@pytest.mark.parametrize("B", [1, 3, 40], ids=lambda b: f"B{b}")  # 40: the GEMM step
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_step_equals_the_forward_per_step(B, dtype):
    k = compiled_kernels()
    rng = np.random.default_rng(B)
    T, D, H = 5, 6, 13
    layers = [problem(rng, T, B, D, H, dtype), problem(rng, T, B, H, H, dtype)]
    # the forward of a two-layer stack: layer 1 reads layer 0's h
    h_a, c_a, _ = k.lstm_forward(layers[0]["x"], layers[0]["h0"], layers[0]["c0"],
                                 layers[0]["w_ih"], layers[0]["w_hh"], folded(layers[0]), None,
                                 False)
    h_b, c_b, _ = k.lstm_forward(h_a, layers[1]["h0"], layers[1]["c0"], layers[1]["w_ih"],
                                 layers[1]["w_hh"], folded(layers[1]), None, False)
    params = tuple((q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"], None) for q in layers)
    h = np.stack([q["h0"] for q in layers])
    c = np.stack([q["c0"] for q in layers])
    for t in range(T):
        out, h, c = k.lstm_step(layers[0]["x"][t], h, c, params)
        assert_close(h[0], h_a[t], TOL[dtype], f"step {t} h[0]")
        assert_close(c[0], c_a[t], TOL[dtype], f"step {t} c[0]")
        assert_close(h[1], h_b[t], TOL[dtype], f"step {t} h[1]")
        assert_close(c[1], c_b[t], TOL[dtype], f"step {t} c[1]")
        np.testing.assert_array_equal(out, h[1])
    # zeros for a None state
    p = layers[0]
    out, h, c = k.lstm_step(p["x"][0], None, None, params[:1])
    h_z, c_z, _ = k.lstm_forward(p["x"][:1], None, None, p["w_ih"], p["w_hh"], folded(p), None,
                                 False)
    assert_close(h[0], h_z[0], TOL[dtype], "h from zeros")
    assert_close(c[0], c_z[0], TOL[dtype], "c from zeros")


def test_step_admission():
    k = compiled_kernels()
    p = problem(np.random.default_rng(1), 1, 2, 3, 4, np.float64)
    layer = (p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], None)
    x = p["x"][0]
    assert k.lstm_step(x, None, None, (layer,)) is not None
    assert k.lstm_step(x.astype(np.float32), None, None, (layer,)) is None  # dtype
    assert k.lstm_step(x, None, None, (layer[:4],)) is None  # a 4-tuple
    assert k.lstm_step(x, None, None, ((p["w_ih"], p["w_hh"], p["b_ih"], None, None),)) is None
    assert k.lstm_step(x, np.zeros((1, 2, 5)), None, (layer,)) is None  # h's shape
    assert k.lstm_step(x, None, np.zeros((2, 2, 4)), (layer,)) is None  # c's layers
    assert k.lstm_step(np.asfortranarray(np.zeros((2, 3))[:, :2]), None, None, (layer,)) is None
    # a projection: w_hr (P, H) with w_hh (4H, P); the state h then has P features
    w_hh_p = np.zeros((16, 2))
    proj = (p["w_ih"], w_hh_p, None, None, np.zeros((2, 4)))
    assert k.lstm_step(x, np.zeros((1, 2, 2)), np.zeros((1, 2, 4)), (proj,)) is not None
    assert k.lstm_step(x, np.zeros((1, 2, 4)), None, (proj,)) is None  # h has P features
    assert k.lstm_step(x, None, np.zeros((1, 2, 2)), (proj,)) is None  # c has H
    assert k.lstm_step(x, None, None, ((p["w_ih"], w_hh_p, None, None, None),)) is None
    assert k.lstm_step(x, None, None, ((p["w_ih"], w_hh_p, None, None, np.zeros((3, 4))),)) is None
    w_hr_square = (p["w_ih"], p["w_hh"], None, None, np.zeros((2, 4)))
    assert k.lstm_step(x, None, None, (w_hr_square,)) is None


@pytest.mark.parametrize("B", [1, 3, 40], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_projected_step_equals_the_forward_per_step(B, dtype):
    k = compiled_kernels()
    rng = np.random.default_rng(20 + B)
    T, D, H, P = 4, 6, 13, 5
    first, second = projected(rng, T, B, D, H, P, dtype), projected(rng, T, B, P, H, P, dtype)
    h_a, c_a, _ = k.lstm_forward(first["x"], first["h0"], first["c0"], first["w_ih"],
                                 first["w_hh"], folded(first), first["w_hr"], False)
    h_b, c_b, _ = k.lstm_forward(h_a, second["h0"], second["c0"], second["w_ih"],
                                 second["w_hh"], folded(second), second["w_hr"], False)
    params = tuple((q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"], q["w_hr"]) for q in (first, second))
    h = np.stack([first["h0"], second["h0"]])
    c = np.stack([first["c0"], second["c0"]])
    for t in range(T):
        out, h, c = k.lstm_step(first["x"][t], h, c, params)
        assert h.shape == (2, B, P) and c.shape == (2, B, H)
        assert_close(h[0], h_a[t], TOL[dtype], f"step {t} h[0]")
        assert_close(c[0], c_a[t], TOL[dtype], f"step {t} c[0]")
        assert_close(c[1], c_b[t], TOL[dtype], f"step {t} c[1]")
        assert_close(h[1], h_b[t], TOL[dtype], f"step {t} h[1]")
        np.testing.assert_array_equal(out, h[1])


def test_gil_released_while_a_large_forward_and_backward_run():
    """The main thread runs while the kernels run in a worker (switch interval made so long
    that a thread holding the GIL never yields it: see tests/test_threads.py)."""
    p = problem(np.random.default_rng(3), 60, 32, 64, 128, np.float64)
    started, done = threading.Event(), threading.Event()

    def work():
        started.set()
        for _ in range(2):
            run(p)
        done.set()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        worker = threading.Thread(target=work)
        worker.start()
        started.wait()
        progress = 0
        while not done.is_set():
            progress += 1
            time.sleep(0)
        worker.join()
    finally:
        sys.setswitchinterval(previous)
    assert progress > 0, "the main thread never ran: the GIL was held throughout"


def test_bit_identical_from_concurrent_threads():
    k = compiled_kernels()
    from concurrent.futures import ThreadPoolExecutor

    p = problem(np.random.default_rng(9), 30, 16, 24, 48, np.float32)
    with k.tuned(step_product="panel", overlap="on", overlap_chunk_rows=32):
        first = run(p)
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda _: run(p), range(6)))
    for result in results:
        for name, a, e in zip(NAMES, result, first, strict=False):
            np.testing.assert_array_equal(a, e, err_msg=name)


def test_forward_and_backward_peak_memory_is_one_workspace():
    """Beyond the results (h, c, the gradients), a training forward and its backward hold at
    the peak one (T, B, 4H) workspace: the backward writes its gate gradients over it."""
    import tracemalloc

    k = compiled_kernels()
    T, B, D, H = 30, 8, 16, 64
    p = problem(np.random.default_rng(9), T, B, D, H, np.float64)
    b = folded(p)
    with k.tuned(overlap="off"):
        run(p)  # warm up
        tracemalloc.start()
        h, c, gates = k.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], b, None,
                                     True)
        grads = k.lstm_backward(p["dh"], p["dc"], p["x"], p["h0"], p["c0"], h, c, gates,
                                p["w_ih"], p["w_hh"], None)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    results = h.nbytes + c.nbytes + sum(g.nbytes for g in grads if g is not None)
    workspace = T * B * 4 * H * 8
    # plus weight-sized scratch (the packed w_hh where no result's memory can hold it)
    assert peak - results <= workspace + p["w_hh"].nbytes + 64 * 1024, (peak - results) / workspace


def test_the_h1024_rows_step_on_the_panel_product():
    """Issue 19's largest row (H = 1024, B = 64): w_hh of 16 MiB (LSTM) or 12 MiB (GRU) in
    float32 is packed once a call for the panel product beside the helper thread, not repacked
    by BLAS at every step (2-4x slower under load: bench/experiments/panel_weight_ab.py)."""
    from conftest import step_product

    k = compiled_kernels()
    if not k.overlap_steps(50, 64, 512, 512, 4):  # H = 512 has the helper under either rule
        pytest.skip("no helper thread here (one CPU available)")
    for gates in (4, 3):
        assert step_product(np.zeros((gates * 1024, 1024), np.float32), 64) == "panel", gates


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", [(9, 11, 5, 37), (6, 8, 7, 64), (5, 3, 4, 20)],
                         ids=lambda s: "x".join(map(str, s)))
def test_split_forward_shares_blocks_of_units_and_keeps_the_bits(size, dtype):
    """A forward that shares each step's gate panels (blocks of units, their four gates'
    columns) between two threads: the oracle's values, and the same bits as whole steps on one
    thread, whichever thread took which block. H = 37: a last partial block; B = 11: a
    partial block of rows."""
    k = compiled_kernels()
    T, B, D, H = size
    itemsize = np.dtype(dtype).itemsize
    p = problem(np.random.default_rng(5), T, B, D, H, dtype)
    split = dict(step_product="panel", overlap="on", overlap_chunk_rows=B,
                 split_min_step_macs=1, split_chunk_rows=2 * B)
    with k.tuned(**split):
        if not k.split_panels(T, B, D, H, itemsize, gates=4):
            pytest.skip("no second thread here")
        first = run(p)
        check_against_oracle(p, first, TOL[dtype])
        for _ in range(3):
            for name, a, e in zip(NAMES, run(p), first, strict=False):
                np.testing.assert_array_equal(a, e, err_msg=name)
        inference = run(p, training=False)
        # concurrent calls: each helper steps aside or never starts, its caller takes the rest
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=3) as pool:
            for result in pool.map(lambda _: run(p), range(6)):
                for name, a, e in zip(NAMES, result, first, strict=False):
                    np.testing.assert_array_equal(a, e, err_msg=f"concurrent: {name}")
    with k.tuned(**{**split, "split_min_step_macs": 2**40, "split_small_max_batch": 0}):
        assert k.split_panels(T, B, D, H, itemsize, gates=4) == 0
        whole = run(p)
    for name, a, e in zip(NAMES, whole, first, strict=False):
        np.testing.assert_array_equal(a, e, err_msg=f"whole steps: {name}")
    np.testing.assert_array_equal(inference[0], first[0])
    np.testing.assert_array_equal(inference[1], first[1])
    assert inference[2] is None


def test_split_rule_for_the_lstm_forward():
    """The LSTM forward splits its steps' blocks of units under the Elman rule (from
    split_min_step_macs multiply-adds a step), not with a projection's product."""
    k = compiled_kernels()
    if not k.overlap_steps(50, 64, 512, 512, 4):
        pytest.skip("no helper thread here (one CPU available)")
    assert k.split_panels(50, 64, 512, 512, 4, gates=4) == 512 // 16 or k.simd_level() != "avx512"
    assert k.split_panels(100, 32, 128, 256, 4, gates=4) > 0  # 8.4M multiply-adds a step
    assert k.split_panels(100, 8, 64, 128, 4, gates=4) == 0  # 0.5M


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", [(7, 13, 33, 99), (9, 11, 17, 37), (6, 5, 9, 21)],
                         ids=lambda s: "x".join(map(str, s)))
def test_projection_bits_do_not_depend_on_the_path(size, dtype):
    """The input projection's GEMMs cut the steps the same way whatever the threads: a split,
    and the whole steps its call runs when the helper is declined (one CPU, another call, a
    late helper); whole steps with a helper and without (OpenBLAS's last bits of an output
    depend on the shape of the call: 4H not a multiple of its 16 or 8 columns). A split that
    projected in other chunks than its declined call's whole steps gave other bits at the last
    columns, from run to run."""
    k = compiled_kernels()
    T, B, D, H = size
    p = problem(np.random.default_rng(3), T, B, D, H, dtype)
    whole = dict(step_product="panel", overlap="auto", overlap_min_macs=0,  # a helper where
                 overlap_chunk_rows=1, split_min_step_macs=2**40,  # two CPUs are
                 split_small_max_batch=0)
    split = {**whole, "split_min_step_macs": 1, "split_chunk_rows": 2 * B}
    with k.tuned(**split):
        if not k.split_panels(T, B, D, H, np.dtype(dtype).itemsize, gates=4):
            pytest.skip("no second thread here")
    for rules, calls in ((whole, 5), (split, 20)):
        expected, results = one_cpu_then_repeated(
            k, rules, lambda: run(p, training=False),
            lambda i: run(p, training=i % 2 == 0)[:3], calls,
        )  # fmt: skip
        for i, got in enumerate(results):
            for name, a, e in zip(NAMES[:2], got, expected, strict=False):
                np.testing.assert_array_equal(a, e, err_msg=f"call {i}: {name}")
