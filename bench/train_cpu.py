"""CharRNN.fit against the same PyTorch loop on one thread each, in CPU time: the steadiest
comparison on a machine shared with other jobs (wall times there measure the load). Also the
fused step with the layer on the encoded input (``--plain-layer`` of bench/train_phases.py),
interleaved, so the table gives the step before and after the layer read the ids.

    PYTHONPATH=src python bench/train_cpu.py [H ...]

The loop is rnnfast._bench_train's (one-hot corpus, batch 32, windows of 50, float32, Adam,
clipping); CPU ms per optimizer step, medians of interleaved samples.
"""

import sys
import time

import numpy as np
import torch

import rnnfast
from rnnfast._bench_train import BATCH, BPTT, LR, TrainCase, model_for, torch_runner
from rnnfast.datasets import corpus_text


def main() -> None:
    text = corpus_text()
    rnnfast.set_num_threads(1)
    torch.set_num_threads(1)
    print("CPU ms per step, one thread each: before (layer on the encoded input), after, torch")
    for H in [int(a) for a in sys.argv[1:]] or [128, 512]:
        for cell in ("rnn", "lstm", "gru"):
            model = model_for(text, TrainCase(cell, H))
            steps = 4 if H == 128 else 2
            theirs = torch_runner(model, text, steps, threads=1)

            def ours(gathered: bool, model=model, steps=steps) -> None:
                model._fused_step.gathered = gathered
                model.fit(text, steps=steps, bptt=BPTT, batch_size=BATCH, lr=LR)

            model.fit(text, steps=1, bptt=BPTT, batch_size=BATCH)  # makes the fused step
            runs = {"before": lambda: ours(False), "after": lambda: ours(True), "torch": theirs}
            for fn in runs.values():
                fn()  # warm-up
            samples: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(5 if H == 128 else 3):
                for k, fn in runs.items():
                    t0 = time.process_time()
                    fn()
                    samples[k].append((time.process_time() - t0) / steps * 1e3)
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
