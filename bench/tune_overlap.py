"""Choose the overlap rule: when a helper thread does the GEMMs around the time loop, and in
chunks of how many rows (see "Overlap" in docs/design/kernels.md).

Times forward + backward with the overlap off and forced on at each chunk size, under the
step-product rule, in blocks that take turns (benchmarks.best_block_medians: call-by-call
interleaving would time "on" beside the BLAS threads that "off" leaves spinning), and prints
each one's best block median and its time over "off". Below 1: the overlap is faster.

With --panel-vs-blas it times, instead, the panel product with the helper thread against
BLAS steps without it (the pair the helped panel range of _step_kind chooses between); with
--forward, the forward pass alone.

    python bench/tune_overlap.py [--reps 15] [--dtype float32] [--chunk-rows 16 48 128]
        [--panel-vs-blas] [--forward] [--sizes T,B,D,H ...]
"""

import argparse

import numpy as np
from tune_step_product import forward_backward, problem

from rnnfast._core import kernels as _kernels
from rnnfast.benchmark import best_block_medians

LARGE_SIZES = [
    "100,64,64,128",
    "100,48,128,256",
    "100,64,128,384",
    "50,128,256,256",
    "50,256,128,256",
    "50,64,512,512",
    "30,128,512,512",
    "50,64,512,768",
    "50,64,1024,1024",
]
SIZES = [
    "100,1,32,64",
    "100,2,32,100",
    "100,4,32,64",
    "100,4,64,128",
    "100,8,64,128",
    "100,16,64,256",
    "100,32,128,256",
]


def forward(p):
    return _kernels.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b"], "tanh")


def use(step_product, mode, chunk_rows):
    _kernels.set_tuning(step_product=step_product, overlap=mode, overlap_chunk_rows=chunk_rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[16, 32, 48, 96, 192])
    parser.add_argument("--panel-vs-blas", action="store_true")
    parser.add_argument("--forward", action="store_true")
    parser.add_argument("--sizes", nargs="+")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tuning = _kernels.get_tuning()
    previous = (tuning["overlap"], tuning["overlap_chunk_rows"])
    previous_product = tuning["step_product"]
    # name: (step product, overlap mode, chunk rows); the first is the baseline
    if args.panel_vs_blas:
        variants = {"blas": ("blas", "auto", previous[1]), "panel+": ("panel", "on", previous[1])}
    else:
        variants = {"off": (previous_product, "off", previous[1])}
        variants.update({f"on/{n}": (previous_product, "on", n) for n in args.chunk_rows})
    names = list(variants)
    print(f"SIMD level: {_kernels.simd_level()}; times in ms, then over {names[0]!r}")
    print(f"{'dtype':8} {'T,B,D,H':>15} {'MACs':>6} " + " ".join(f"{n:>8}" for n in names))
    try:
        for dtype in args.dtype:
            for size in args.sizes or (LARGE_SIZES if args.panel_vs_blas else SIZES):
                T, B, D, H = map(int, size.split(","))
                p = problem(T, B, D, H, dtype, rng)
                call = (
                    (lambda p=p: forward(p)) if args.forward else (lambda p=p: forward_backward(p))
                )
                call()
                best = best_block_medians(
                    dict.fromkeys(names, call),
                    dict.fromkeys(names, args.reps),
                    setup={n: lambda v=v: use(*v) for n, v in variants.items()},
                )
                ms = [best[n] * 1e3 for n in names]
                macs = T * B * H * (D + H)
                print(
                    f"{dtype:8} {size:>15} {macs / 1e6:5.1f}M "
                    + " ".join(f"{m:8.3f}" for m in ms)
                    + "\n"
                    + " " * 32
                    + " ".join(f"{m / ms[0]:8.2f}" for m in ms)
                )
    finally:
        use(previous_product, *previous)


if __name__ == "__main__":
    main()
