"""Measure how a NumPy matmul just before an rnnfast call slows the call.

Run from the repository root (after ``pip install .[test]``)::

    python bench/spinning_pool.py [--sizes 50,64,1024,1024 100,8,64,128] [--calls 21]
    OPENBLAS_THREAD_TIMEOUT=4 python bench/spinning_pool.py     # workers sleep at once

NumPy ships an OpenBLAS of its own (beside SciPy's, which the kernels use), and after a
multi-threaded call its worker thread keeps spinning for a while before it sleeps (OpenBLAS's
thread timeout, which OPENBLAS_THREAD_TIMEOUT=n sets to 2^n cycles). Whatever runs two threads
in that window (BLAS, or the kernels' helper thread) shares a core with it. For each size this
prints the forward's median time after a pause, and right after a 512 x 512 ``a @ a``; first, on
Linux, the CPU time NumPy's threads other than the main one used in the 0.3 s after one such
matmul. A call after a pause also starts cold (caches, clock, an idle core to wake), which
weighs on calls of a millisecond or less: read the ratio at the large sizes, or against a run
with the timeout set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from rnnfast import benchmark, functional

PAUSE_S = 0.15


def worker_cpu_after_matmul(a: np.ndarray, window_s: float = 0.3) -> float | None:
    """CPU seconds used by this process's threads other than the main one during
    ``window_s`` after one ``a @ a`` (the main thread busy meanwhile); None off Linux."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return None

    def cpu_ticks() -> dict[str, int]:
        ticks = {}
        for tid in os.listdir(tasks):
            with open(f"{tasks}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks

    a @ a
    time.sleep(1.0)  # every worker asleep
    before, start = cpu_ticks(), time.perf_counter()
    a @ a
    while time.perf_counter() - start < window_s:
        pass
    after = cpu_ticks()
    main = str(os.getpid())
    used = sum(after[t] - before.get(t, 0) for t in after if t != main)
    return used / os.sysconf("SC_CLK_TCK")


def median_ms(fn: Callable[[], object], before: Callable[[], object], calls: int) -> float:
    samples = []
    for _ in range(calls):
        before()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["50,64,1024,1024", "100,8,64,128"])
    parser.add_argument("--calls", type=int, default=21)
    args = parser.parse_args()
    a = np.random.default_rng(0).uniform(size=(512, 512)).astype(np.float32)
    cpu = worker_cpu_after_matmul(a)
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset")
    print(f"OPENBLAS_THREAD_TIMEOUT={timeout}")
    if cpu is not None:
        print(f"NumPy's worker threads after one a @ a: {cpu * 1e3:.0f} ms of CPU in 0.3 s")
    print("T,B,D,H           after a pause   after a @ a   ratio   (forward, median ms)")
    for size in args.sizes:
        T, B, D, H = (int(v) for v in size.split(","))
        p = benchmark.make_problem(benchmark.Case(T, B, D, H))
        b = p["b"]

        def forward(p: dict = p, b: np.ndarray = b) -> object:
            return functional.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], b)

        forward()
        quiet = median_ms(forward, lambda: time.sleep(PAUSE_S), args.calls)
        busy = median_ms(forward, lambda: a @ a, args.calls)
        print(f"{size:16s} {quiet:14.3f} {busy:13.3f} {busy / quiet:7.2f}")


if __name__ == "__main__":
    main()
