"""A batch of one (the 25,1,65,100 row): forward + backward run in chunks of steps whose GEMMs
the helper thread takes when it may (``overlap_single_steps``, tuning.h), and in the same chunks
on the caller when it may not, so that the bits do not depend on the thread count."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import (
    RTOL,
    assert_close,
    compiled_kernels,
    reference_only_run,
    results_under_contention,
)

from rnnfast import functional

pytestmark = pytest.mark.skipif(
    reference_only_run(), reason="the compiled loops' chunks (RNNFAST_BACKEND=numpy: reference)"
)

T, B, D, H = 25, 1, 65, 100


def _problem(cell, dtype):
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    rng = np.random.default_rng(G)
    p = {
        "x": rng.standard_normal((T, B, D)),
        "h0": rng.standard_normal((B, H)),
        "c0": rng.standard_normal((B, H)),
        "w_ih": rng.standard_normal((G * H, D)) * 0.1,
        "w_hh": rng.standard_normal((G * H, H)) * 0.1,
        "b_ih": rng.standard_normal(G * H) * 0.1,
        "b_hh": rng.standard_normal(G * H) * 0.1,
        "dh": rng.standard_normal((T, B, H)),
    }
    return {name: a.astype(dtype) for name, a in p.items()}


def _run(cell, p, impl="auto"):
    """Forward + backward: (h, every gradient)."""
    if cell == "lstm":
        b = p["b_ih"] + p["b_hh"]
        out = functional.lstm_forward(
            p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], b, training=True, backend=impl
        )
        grads = functional.lstm_backward(
            p["dh"], None, p["x"], p["h0"], p["c0"], *out, p["w_ih"], p["w_hh"], backend=impl
        )
        return (out.h, out.c, *(g for g in grads if g is not None))
    if cell == "gru":
        args = (p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
        out = functional.gru_forward(*args, training=True, backend=impl)
        grads = functional.gru_backward(
            p["dh"], p["x"], p["h0"], *out, p["w_ih"], p["w_hh"], p["b_hh"], backend=impl
        )
        return (out.h, *grads)
    h = functional.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], backend=impl)
    grads = functional.rnn_backward(p["dh"], p["x"], p["h0"], h, p["w_ih"], p["w_hh"], backend=impl)
    return (h, *grads)


def test_rule_chunks_a_batch_of_one_at_any_thread_count():
    k = compiled_kernels()
    steps = k.get_tuning()["overlap_single_steps"]
    assert steps > 1
    assert k.gru_overlap_steps(T, B, D, H, 4) == steps
    assert k.overlap_steps(4 * T, B, D, H, 4) == steps  # Elman: 1.65M MACs
    assert k.overlap_steps(T, B, D, H, 4) == 0  # Elman 25,1,65,100: below the rule's size
    assert k.gru_overlap_steps(T, 2, D, H, 4) != steps or steps == 0  # B = 2: the usual rule
    with k.tuned(overlap="off"):
        assert k.gru_overlap_steps(T, B, D, H, 4) == 0
    with k.tuned(overlap_single_min_macs=2**62):
        assert k.gru_overlap_steps(T, B, D, H, 4) == 0
    with k.tuned(overlap_single_steps=T):
        assert k.gru_overlap_steps(T, B, D, H, 4) == 0  # one chunk: nothing to overlap
    with pytest.raises(ValueError, match="overlap_single_steps must be >= 1"):
        k.set_tuning(overlap_single_steps=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_same_bits_at_any_thread_count(cell, dtype):
    """BLAS at one thread (no helper: the caller runs the chunks), at two (the helper takes
    them), beside a busy thread and from two threads at once: the same bits, and the
    reference's values."""
    k = compiled_kernels()
    p = _problem(cell, dtype)
    if cell == "rnn":  # the Elman row of this size is below the rule: four times as many steps
        p["x"] = np.concatenate([p["x"]] * 4)
        p["dh"] = np.concatenate([p["dh"]] * 4)
    expected, results = results_under_contention(lambda: _run(cell, p))
    for result in results:
        for a, e in zip(result, expected, strict=True):
            np.testing.assert_array_equal(a, e)
    want = _run(cell, p, "numpy")
    for got, ref in zip(expected, want, strict=True):
        assert_close(got, ref, RTOL[np.dtype(dtype)] * 10, "chunked batch of one")
    with k.tuned(overlap_single_min_macs=2**62):  # one pass: other sums, the same values
        for got, ref in zip(_run(cell, p), want, strict=True):
            assert_close(got, ref, RTOL[np.dtype(dtype)] * 10, "one pass")


def test_the_helper_takes_part():
    """With two threads the helper takes chunks (retried for up to 10 s: a helper found late
    sits out some calls)."""
    k = compiled_kernels()
    if k.blas_threads() < 2:
        pytest.skip("one BLAS thread: no helper by design")
    p = _problem("lstm", np.float32)
    deadline = time.monotonic() + 10
    k.reset_thread_stats()
    while k.thread_stats()["helpers_started"] == 0:
        assert time.monotonic() < deadline, k.thread_stats()
        _run("lstm", p)
