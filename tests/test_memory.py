"""No leaks: resident memory stays flat over many forward + backward calls, and no call keeps a
reference to its inputs.

Resident memory is read from /proc/self/statm (Linux only). Each test warms up first (the
allocator and NumPy's caches settle), then measures the growth over the calls; a leak of one
small array per call, or of one large array per large call, is far above the bound.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest
from conftest import forward_backward, make_problem

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm (Linux only)"
)

MiB = 1 << 20


def resident_bytes() -> int:
    """This process's resident set size, after a garbage collection."""
    gc.collect()
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def rss_growth(p, backend: str, warmup: int, calls: int) -> int:
    """Bytes of resident memory gained over ``calls`` forward + backward calls of ``p``."""
    for nonlinearity in ("tanh", "relu") * (warmup // 2):
        forward_backward(p, nonlinearity, backend)
    before = resident_bytes()
    for nonlinearity in ("tanh", "relu") * (calls // 2):
        forward_backward(p, nonlinearity, backend)
    return resident_bytes() - before


def test_ten_thousand_small_calls(backend):
    # One leaked (T, B, H) float64 array per call would be 10,000 * 240 B = 2.3 MiB; a leaked
    # Python object (a memoryview, a tuple) per call would be over 1 MiB.
    p = make_problem(np.random.default_rng(0), 5, 2, 3, 4)
    growth = rss_growth(p, backend, warmup=1000, calls=10_000)
    print(f"{backend}: 10,000 small calls: resident memory grew {growth / MiB:.2f} MiB")
    assert growth < 1 * MiB


def test_two_hundred_large_calls(backend):
    # h is 1.6 MiB: a leak of one per call would be 320 MiB, of dh0 (32 KiB) 6.25 MiB.
    p = make_problem(np.random.default_rng(1), 50, 32, 64, 128)
    growth = rss_growth(p, backend, warmup=20, calls=200)
    print(f"{backend}: 200 large calls: resident memory grew {growth / MiB:.2f} MiB")
    assert growth < 4 * MiB


def test_calls_keep_no_reference_to_inputs(backend):
    """Every array passed in has the same reference count after 100 calls as before."""
    p = make_problem(np.random.default_rng(2), 4, 3, 5, 6)
    inputs = list(p.arrays().values())
    h, _ = forward_backward(p, "tanh", backend)
    before = [sys.getrefcount(a) for a in (*inputs, h)]
    for _ in range(100):
        p.forward("tanh", backend)
        p.backward(h, "tanh", backend)
    gc.collect()
    assert [sys.getrefcount(a) for a in (*inputs, h)] == before
