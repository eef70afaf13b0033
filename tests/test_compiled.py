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
from conftest import forward_backward, make_problem, require_compiled

import rnnfast
from rnnfast import functional


def test_extension_modules_are_shared_libraries():
    require_compiled()
    assert rnnfast.HAVE_COMPILED is True
    from rnnfast import _blas, _kernels

    for module in (_kernels, _blas):
        assert module.__file__.endswith(tuple(EXTENSION_SUFFIXES)), module.__file__
    assert functional._kernels is _kernels


def test_cython_backend_runs_the_kernels(nonlinearity, monkeypatch):
    require_compiled()
    from rnnfast import _kernels

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
    """Two threads in the kernels at once (the GIL is released inside them) get bit-identical
    results to one thread at a time. No timing is asserted. One problem's steps go through
    BLAS, the other's (a batch of 1) through the kernels' own small product where they have one.
    """
    require_compiled()
    rng = np.random.default_rng(1)
    problems = [make_problem(rng, 50, 64, 256, 256), make_problem(rng, 200, 1, 64, 128)]
    nonlinearities = ["tanh", "relu"]
    sequential = [
        forward_backward(p, n, "cython") for p, n in zip(problems, nonlinearities, strict=True)
    ]

    barrier = threading.Barrier(2)

    def worker(i: int):
        barrier.wait(timeout=30)
        return forward_backward(problems[i], nonlinearities[i], "cython")

    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = list(pool.map(worker, range(2)))

    for (h_seq, g_seq), (h_thr, g_thr) in zip(sequential, threaded, strict=True):
        assert np.array_equal(h_thr, h_seq)
        for name, a, e in zip(rnnfast.RNNGrads._fields, g_thr, g_seq, strict=True):
            assert np.array_equal(a, e), name


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
