"""CharRNN.fit of two source trees (two builds) against each other and against the same
PyTorch loop: each tree runs in its own processes, the trees alternating, and every process
alternates its fit with PyTorch's (the ratio to PyTorch is taken within a process).

    python bench/experiments/train_ab.py OLD_SRC NEW_SRC [--wall] [--hidden 128 512]
        [--cells rnn lstm gru] [--rounds 5] [--processes 4]

OLD_SRC/NEW_SRC: ``src`` directories with their extension built in place (for example a git
worktree of main, with its build). Default: one thread each (rnnfast.set_num_threads(1),
torch.set_num_threads(1)) and CPU time, the steadiest on a loaded machine; ``--wall``: default
threads and wall time. Two optimizer steps per fit call, as ``rnnfast bench --train``; ms per
step, medians.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def child(args: argparse.Namespace) -> None:
    import torch

    import rnnfast
    from rnnfast._bench_train import BATCH, BPTT, LR, TrainCase, model_for, torch_runner
    from rnnfast.datasets import corpus_text

    clock = time.perf_counter if args.wall else time.process_time
    if not args.wall:
        rnnfast.set_num_threads(1)
        torch.set_num_threads(1)
    text, out, steps = corpus_text(), {}, 2
    for H in args.hidden:
        for cell in args.cells:
            model = model_for(text, TrainCase(cell, H))
            theirs = torch_runner(model, text, steps, threads=None if args.wall else 1)

            def ours(model=model) -> None:
                model.fit(text, steps=steps, bptt=BPTT, batch_size=BATCH, lr=LR)

            ours()
            theirs()
            samples: dict[str, list[float]] = {"ours": [], "torch": []}
            for _ in range(args.rounds):
                for k, fn in (("ours", ours), ("torch", theirs)):
                    t0 = clock()
                    fn()
                    samples[k].append((clock() - t0) / steps * 1e3)
            out[f"{cell} {H}"] = {k: float(np.median(v)) for k, v in samples.items()}
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("old", nargs="?")
    p.add_argument("new", nargs="?")
    p.add_argument("--wall", action="store_true")
    p.add_argument("--hidden", nargs="+", type=int, default=[128, 512])
    p.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    trees = {"old": args.old, "new": args.new}
    forced = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # unset: OpenBLAS picks its kernels
    env = {k: v for k, v in os.environ.items() if k not in forced}
    flags = [*sys.argv[1:], "--child"]
    results: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.processes):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for name, src in order:
            run = subprocess.run(
                [sys.executable, os.path.abspath(__file__), *flags],
                env={**env, "PYTHONPATH": os.path.abspath(src)},
                capture_output=True,
                text=True,
                cwd="/",
                check=True,
            )
            results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
    kind = "wall ms, default threads" if args.wall else "CPU ms, one thread each"
    print(f"{kind} per step, medians over {args.processes} processes per tree")
    for case in results["old"][0]:
        old, new = ([x[case]["ours"] for x in results[k]] for k in ("old", "new"))
        x_old, x_new = (
            np.median([x[case]["torch"] / x[case]["ours"] for x in results[k]])
            for k in ("old", "new")
        )
        print(
            f"{case:9}: old {np.median(old):7.2f}  new {np.median(new):7.2f}  "
            f"old/new {np.median(old) / np.median(new):.2f}   x torch old {x_old:.2f}  "
            f"new {x_new:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
