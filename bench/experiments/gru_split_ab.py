"""The GRU forward on gate panels, split across both cores: an older build of the kernels
against this one, interleaved in one process (order shuffled each round), with torch's GRU
under no_grad and a 2048^3 float32 GEMM beside them; medians and minima in ms, float32.

    cp src/rnnfast/_core/kernels*.so /tmp/old/   # (in a checkout of the older commit, built)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/experiments/gru_split_ab.py --old /tmp/old/kernels*.so [--train] [--torch]

``--train``: forward (workspace kept) + backward, and the training forward alone.
"""

import argparse
import random
import statistics
import time

import numpy as np
from proj_ab import load_old

from rnnfast import benchmark
from rnnfast._backend import kernels as new

SIZES = ["50,64,512,512", "100,32,128,256", "50,64,1024,1024"]


def calls(k, T, B, D, H, train):
    """A GRU call of these sizes on kernels module ``k`` (and its training forward alone)."""
    rng = np.random.default_rng(0)
    s, f = 1 / np.sqrt(H), np.float32
    x, dh = rng.standard_normal((T, B, D), dtype=f), rng.standard_normal((T, B, H), dtype=f)
    h0 = rng.standard_normal((B, H), dtype=f)
    w_ih = rng.uniform(-s, s, (3 * H, D)).astype(f)
    w_hh = rng.uniform(-s, s, (3 * H, H)).astype(f)
    b_ih, b_hh = (rng.uniform(-s, s, 3 * H).astype(f) for _ in range(2))

    def forward():
        return k.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, train)

    def both():
        h, ws = forward()
        k.gru_backward(dh, x, h0, h, ws, w_ih, w_hh, b_hh)

    return (both, forward) if train else (forward, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="an older build's kernels*.so")
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="T,B,D,H")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--torch", action="store_true", help="torch's GRU beside them")
    args = parser.parse_args()
    old = load_old(args.old)
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((2048, 2048), dtype=np.float32) for _ in range(2))
    for size in args.sizes:
        T, B, D, H = map(int, size.split(","))
        variants = {"gemm": lambda: a @ b}
        for name, k in (("old", old), ("new", new)):
            call, forward = calls(k, T, B, D, H, args.train)
            variants[name] = call
            if forward is not None:
                variants[f"{name} forward"] = forward
        if args.torch:
            case = benchmark.Case(
                T, B, D, H, cell="gru", mode="train" if args.train else "inference"
            )
            variants["torch"] = benchmark.make_runner("torch", case)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for _ in range(args.rounds + 1):  # the first round warms up
            random.shuffle(names)
            for name in names:
                t0 = time.perf_counter()
                variants[name]()
                samples[name].append(time.perf_counter() - t0)
        med = {n: statistics.median(v[1:]) for n, v in samples.items()}
        low = {n: min(v[1:]) for n, v in samples.items()}
        gemm = 2 * 2048**3 / med["gemm"]
        flop = 2 * 3 * T * B * H * (D + H)
        parts = [f"gemm {gemm / 1e9:.0f} GF/s"]
        for n in names:
            if n != "gemm":
                f = flop * (3 if args.train and n in ("old", "new", "torch") else 1)
                parts.append(
                    f"{n} {1e3 * med[n]:.1f} (min {1e3 * low[n]:.1f}, "
                    f"{100 * f / med[n] / gemm:.0f}% of GEMM)"
                )
        ratios = f"old/new {med['old'] / med['new']:.2f} (min {low['old'] / low['new']:.2f})"
        if args.torch:
            ratios += f", torch/new {med['torch'] / med['new']:.2f}"
            ratios += f", torch/old {med['torch'] / med['old']:.2f}"
        print(
            f"{size} {'train' if args.train else 'inference'}: " + "  ".join(parts) + f"  {ratios}",
            flush=True,
        )


if __name__ == "__main__":
    main()
