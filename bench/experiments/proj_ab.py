"""The LSTM with proj_size = H // 2: an older build of the kernels against this one, and this
one's plain LSTM of the same H, forward + backward interleaved in one process (order shuffled
each round), medians and 20th percentiles.

    cp src/rnnfast/_core/kernels*.so /tmp/old/   # (in a checkout of the older commit, built)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python bench/experiments/proj_ab.py --old /tmp/old/kernels*.so [--rows 0 1 2 3 4]

``--one``: one thread (no helper, BLAS at one thread) and thread CPU time instead of wall time:
the work of each call, which other processes sharing the cores barely move.
"""

import argparse
import contextlib
import ctypes
import importlib.machinery
import importlib.util
import random
import statistics
import time

from rnnfast import _threads, benchmark
from rnnfast._backend import kernels as new

ROWS = [(25, 1, 65, 100), (100, 8, 64, 128), (100, 32, 128, 256), (50, 64, 512, 512),
        (50, 64, 1024, 1024)]  # fmt: skip


def load_old(path):
    """The kernels module of another build, beside this one (its own tuning and threads)."""
    loader = importlib.machinery.ExtensionFileLoader("rnnfast_old.kernels", path)
    spec = importlib.util.spec_from_file_location("rnnfast_old.kernels", path, loader=loader)
    old = importlib.util.module_from_spec(spec)
    loader.exec_module(old)
    pointers = (_threads._blas_set_local, _threads._blas_get)
    if all(pointers):
        old.set_blas_thread_functions(*(ctypes.cast(f, ctypes.c_void_p).value for f in pointers))
    old.set_available_cpus(_threads.available_cpus())
    return old


def interleaved(runs, rounds):
    """Each of ``runs`` once to warm up, then ``rounds`` rounds of all in a shuffled order (the
    same for every build): {name: [its result each round]}."""
    for run in runs.values():
        run()
    samples = {name: [] for name in runs}
    order = random.Random(1)
    for _ in range(rounds):
        names = list(runs)
        order.shuffle(names)
        for name in names:
            samples[name].append(runs[name]())
    return samples


def timing(one_thread: bool):
    """(clock, context): wall time with the default threads, or with ``one_thread`` each
    thread's CPU time under a one-thread BLAS limit."""
    if not one_thread:
        return time.perf_counter, contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return time.thread_time, threadpool_limits(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="an older build's kernels*.so")
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=0, help="(default: 21, 7 from H = 512)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--one", action="store_true", help="one thread, thread CPU time")
    args = parser.parse_args()
    old = load_old(args.old)
    clock, limit = timing(args.one)
    with limit:
        for row in (ROWS[i] for i in args.rows):
            runs = {}
            for mode in ("proj", "train"):
                case = benchmark.Case(*row, cell="lstm", mode=mode, dtype=args.dtype)
                p = benchmark.make_problem(case, 0)
                for name, k in (("old", old), ("new", new)):
                    if mode == "proj" or name == "new":
                        runs[f"{name} {mode}"] = make_run(k, p, clock, args.one)
            samples = interleaved(runs, args.rounds or (21 if row[3] <= 256 else 7))
            parts = []
            for name, v in samples.items():
                total = sorted(f + b for f, b in v)
                parts.append(
                    f"{name}: fwd {1e3 * statistics.median(f for f, _ in v):.3f} "
                    f"bwd {1e3 * statistics.median(b for _, b in v):.3f} "
                    f"both {1e3 * statistics.median(total):.3f} "
                    f"(p20 {1e3 * total[len(total) // 5]:.3f}) ms"
                )
            print(",".join(map(str, row)), " | ".join(parts), flush=True)


def make_run(k, p, clock, one):
    """One forward (training) and backward on kernels ``k``: (forward, backward) seconds."""
    b, w_hr = p["b_ih"] + p["b_hh"], p.get("w_hr")

    def run():
        with k.tuned(overlap="off") if one else contextlib.nullcontext():
            t0 = clock()
            h, c, gates = k.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], b,
                                         w_hr, True)  # fmt: skip
            t1 = clock()
            k.lstm_backward(p["dh"], None, p["x"], p["h0"], p["c0"], h, c, gates, p["w_ih"],
                            p["w_hh"], w_hr)  # fmt: skip
            return t1 - t0, clock() - t1

    return run


if __name__ == "__main__":
    main()
