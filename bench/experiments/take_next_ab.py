"""The forward loop that catches up with its helper: wait for the chunk the helper is
projecting, or project the next chunk meanwhile (``overlap_take_next_min_macs``, tuning.h).

Both rules interleaved in one process (they take turns each round), medians in ms, float32::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/experiments/take_next_ab.py [--rounds 15]
"""

import argparse
import statistics
import time

from rnnfast import benchmark
from rnnfast._core import kernels

ROWS = [
    ("gru", "inference", "100,8,64,128"),
    ("lstm", "train", "100,8,64,128"),
    ("gru", "train", "100,32,128,256"),
    ("lstm", "proj", "100,32,128,256"),
    ("gru", "inference", "50,64,1024,1024"),
    ("lstm", "proj", "50,64,1024,1024"),
]
RULES = {"take next": {}, "wait": {"overlap_take_next_min_macs": 2**62}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    for cell, mode, size in ROWS:
        T, B, D, H = map(int, size.split(","))
        run = benchmark.make_runner("rnnfast", benchmark.Case(T, B, D, H, cell=cell, mode=mode))
        rounds = max(3, args.rounds // 3) if H >= 1024 else args.rounds
        samples: dict[str, list[float]] = {name: [] for name in RULES}
        for _ in range(rounds + 1):  # the first round warms up
            for name, rules in RULES.items():
                with kernels.tuned(**rules):
                    t0 = time.perf_counter()
                    run()
                    samples[name].append(time.perf_counter() - t0)
        medians = {name: 1e3 * statistics.median(times[1:]) for name, times in samples.items()}
        print(
            f"{cell:4} {mode:9} {size:15} "
            + "  ".join(f"{name} {ms:.3f}" for name, ms in medians.items())
            + f"  wait/take next {medians['wait'] / medians['take next']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
