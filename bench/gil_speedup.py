"""Measure how much two Python threads gain from the kernels releasing the GIL.

Run from the repository root (after ``pip install .[test]``)::

    python bench/gil_speedup.py [--size T,B,D,H] [--dtype float64] [--repeats 15]

It times one forward + backward call, the same call twice in a row, and twice at once in two
threads, each the best of ``--repeats`` interleaved runs, and prints the speed-up of the
threaded pair over the sequential pair: 2.0 is perfect overlap on two free cores, 1.0 no overlap
at all (the GIL held). BLAS and OpenMP are capped at one thread each (set before NumPy loads),
so the two Python threads are the only parallelism. The figure needs two idle cores: on a
loaded machine it falls towards 1.0 whatever the GIL does (compare with the machine's load).
"""

from __future__ import annotations

import os

# Before NumPy and SciPy load their OpenBLAS: one BLAS thread, one OpenMP thread, per call.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import forward_backward, make_problem  # noqa: E402


class GilTiming(NamedTuple):
    """Wall times in seconds over the repeats: the best (least disturbed by other work on a
    shared machine) and the median of each."""

    one_call: float
    sequential_pair: float
    threaded_pair: float
    median_sequential_pair: float
    median_threaded_pair: float

    @property
    def speedup(self) -> float:
        """Best sequential pair / best threaded pair: 2.0 is perfect overlap, 1.0 none."""
        return self.sequential_pair / self.threaded_pair

    @property
    def median_speedup(self) -> float:
        """The same ratio of the medians."""
        return self.median_sequential_pair / self.median_threaded_pair

    def __str__(self) -> str:
        return (
            f"one call {self.one_call * 1e3:.1f} ms, two sequential "
            f"{self.sequential_pair * 1e3:.1f} ms, two threads {self.threaded_pair * 1e3:.1f} ms: "
            f"speed-up {self.speedup:.2f}x (of the medians: {self.median_speedup:.2f}x)"
        )


def measure(
    size: tuple[int, int, int, int], dtype=np.float64, repeats: int = 15, backend: str = "cython"
) -> GilTiming:
    """Time one call, two sequential calls, and two concurrent calls of forward + backward.

    The three are interleaved in every repeat, so that a change in the machine's load
    affects all three alike.
    """
    p = make_problem(np.random.default_rng(0), *size, dtype)

    def once() -> None:
        forward_backward(p, "tanh", backend)

    def sequential_pair() -> None:
        once()
        once()

    def threaded_pair() -> None:
        barrier = threading.Barrier(2)

        def run() -> None:
            barrier.wait()
            once()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    once()  # warm-up: first-call allocations, BLAS thread start
    runs = [[timed(fn) for fn in (once, sequential_pair, threaded_pair)] for _ in range(repeats)]
    one, sequential, threaded = zip(*runs, strict=True)
    return GilTiming(
        min(one),
        min(sequential),
        min(threaded),
        statistics.median(sequential),
        statistics.median(threaded),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="40,32,64,256", help="T,B,D,H")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--backend", default="cython", choices=["cython", "numpy"])
    args = parser.parse_args(argv)
    size = tuple(int(n) for n in args.size.split(","))
    timing = measure(size, np.dtype(args.dtype), args.repeats, args.backend)
    print(
        f"size (T, B, D, H) = {size}, {args.dtype}, backend {args.backend}, {os.cpu_count()} CPUs"
    )
    print(timing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
