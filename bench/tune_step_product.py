"""Choose the step-product rule: which product each time step's recurrent matmul uses.

Times forward + backward (T=100) with every recurrent product forced to BLAS GEMM, the
register-blocked small product and the packed panel product in turn (interleaved, so that
machine noise hits all alike), and prints the medians and each product's time over BLAS's per
(dtype, B, H). Below 1: faster than BLAS. The "auto" rule in src/rnnfast/_core/kernels.pyx
comes from this table.

    python bench/tune_step_product.py [--reps 15] [--dtype float32] [--batches 1 2 4 8]
"""

import argparse
import time

import numpy as np

from rnnfast._core import kernels as _kernels

PRODUCTS = ("blas", "small", "panel")


def forward_backward(p):
    h = _kernels.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b"], "tanh")
    _kernels.rnn_backward(p["dh"], p["x"], p["h0"], h, p["w_ih"], p["w_hh"], "tanh")


def problem(T, B, D, H, dtype, rng):
    bound = 1 / np.sqrt(H)
    return {
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "h0": rng.standard_normal((B, H)).astype(dtype),
        "w_ih": rng.uniform(-bound, bound, (H, D)).astype(dtype),
        "w_hh": rng.uniform(-bound, bound, (H, H)).astype(dtype),
        "b": np.zeros(H, dtype),
        "dh": rng.standard_normal((T, B, H)).astype(dtype),
    }


def timed(p, product):
    _kernels.set_tuning(step_product=product)
    t0 = time.perf_counter()
    forward_backward(p)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 100, 128, 256, 512])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    previous = _kernels.get_tuning()["step_product"]
    print(f"SIMD level: {_kernels.simd_level()}")
    print(
        f"{'dtype':8} {'B':>3} {'H':>4} {'BLAS ms':>8} {'small ms':>9} {'panel ms':>9} "
        f"{'small/BLAS':>10} {'panel/BLAS':>10}"
    )
    try:
        for dtype in args.dtype:
            for B in args.batches:
                for H in args.hidden:
                    p = problem(100, B, 32, H, dtype, rng)
                    forward_backward(p)
                    times = {product: [] for product in PRODUCTS}
                    for _ in range(args.reps):
                        for product in PRODUCTS:
                            times[product].append(timed(p, product))
                    ms = {k: np.median(v) * 1e3 for k, v in times.items()}
                    print(
                        f"{dtype:8} {B:3d} {H:4d} {ms['blas']:8.3f} {ms['small']:9.3f} "
                        f"{ms['panel']:9.3f} {ms['small'] / ms['blas']:10.2f} "
                        f"{ms['panel'] / ms['blas']:10.2f}"
                    )
    finally:
        _kernels.set_tuning(step_product=previous)


if __name__ == "__main__":
    main()
