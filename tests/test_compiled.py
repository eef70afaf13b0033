"""The compiled extension is really built and used, releases the GIL safely, and guards BLAS sizes.

These tests fail when the extension is missing, unless RNNFAST_BACKEND=numpy asks for a
reference-only run (see conftest.require_compiled).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from importlib.machinery import EXTENSION_SUFFIXES

import numpy as np
import pytest
from conftest import forward_backward, make_problem, require_compiled, step_product

import rnnfast
from rnnfast import functional


def test_extension_modules_are_shared_libraries():
    require_compiled()
    assert rnnfast.HAVE_COMPILED is True
    from rnnfast._core import blas as _blas
    from rnnfast._core import kernels as _kernels

    for module in (_kernels, _blas):
        assert module.__file__.endswith(tuple(EXTENSION_SUFFIXES)), module.__file__
    assert rnnfast._backend.kernels is _kernels


def test_cython_backend_runs_the_kernels(nonlinearity, monkeypatch):
    require_compiled()
    from rnnfast._core import kernels as _kernels

    def reference_used(*args, **kwargs):
        raise AssertionError("backend='cython' ran the NumPy reference")

    for name in ("rnn_forward", "rnn_backward", "rnn_step"):
        monkeypatch.setattr(functional._reference, name, reference_used, raising=False)
    p = make_problem(np.random.default_rng(0), 4, 3, 5, 6)
    h = p.forward(nonlinearity, "cython")
    direct = _kernels.rnn_forward(p.x, p.h0, p.w_ih, p.w_hh, p.b, nonlinearity)
    np.testing.assert_array_equal(h, direct)
    grads = p.backward(h, nonlinearity, "cython")
    direct_grads = _kernels.rnn_backward(p.dh, p.x, p.h0, h, p.w_ih, p.w_hh, nonlinearity)
    for name, a, e in zip(rnnfast.RNNGrads._fields, grads, direct_grads, strict=True):
        np.testing.assert_array_equal(a, e, err_msg=name)


def test_threads_give_single_threaded_results():
    """Three threads in the kernels at once (the GIL is released inside them) get the results
    of one thread at a time. No timing is asserted. The steps of one problem run on the panel
    product, of another (a batch of 1) on the small product, both with a helper thread where
    BLAS may use two, and of the third through BLAS. The first two run every GEMM on one BLAS
    thread, so their bits cannot depend on the others; BLAS steps run on as many threads as the
    process-wide count allows at that moment (one while another call is in a serial section),
    and OpenBLAS's sums differ in the last bits between one thread and two: close, not equal.
    """
    require_compiled()
    rng = np.random.default_rng(1)
    problems = [
        make_problem(rng, 50, 64, 256, 256),
        make_problem(rng, 200, 1, 64, 24),  # the small product at every SIMD level
        make_problem(rng, 6, 260, 32, 256),
    ]
    # B = 64 takes the panel product when a helper thread may start (BLAS allows two threads)
    first = "panel" if (rnnfast.get_num_threads() or 1) >= 2 else "blas"
    assert [step_product(p.w_hh, p.x.shape[1]) for p in problems] == [first, "small", "blas"]
    nonlinearities = ["tanh", "relu", "tanh"]
    sequential = [
        forward_backward(p, n, "cython") for p, n in zip(problems, nonlinearities, strict=True)
    ]
    threads_before = rnnfast.get_num_threads()

    barrier = threading.Barrier(3)

    def worker(i: int):
        barrier.wait(timeout=30)
        return [forward_backward(problems[i], nonlinearities[i], "cython") for _ in range(3)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(worker, range(3)))

    for i, ((h_seq, g_seq), results) in enumerate(zip(sequential, threaded, strict=True)):
        for h_thr, g_thr in results:
            if i < 2:
                assert np.array_equal(h_thr, h_seq)
            else:
                np.testing.assert_allclose(h_thr, h_seq, rtol=1e-12, atol=1e-14)
            for name, a, e in zip(rnnfast.RNNGrads._fields, g_thr, g_seq, strict=True):
                if i < 2:
                    assert np.array_equal(a, e), name
                else:
                    np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14, err_msg=name)
    # The serial sections of overlapping calls restored BLAS's own thread count.
    assert rnnfast.get_num_threads() == threads_before


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_sizes_beyond_blas_int_are_refused(monkeypatch, which):
    """Sizes the BLAS integer cannot hold raise instead of reaching a kernel."""
    require_compiled()
    p = make_problem(np.random.default_rng(2), 4, 3, 5, 6)
    h = p.forward("tanh", "cython")
    # T * B * H = 72 is the largest matrix here.
    monkeypatch.setattr(functional, "BLAS_INT_MAX", 71)

    def call(backend: str):
        if which == "forward":
            return p.forward("tanh", backend)
        return p.backward(h, "tanh", backend)

    with pytest.raises(ValueError, match=r"T \* B \* H \(the states h\) = 72 .* BLAS limit of 71"):
        call("cython")
    call("numpy")  # the reference has no such limit
    monkeypatch.setattr(functional, "BLAS_INT_MAX", 72)
    call("cython")
