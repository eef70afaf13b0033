"""The training step's layer forward and decoder: two calls (gathered_forward, then
linear_cross_entropy, as CharRNN.fit ran them before) against one (gathered_forward with
decoder=, the decoder's chunks on the helper thread behind a one-threaded forward), in one
process, alternating blocks of calls; the case of ``rnnfast bench --train`` (T=50, B=32, V=65,
float32). Prints ms per forward+decoder, medians of the blocks' medians.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \
        python bench/experiments/decoder_behind_ab.py [--cells gru lstm rnn] [--hidden 128]
        [--blocks 10] [--calls 20]
"""

import argparse
import time

import numpy as np

from rnnfast import functional as F

T, B, V = 50, 32, 65


def case(cell: str, H: int):
    rng = np.random.default_rng(0)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    f32 = np.float32
    ids = rng.integers(0, V, (T, B))
    args = (
        ids,
        (rng.standard_normal((V, G * H)) * 0.1).astype(f32),
        (rng.standard_normal((B, H)) * 0.1).astype(f32),
        (rng.standard_normal((B, H)) * 0.1).astype(f32) if cell == "lstm" else None,
        (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32),
        np.zeros(G * H, f32),
        np.zeros(G * H, f32),
    )
    weight, bias = (rng.standard_normal((V, H)) * 0.1).astype(f32), np.zeros(V, f32)
    targets = rng.integers(0, V, T * B)
    out = (np.empty((V, T * B), f32), np.empty((T * B, H), f32), np.empty((V, H), f32),
           np.empty(V, f32))  # fmt: skip
    buffers = F.GatheredBuffers()

    def two_calls() -> None:
        r = F.gathered_forward(cell, *args, buffers=buffers)
        F.linear_cross_entropy(r.states[0].reshape(T * B, H), weight, bias, targets, out=out)

    def one_call() -> None:
        F.gathered_forward(cell, *args, buffers=buffers, decoder=(weight, bias, targets, out))

    return {"two calls": two_calls, "decoder=": one_call}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", nargs="+", default=["gru", "lstm", "rnn"])
    p.add_argument("--hidden", nargs="+", type=int, default=[128])
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args()
    for H in args.hidden:
        for cell in args.cells:
            runners = case(cell, H)
            medians: dict[str, list[float]] = {k: [] for k in runners}
            for fn in runners.values():
                fn()
            for _ in range(args.blocks):
                for name, fn in runners.items():
                    samples = []
                    for _ in range(args.calls):
                        t0 = time.perf_counter()
                        fn()
                        samples.append(time.perf_counter() - t0)
                    medians[name].append(float(np.median(samples)))
            a, b = (float(np.median(v)) * 1e3 for v in medians.values())
            print(f"{cell:4} H={H}: two calls {a:6.3f} ms  decoder= {b:6.3f} ms  ({a / b:.2f}x)")


if __name__ == "__main__":
    main()
