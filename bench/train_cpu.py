"""CharRNN.fit against the same PyTorch loop, and against itself with one part of its step as it
was before, interleaved in one process (on a machine shared with other jobs, only ratios within
one run mean much).

    PYTHONPATH=src python bench/train_cpu.py [H ...] [--before layer|decoder] [--wall]

``--before layer`` (the default): "before" runs the fused step with the layer on the encoded
input (``--plain-layer`` of bench/train_phases.py), the step before the layer read the ids.
``--before decoder``: "before" runs the decoder and its loss on NumPy (the reference backend of
functional.linear_cross_entropy: the same operations as the step before the kernel did them).
Default: one thread each (rnnfast.set_num_threads(1), torch.set_num_threads(1)) and CPU time,
the steadiest on a loaded machine; ``--wall``: default threads on both sides and wall time.

The loop is rnnfast._bench_train's (one-hot corpus, batch 32, windows of 50, float32, Adam,
clipping); ms per optimizer step, medians of interleaved samples.
"""

import argparse
import time

import numpy as np
import torch

import rnnfast
from rnnfast import functional
from rnnfast._bench_train import BATCH, BPTT, LR, TrainCase, model_for, torch_runner
from rnnfast.datasets import corpus_text

DECODER = functional.linear_cross_entropy


def numpy_decoder(*args, **kwargs):
    return DECODER(*args, **{**kwargs, "backend": "numpy"})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("hidden", nargs="*", type=int, default=[128, 512])
    p.add_argument("--before", choices=["layer", "decoder"], default="layer")
    p.add_argument("--wall", action="store_true")
    p.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    p.add_argument("--rounds", type=int)
    args = p.parse_args()
    text = corpus_text()
    clock = time.perf_counter if args.wall else time.process_time
    if not args.wall:
        rnnfast.set_num_threads(1)
        torch.set_num_threads(1)
    print(
        f"{'wall' if args.wall else 'CPU'} ms per step, "
        f"{'default threads' if args.wall else 'one thread each'}: before "
        f"({'the decoder on NumPy' if args.before == 'decoder' else 'layer on the encoded input'}"
        "), after, torch"
    )
    for H in args.hidden:
        for cell in args.cells:
            model = model_for(text, TrainCase(cell, H))
            steps = 4 if H == 128 else 2
            theirs = torch_runner(model, text, steps, threads=None if args.wall else 1)

            def ours(before: bool, model=model, steps=steps) -> None:
                if args.before == "layer":
                    model._fused_step.gathered = not before
                functional.linear_cross_entropy = (
                    numpy_decoder if before and args.before == "decoder" else DECODER
                )
                try:
                    model.fit(text, steps=steps, bptt=BPTT, batch_size=BATCH, lr=LR)
                finally:
                    functional.linear_cross_entropy = DECODER

            model.fit(text, steps=1, bptt=BPTT, batch_size=BATCH)  # makes the fused step
            runs = {"before": lambda: ours(True), "after": lambda: ours(False), "torch": theirs}
            for fn in runs.values():
                fn()  # warm-up
            samples: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(args.rounds or (5 if H == 128 else 3)):
                for k, fn in runs.items():
                    t0 = clock()
                    fn()
                    samples[k].append((clock() - t0) / steps * 1e3)
            m = {k: float(np.median(v)) for k, v in samples.items()}
            print(
                f"{cell:4} H={H:3}: before {m['before']:7.2f}  after {m['after']:7.2f}  "
                f"torch {m['torch']:7.2f}  after/before {m['before'] / m['after']:.2f}  "
                f"x torch before {m['torch'] / m['before']:.2f} "
                f"after {m['torch'] / m['after']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
