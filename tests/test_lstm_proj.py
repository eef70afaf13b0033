"""The compiled LSTM with a projection (proj_size: h[t] = (o * tanh(c[t])) @ w_hr.T), called
directly, on the paths its per-step products and weight gradients take.

The projection's two per-step products (forward h = m @ w_hr.T, backward dm = d_out @ w_hr)
run on the step products of w_hh's rule (dot form, small, panel, BLAS), and with a helper
thread dw_hr is summed in dw_hh's chunks. So: every forced product at every SIMD level, batches
on both sides of the dot form's limit, projections narrower and wider than the cell, the helper
on and off, against the NumPy reference (float64 1e-12, float32 1e-5), torch.nn.LSTM
(proj_size, float64 1e-10) and central finite differences; bit for bit the same whichever
thread ran which chunk and whatever BLAS's thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    assert_close,
    blas_threads,
    compiled_kernels,
    finite_difference_gradient,
    results_under_contention,
    runnable_simd_levels,
)

from rnnfast import _reference

pytestmark = pytest.mark.usefixtures("compiled")

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
PRODUCTS = ("auto", "blas", "small", "panel")
NAMES = ("h", "c", "gates", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db", "dw_hr")
# (T, B, D, H, P): T = 1; B = 1 (dot form or small product); batches below and above the dot
# form's limit (step_dot_max_batch, 16); P = 1, P odd, P not a multiple of a vector, P > H;
# Hc and P wide enough for the panel product's several panels.
SIZES = [
    (1, 1, 3, 5, 2),
    (7, 1, 4, 9, 4),
    (6, 3, 5, 17, 1),
    (5, 8, 6, 33, 16),
    (4, 20, 7, 24, 13),
    (3, 40, 6, 48, 40),
    (4, 2, 3, 6, 11),
    (3, 17, 5, 70, 35),
]


def problem(seed, T, B, D, H, P, dtype, h0=True, dc=True):
    """x, h0 (B, P), c0, w_ih (4H, D), w_hh (4H, P), b (4H,), w_hr (P, H), dh (T, B, P), dc."""
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(H)
    a = {
        "x": rng.standard_normal((T, B, D)),
        "h0": rng.standard_normal((B, P)) if h0 else None,
        "c0": rng.standard_normal((B, H)) if h0 else None,
        "w_ih": rng.uniform(-s, s, (4 * H, D)) * 2,
        "w_hh": rng.uniform(-s, s, (4 * H, P)) * 2,
        "b": rng.uniform(-s, s, 4 * H),
        "w_hr": rng.uniform(-s, s, (P, H)) * 2,
        "dh": rng.standard_normal((T, B, P)),
        "dc": rng.standard_normal((T, B, H)) if dc else None,
    }
    return {k: None if v is None else np.ascontiguousarray(v, dtype) for k, v in a.items()}


def run(p, impl=None):
    """Forward (training) and backward: the ten arrays of NAMES."""
    k = compiled_kernels() if impl is None else impl
    h, c, gates = k.lstm_forward(
        p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b"], p["w_hr"], True
    )
    activations = gates.copy()  # the compiled backward writes its gradients over them
    grads = k.lstm_backward(
        p["dh"], p["dc"], p["x"], p["h0"], p["c0"], h, c, gates, p["w_ih"], p["w_hh"], p["w_hr"]
    )
    return (h, c, activations, *grads)


def reference(p):
    return run({n: None if a is None else a.astype(np.float64) for n, a in p.items()}, _reference)


def check(got, want, tol, what=""):
    for name, a, e in zip(NAMES, got, want, strict=True):
        assert_close(a, e, tol, f"{what}{name}")


def assert_identical(got, want, what=""):
    for name, a, e in zip(NAMES, got, want, strict=True):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}{name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_every_product_and_simd_level_matches_the_reference(size, dtype):
    k = compiled_kernels()
    p = problem(sum(size), *size, dtype)
    want = reference(p)
    previous = k.simd_level()
    try:
        for level in runnable_simd_levels():
            k.set_simd_level(level)
            for product in PRODUCTS:
                with k.tuned(step_product=product):
                    got = run(p)
                for a in got:
                    assert a.dtype == dtype
                check(got, want, TOL[np.dtype(dtype)], f"{level} {product}: ")
    finally:
        k.set_simd_level(previous)


@pytest.mark.parametrize("variant", ["zeros", "no_dc"])
def test_optional_operands(variant):
    p = problem(3, 6, 20, 5, 24, 12, np.float64, h0=variant != "zeros", dc=variant != "no_dc")
    check(run(p), reference(p), 1e-12)


@pytest.mark.parametrize("overlap", ["on", "off"])
@pytest.mark.parametrize("product", ["small", "panel", "blas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_helper_on_and_off(overlap, product, dtype):
    """Chunks of 2 steps (16 rows at B = 8): with the helper, dw_hr is summed chunk by chunk
    beside the loop, its o * tanh(c) rebuilt a chunk at a time."""
    k = compiled_kernels()
    p = problem(7, 23, 8, 9, 20, 10, dtype)
    k.reset_thread_stats()
    with k.tuned(step_product=product, overlap=overlap, overlap_chunk_rows=16):
        got = run(p)
    check(got, reference(p), TOL[np.dtype(dtype)])
    started = k.thread_stats()["helpers_started"]
    if overlap == "off" or product == "blas":  # BLAS steps: no helper
        assert started == 0
    elif k.thread_stats()["available_cpus"] >= 2:
        assert started > 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("product", ["small", "panel"])
def test_bit_identical_whatever_thread_ran_what(product, dtype):
    """With the chunks fixed by the tuning, the bits do not depend on which thread ran which
    chunk (dw_hr's included): calls alone, beside a busy thread, and two calls at once in two
    threads (one of them starting its own helper), with BLAS allowed 1 or 2 threads."""
    k = compiled_kernels()
    p = problem(2, 24, 8, 16, 40, 20, dtype)
    with k.tuned(step_product=product, overlap="on", overlap_chunk_rows=16):
        expected, results = results_under_contention(lambda: run(p))
    for i, got in enumerate(results):
        assert_identical(got, expected, f"call {i}: ")


def test_bit_identical_whatever_blas_threads_without_a_helper():
    """No helper: dw_hr is one GEMM after the loop, on the BLAS threads in force."""
    k = compiled_kernels()
    p = problem(4, 12, 40, 30, 64, 32, np.float64)
    with k.tuned(overlap="off"):
        with blas_threads(1):
            expected = run(p)
        with blas_threads(2):
            assert_identical(run(p), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("size", "overlap"),
    [((6, 3, 5, 11, 4), "auto"), ((9, 20, 7, 40, 20), "on"), ((5, 40, 6, 33, 17), "off")],
    ids=["small", "helper", "gemm"],
)
def test_matches_torch(size, overlap, dtype):
    torch = pytest.importorskip("torch")
    _, _, D, H, P = size
    p = problem(12, *size, dtype)
    p["dc"][:-1] = 0  # torch gives c_n only
    lstm = torch.nn.LSTM(D, H, proj_size=P, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(p["w_ih"].astype(np.float64)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(p["w_hh"].astype(np.float64)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(p["b"].astype(np.float64)))
        lstm.bias_hh_l0.zero_()
        lstm.weight_hr_l0.copy_(torch.from_numpy(p["w_hr"].astype(np.float64)))
    x = torch.from_numpy(p["x"].astype(np.float64)).requires_grad_()
    h0 = torch.from_numpy(p["h0"].astype(np.float64))[None].requires_grad_()
    c0 = torch.from_numpy(p["c0"].astype(np.float64))[None].requires_grad_()
    out, (_, c_n) = lstm(x, (h0, c0))
    dh, dc = (torch.from_numpy(p[n].astype(np.float64)) for n in ("dh", "dc"))
    ((out * dh).sum() + (c_n[0] * dc[-1]).sum()).backward()
    want = (
        out.detach().numpy(),
        c_n[0].detach().numpy(),
        x.grad.numpy(),
        h0.grad[0].numpy(),
        c0.grad[0].numpy(),
        lstm.weight_ih_l0.grad.numpy(),
        lstm.weight_hh_l0.grad.numpy(),
        lstm.bias_ih_l0.grad.numpy(),
        lstm.weight_hr_l0.grad.numpy(),
    )
    tol = 1e-10 if dtype == np.float64 else 1e-5
    k = compiled_kernels()
    for product in PRODUCTS:
        with k.tuned(step_product=product, overlap=overlap, overlap_chunk_rows=40):
            h, c, _, dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = run(p)
        got = (h, c[-1], dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr)
        names = ("output", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db", "dw_hr")
        for name, a, e in zip(names, got, want, strict=True):
            assert_close(a, e, tol, f"{product}: {name}")


@pytest.mark.parametrize("product", ["small", "panel"])
def test_finite_differences_with_the_helper(product):
    """Every gradient of L = sum(h * dh) + sum(c * dc) by central differences, float64, with
    the projection's products forced and dw_hr summed in the helper's chunks (2 steps)."""
    k = compiled_kernels()
    p = problem(13, 5, 4, 3, 6, 5, np.float64)
    args = ("x", "h0", "c0", "w_ih", "w_hh", "b", "w_hr")
    with k.tuned(step_product=product, overlap="on", overlap_chunk_rows=8):
        grads = dict(zip(NAMES, run(p), strict=True))

        def loss():
            h, c, _ = k.lstm_forward(*(p[n] for n in args), False)
            return float((h * p["dh"]).sum() + (c * p["dc"]).sum())

        for arg in args:
            numeric = finite_difference_gradient(loss, p[arg], 1e-6)
            assert np.max(np.abs(numeric)) > 1e-2, f"d{arg} is ~0: not a meaningful check"
            assert_close(grads["d" + arg], numeric, 1e-7, "d" + arg)


def test_backward_peak_memory_is_less_than_one_workspace():
    """The backward writes its gate gradients over the forward's activations (T, B, 4H), as
    without a projection; beyond its results it holds only each step's output gradient and
    o * tanh(c) for dw_hr, (T, B, P + H), and weight-sized scratch: the forward and backward
    together at most one (T, B, 4H) workspace plus those."""
    import tracemalloc

    k = compiled_kernels()
    T, B, D, H, P = 30, 8, 16, 64, 32
    p = problem(5, T, B, D, H, P, np.float64)
    args = ("x", "h0", "c0", "w_ih", "w_hh", "b", "w_hr")
    scratch = p["w_hh"].nbytes + 2 * p["w_hr"].nbytes + 64 * 1024
    workspace, for_dw_hr = T * B * 4 * H * 8, T * B * (P + H) * 8
    for overlap in ("off", "on"):
        with k.tuned(overlap=overlap, overlap_chunk_rows=16):
            run(p)  # warm up
            tracemalloc.start()
            h, c, gates = k.lstm_forward(*(p[n] for n in args), True)
            _, forward_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            grads = k.lstm_backward(p["dh"], p["dc"], p["x"], p["h0"], p["c0"], h, c, gates,
                                    p["w_ih"], p["w_hh"], p["w_hr"])  # fmt: skip
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        results = sum(g.nbytes for g in grads if g is not None)
        assert peak - before - results <= for_dw_hr + scratch, (peak - before - results, overlap)
        assert max(forward_peak, peak) - (h.nbytes + c.nbytes) - results <= (
            workspace + for_dw_hr + scratch
        ), overlap
