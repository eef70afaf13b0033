"""Choose the streaming step's batch limit for the dot-form product (STEP_DOT_MAX_BATCH).

Times one step of one layer (functional.rnn_step's compiled call, float32) at each batch with
the dot form forced on and forced off (GEMM), in blocks that take turns
(benchmarks.best_block_medians), and prints microseconds per step and dot over GEMM. Below 1:
the dot form is faster.

    python bench/tune_step_batch.py [--batches 4 5 8 12 16 32] [--sizes 32,128 512,1024]
"""

import argparse
import functools

import numpy as np

from rnnfast._core import kernels as _kernels
from rnnfast.benchmark import best_block_medians
from rnnfast.nn import RNN

KINDS = ("dot", "gemm")
CALLS = 20  # steps per sample
SIZES = ["32,64", "32,128", "65,100", "128,256", "128,512", "512,1024"]


def use_dot(dot: bool) -> None:
    _kernels.set_tuning(step_dot_max_batch=1 << 30 if dot else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 5, 8, 12, 16, 32])
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    args = parser.parse_args()
    print(f"SIMD level: {_kernels.simd_level()}; us per step, then dot over GEMM")
    for size in args.sizes:
        D, H = map(int, size.split(","))
        params = RNN(D, H, seed=0)._step_layers
        cells = []
        for B in args.batches:
            rng = np.random.default_rng(B)
            x = rng.standard_normal((B, D)).astype(np.float32)
            h = rng.standard_normal((1, B, H)).astype(np.float32)
            step = functools.partial(_kernels.rnn_step, x, h, params, "tanh")
            runners = dict.fromkeys(KINDS, step)
            setup = {kind: (lambda dot=kind == "dot": use_dot(dot)) for kind in KINDS}
            best = best_block_medians(runners, dict.fromkeys(KINDS, 15), 3, CALLS, setup)
            dot, gemm = (best[kind] * 1e6 for kind in KINDS)
            cells.append(f"B{B} {dot:.1f}/{gemm:.1f}={dot / gemm:.2f}")
        print(f"{size:>9}  " + "  ".join(cells), flush=True)
    _kernels.set_tuning(step_dot_max_batch=_kernels.DEFAULT_TUNING["step_dot_max_batch"])


if __name__ == "__main__":
    main()
