"""The LSTM inference forward (training=False): an older build of the kernels against this one
(and this one under other tunings) and torch.nn.LSTM under no_grad, interleaved in one process
(order shuffled each round); medians, 20th percentiles, and torch's median over each one's.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/experiments/lstm_infer_ab.py --old /tmp/old/kernels*.so [--rows 0 1 2 3] \\
        [--variant split:split_small_min_hidden=128 ...]

``--one``: one thread (no helper, BLAS at one thread) and thread CPU time instead of wall time
(the work of each call, which other processes sharing the cores barely move); torch is left out.
"""

import argparse
import statistics

from proj_ab import interleaved, load_old, timing

from rnnfast import benchmark
from rnnfast._backend import kernels as new

ROWS = [(100, 8, 64, 128), (100, 32, 128, 256), (50, 64, 512, 512), (50, 64, 1024, 1024)]


def variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, tuning for kernels.tuned)."""
    name, _, pairs = text.partition(":")
    tune = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        tune[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="an older build's kernels*.so")
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--variant", nargs="*", default=[], help="name:key=value,... (new)")
    parser.add_argument("--rounds", type=int, default=0, help="(default: 41, 11 from H = 512)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--one", action="store_true", help="one thread, thread CPU time")
    args = parser.parse_args()
    old = load_old(args.old)
    clock, limit = timing(args.one)
    builds = [("old", old, {}), ("new", new, {})]
    builds += [(name, new, tune) for name, tune in map(variant, args.variant)]
    with limit:
        for row in (ROWS[i] for i in args.rows):
            case = benchmark.Case(*row, cell="lstm", mode="inference", dtype=args.dtype)
            p = benchmark.make_problem(case, 0)
            fwd = (p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"] + p["b_hh"], None,
                   False)  # fmt: skip
            runs = {name: make_run(k, fwd, tune, clock, args.one) for name, k, tune in builds}
            if not args.one:
                runs["torch"] = timed(benchmark._RUNNERS["torch"](p, case), clock)
            samples = interleaved(runs, args.rounds or (41 if row[3] <= 256 else 11))
            med = {name: statistics.median(v) for name, v in samples.items()}
            parts = [f"{n} {1e3 * m:.3f} (p20 {1e3 * sorted(samples[n])[len(samples[n]) // 5]:.3f})"
                     for n, m in med.items()]  # fmt: skip
            ratios = [f"{n} {med['torch'] / m:.3f}" for n, m in med.items() if "torch" in med]
            print(",".join(map(str, row)), "ms:", " | ".join(parts), flush=True)
            if ratios:
                print("    torch / each:", " ".join(ratios), flush=True)


def timed(call, clock):
    def run():
        t0 = clock()
        call()
        return clock() - t0

    return run


def make_run(k, fwd, tune, clock, one):
    """One inference forward on kernels ``k`` under ``tune``: seconds."""
    if one:
        tune = {**tune, "overlap": "off"}

    def run():
        with k.tuned(**tune):
            t0 = clock()
            k.lstm_forward(*fwd)
            return clock() - t0

    return run


if __name__ == "__main__":
    main()
