"""No leaks: resident memory stays flat over many forward + backward calls and streaming steps,
and no call keeps a reference to its inputs.

Resident memory is read from /proc/self/statm (Linux only). Each test warms up first (the
allocator and NumPy's caches settle), then measures the growth over the calls; a leak of one
small array per call, or of one large array per large call, is far above the bound.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable

import numpy as np
import pytest
from conftest import Problem, forward_backward, make_problem

import rnnfast

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


def rss_growth(run_once: Callable[[int], object], warmup: int, calls: int) -> int:
    """Bytes of resident memory gained over ``calls`` calls of ``run_once(i)``, after
    ``warmup`` calls."""
    for i in range(warmup):
        run_once(i)
    before = resident_bytes()
    for i in range(calls):
        run_once(i)
    return resident_bytes() - before


def forward_backward_calls(p: Problem, backend: str) -> Callable[[int], object]:
    """Call i: forward + backward of ``p``, tanh and relu in turn."""
    return lambda i: forward_backward(p, ("tanh", "relu")[i % 2], backend)


def test_ten_thousand_small_calls(backend):
    # One leaked (T, B, H) float64 array per call would be 10,000 * 240 B = 2.3 MiB; a leaked
    # Python object (a memoryview, a tuple) per call would be over 1 MiB.
    p = make_problem(np.random.default_rng(0), 5, 2, 3, 4)
    growth = rss_growth(forward_backward_calls(p, backend), warmup=1000, calls=10_000)
    print(f"{backend}: 10,000 small calls: resident memory grew {growth / MiB:.2f} MiB")
    assert growth < 1 * MiB


def test_two_hundred_large_calls(backend):
    # h is 1.6 MiB: a leak of one per call would be 320 MiB, of dh0 (32 KiB) 6.25 MiB.
    p = make_problem(np.random.default_rng(1), 50, 32, 64, 128)
    growth = rss_growth(forward_backward_calls(p, backend), warmup=20, calls=200)
    print(f"{backend}: 200 large calls: resident memory grew {growth / MiB:.2f} MiB")
    assert growth < 4 * MiB


@pytest.mark.parametrize("layers", [1, 2])
def test_ten_thousand_streaming_steps(backend, layers):
    """functional.rnn_step, the state fed back as in streaming inference (the compiled fast
    path on the cython backend)."""
    B, D, H = 4, 8, 32
    rng = np.random.default_rng(3)
    params = tuple(
        (
            rng.standard_normal((H, D if k == 0 else H)),
            rng.standard_normal((H, H)) / H,
            rng.standard_normal(H),
            rng.standard_normal(H),
        )
        for k in range(layers)
    )
    x = rng.standard_normal((B, D))
    state: dict[str, np.ndarray | None] = {"h": None}

    def step(i: int) -> None:
        _, state["h"] = rnnfast.functional.rnn_step(x, state["h"], params, backend=backend)

    growth = rss_growth(step, warmup=1000, calls=10_000)
    print(
        f"{backend}: 10,000 steps, {layers} layer(s): resident memory grew {growth / MiB:.2f} MiB"
    )
    assert growth < 1 * MiB


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


def test_streaming_steps_keep_no_reference_to_inputs(backend):
    """The compiled step reads its operands at C level: their reference counts are unchanged
    after 100 steps (a leaked reference would keep every array alive)."""
    B, D, H = 2, 3, 4
    rng = np.random.default_rng(4)
    layer = (rng.standard_normal((H, D)), rng.standard_normal((H, H)), None, None)
    params = (layer,)
    x, h = rng.standard_normal((B, D)), rng.standard_normal((1, B, H))
    watched = (x, h, params, layer, *layer[:2])
    before = [sys.getrefcount(a) for a in watched]
    for _ in range(100):
        rnnfast.functional.rnn_step(x, h, params, backend=backend)
    gc.collect()
    assert [sys.getrefcount(a) for a in watched] == before
