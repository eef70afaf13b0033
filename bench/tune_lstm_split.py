"""The LSTM (``--cell gru``: GRU) forward's split: each step's gate panels (blocks of units)
shared between the two threads, against whole steps on one thread while the helper projects
ahead, with torch's cell under no_grad beside them (see "The LSTM's gate panels" in
docs/design/kernels.md).

Calls interleaved in one process (the variants take turns each round), medians and minima in
ms, float32, the inference forward (``--train``: the training forward, its gates kept).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/tune_lstm_split.py [--cell gru] [--rounds 11] [--train] [--sizes T,B,D,H ...]
"""

import argparse
import statistics
import time

import numpy as np

from rnnfast import benchmark
from rnnfast._core import kernels as _kernels

SIZES = ["100,8,64,128", "100,32,128,256", "50,64,512,512", "50,64,1024,1024"]
WHOLE = {"split_min_step_macs": 2**40, "split_small_max_batch": 0}


GATES = {"lstm": 4, "gru": 3}


def forward(cell, T, B, D, H, training):
    """One LSTM or GRU forward of these sizes on the compiled kernels, as a call."""
    rng = np.random.default_rng(0)
    s, G = 1 / np.sqrt(H), GATES[cell]
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    h0, c0 = (rng.standard_normal((B, H), dtype=np.float32) for _ in range(2))
    w_ih = rng.uniform(-s, s, (G * H, D)).astype(np.float32)
    w_hh = rng.uniform(-s, s, (G * H, H)).astype(np.float32)
    b, b_hh = (rng.uniform(-s, s, G * H).astype(np.float32) for _ in range(2))
    if cell == "gru":
        return lambda: _kernels.gru_forward(x, h0, w_ih, w_hh, b, b_hh, training)
    return lambda: _kernels.lstm_forward(x, h0, c0, w_ih, w_hh, b, None, training)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="T,B,D,H")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--cell", choices=sorted(GATES), default="lstm")
    args = parser.parse_args()
    G = GATES[args.cell]
    for size in args.sizes:
        T, B, D, H = map(int, size.split(","))
        run = forward(args.cell, T, B, D, H, args.train)
        variants = {"split": ({}, run), "whole": (WHOLE, run)}
        if not args.train and "torch" in benchmark.available_peers(args.cell, "inference"):
            case = benchmark.Case(T, B, D, H, cell=args.cell, mode="inference")
            variants["torch"] = ({}, benchmark.make_runner("torch", case))
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, (rules, call) in variants.items():
                with _kernels.tuned(**rules):
                    t0 = time.perf_counter()
                    call()
                    samples[name].append(time.perf_counter() - t0)
        gflop = 2 * G * T * B * H * (D + H) / 1e9
        parts = []
        for name, times in samples.items():
            med, low = statistics.median(times[1:]), min(times[1:])
            parts.append(f"{name} {1e3 * med:.2f} (min {1e3 * low:.2f}, {gflop / med:.0f} GF/s)")
        print(
            f"{size} split panels {_kernels.split_panels(T, B, D, H, 4, gates=G)}: "
            + "  ".join(parts),
            flush=True,
        )


if __name__ == "__main__":
    main()
