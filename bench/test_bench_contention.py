"""pytest-benchmark group: rnnfast on a shared machine (issue 24).

    pytest bench/test_bench_contention.py --benchmark-only --benchmark-columns=median,iqr,rounds

One group per scenario and size: forward + backward of one float32 Elman layer through
``rnnfast.RNN``, default settings against ``set_num_threads(1)`` and PyTorch, idle and while
another process keeps one core busy; and two Python threads calling at once (a round is one
call in each). Compare medians within a group: ratios, never absolute times. ``rnnfast bench
--contention`` runs every scenario in fresh interpreters, with the ratios computed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import rnnfast
from rnnfast._bench_contention import BUSY_LOOP, SIZES


@pytest.fixture(params=["idle", "busy"])
def load(request):
    if request.param == "idle":
        yield "idle"
        return
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    time.sleep(0.2)
    yield "busy"
    proc.kill()
    proc.wait()


@pytest.fixture
def threads(request):
    before = rnnfast.get_num_threads() or 1
    rnnfast.set_num_threads(request.param)
    yield request.param
    rnnfast.set_num_threads(before)


def _runner(size):
    T, B, D, H = size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    m = rnnfast.RNN(D, H, dtype="float32")

    def run():
        m.zero_grad()
        m.forward(x)
        m.backward(dy)

    return run


def _label(size):
    return ",".join(map(str, size))


@pytest.mark.parametrize("threads", [2, 1], indirect=True, ids=["default", "one-thread"])
@pytest.mark.parametrize("size", SIZES, ids=_label)
def test_rnnfast_under_load(benchmark, load, threads, size):
    benchmark.group = f"contention {load} {_label(size)}"
    benchmark(_runner(size))


@pytest.mark.parametrize("size", SIZES, ids=_label)
def test_torch_under_load(benchmark, load, size):
    torch = pytest.importorskip("torch")
    T, B, D, H = size
    m = torch.nn.RNN(D, H)
    x, g = torch.randn(T, B, D, requires_grad=True), torch.randn(T, B, H)

    def run():
        m.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = m(x)
        (out * g).sum().backward()

    benchmark.group = f"contention {load} {_label(size)}"
    benchmark(run)


@pytest.mark.parametrize("threads", [2, 1], indirect=True, ids=["default", "one-thread"])
@pytest.mark.parametrize("size", SIZES, ids=_label)
def test_two_concurrent_callers(benchmark, threads, size):
    runners = [_runner(size), _runner(size)]

    def both():
        workers = [threading.Thread(target=r) for r in runners]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    benchmark.group = f"contention two callers {_label(size)}"
    benchmark(both)
