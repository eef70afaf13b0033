"""Choose the small-step rule: small register-blocked product vs BLAS GEMM for the recurrent step.

Times forward + backward (T=100) with every recurrent product forced to one path, then the
other, interleaved so that machine noise hits both alike, and prints the median ratio
small/BLAS per (dtype, B, H). Below 1: the small product wins.

    python bench/tune_small_step.py [--reps 15]
"""

import argparse
import time

import numpy as np

from rnnfast import _kernels


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


def timed(p, small_step):
    _kernels._set_tuning(small_step=small_step)
    t0 = time.perf_counter()
    forward_backward(p)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    previous = _kernels._set_tuning()
    print(f"SIMD level: {_kernels.simd_level()}")
    print(f"{'dtype':8} {'B':>3} {'H':>4} {'BLAS ms':>8} {'small ms':>9} {'small/BLAS':>10}")
    try:
        for dtype in (np.float32, np.float64):
            for B in (1, 2, 4, 8, 16, 32):
                for H in (32, 64, 100, 128, 256):
                    p = problem(100, B, 32, H, dtype, rng)
                    forward_backward(p)
                    blas, small = [], []
                    for _ in range(args.reps):
                        blas.append(timed(p, "never"))
                        small.append(timed(p, "always"))
                    b_ms, s_ms = np.median(blas) * 1e3, np.median(small) * 1e3
                    print(
                        f"{np.dtype(dtype).name:8} {B:3d} {H:4d} {b_ms:8.3f} {s_ms:9.3f} "
                        f"{s_ms / b_ms:10.2f}"
                    )
    finally:
        _kernels._set_tuning(small_step=previous)


if __name__ == "__main__":
    main()
