"""The per-step product of the H = 1024 gated rows: BLAS (w_hh repacked every step) against the
panel product with the helper thread (w_hh packed once a call), interleaved in one process with
torch beside them, medians.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/experiments/panel_weight_ab.py [--cells lstm gru] [--modes train inference]

"blas" forces the rule's old limit (panel_helped_max_weight_bytes = 8 MiB: BLAS at H = 1024),
"panel" the new default (64 MiB).
"""

import argparse
import statistics
import time

from rnnfast import benchmark
from rnnfast._backend import kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--modes", nargs="+", default=["train", "inference"])
    parser.add_argument("--size", default="50,64,1024,1024", help="T,B,D,H")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    T, B, D, H = map(int, args.size.split(","))
    for cell in args.cells:
        for mode in args.modes:
            case = benchmark.Case(T, B, D, H, cell=cell, mode=mode)
            ours = benchmark.make_runner("rnnfast", case)

            def limited(limit, run=ours):
                def call():
                    with kernels.tuned(panel_helped_max_weight_bytes=limit):
                        return run()

                return call

            runners = {"blas": limited(8 << 20), "panel": limited(64 << 20)}
            if "torch" in benchmark.available_peers(cell, mode):
                runners["torch"] = benchmark.make_runner("torch", case)
            for run in runners.values():
                run()
            samples: dict[str, list[float]] = {k: [] for k in runners}
            for _ in range(args.rounds):
                for name, run in runners.items():
                    time.sleep(0.2)
                    t0 = time.perf_counter()
                    run()
                    samples[name].append(time.perf_counter() - t0)
            ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
            line = "  ".join(f"{k} {v:.0f} ms" for k, v in ms.items())
            if "torch" in ms:
                line += f"  torch/blas {ms['torch'] / ms['blas']:.2f}"
                line += f"  torch/panel {ms['torch'] / ms['panel']:.2f}"
            print(f"{cell} {mode} {case.label}: {line}", flush=True)


if __name__ == "__main__":
    main()
