"""A batch of one: forward + backward with the helper taking the GEMMs around the loop in
chunks (``overlap_single_steps``, tuning.h) against the same call without it, and the forward's
steps on w_hh.T in slices against the dot form (``step_sliced_max_weight_bytes``), in one
process.

The two rules take turns in blocks of ``--calls`` calls (a helper keeps spinning a while
after its job, so call-by-call alternation would time one rule's thread against the other),
``--rounds`` times; each rule's time is the median and the best of its block medians, in us::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/experiments/single_row_ab.py [--sizes 25,1,65,100] [--cells lstm gru]
            [--mode train|inference] [--threads 1] [--cpu]

``--mode inference``: the forward alone; ``--threads 1 --cpu``: no helper, and this thread's CPU
time (the work of each rule, which other processes sharing the cores barely move).
"""

import argparse
import statistics
import time

import rnnfast
from rnnfast import benchmark
from rnnfast._backend import kernels

ONE_PASS = {"overlap_single_min_macs": 2**62}
DOT_FORM = {"step_sliced_max_weight_bytes": 0}  # the forward's steps on w_hh as stored
RULES = {
    "chunks": {},
    "one pass": ONE_PASS,
    "chunks, dot form": DOT_FORM,
    "one pass, dot form": {**ONE_PASS, **DOT_FORM},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["25,1,65,100"])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--mode", choices=["train", "inference"], default="train")
    parser.add_argument("--threads", type=int, default=None, help="rnnfast.set_num_threads")
    parser.add_argument("--cpu", action="store_true", help="this thread's CPU time, not wall")
    args = parser.parse_args()
    clock = time.thread_time if args.cpu else time.perf_counter
    if args.threads is not None:
        rnnfast.set_num_threads(args.threads)
    for size in args.sizes:
        for cell in args.cells:
            case = benchmark.Case(*map(int, size.split(",")), cell=cell, mode=args.mode)
            run = benchmark.make_runner("rnnfast", case)
            blocks: dict[str, list[float]] = {name: [] for name in RULES}
            for _ in range(args.rounds):
                for name, rules in RULES.items():
                    with kernels.tuned(**rules):
                        samples = []
                        for _ in range(args.calls):
                            t0 = clock()
                            run()
                            samples.append(clock() - t0)
                    blocks[name].append(statistics.median(samples))
            print(
                f"{cell:4} {size:15} "
                + "  ".join(
                    f"{name} {1e6 * statistics.median(v):.1f} (best {1e6 * min(v):.1f})"
                    for name, v in blocks.items()
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
