"""Share of a CharRNN.fit step in the recurrent layer (forward, backward) against the rest.

    PYTHONPATH=src python bench/train_phases.py [THREADS]

THREADS: rnnfast.set_num_threads first (1 for a profile less sensitive to a loaded machine).
The case is rnnfast._bench_train's: one-hot corpus, batch 32, windows of 50, float32.
"""

import sys
import time

import rnnfast
from rnnfast.datasets import corpus_text
from rnnfast.models import CharRNN


def timed(fn, acc, key):
    """fn, adding its seconds into acc[key]."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        acc[key] += time.perf_counter() - t0
        return result

    return wrapper


def main() -> None:
    if len(sys.argv) > 1:
        rnnfast.set_num_threads(int(sys.argv[1]))
    text = corpus_text()
    for H in (128, 512):
        for cell in ("rnn", "lstm", "gru"):
            model = CharRNN(sorted(set(text)), H, cell=cell, seed=0)
            acc = {"fwd": 0.0, "bwd": 0.0}
            # instance attributes: Module.__call__ and the step call these
            model.rnn.forward = timed(model.rnn.forward, acc, "fwd")
            model.rnn.backward = timed(model.rnn.backward, acc, "bwd")
            steps = 6 if H == 128 else 3
            model.fit(text, steps=2, bptt=50, batch_size=32)  # warm-up
            acc.update(fwd=0.0, bwd=0.0)
            t0 = time.perf_counter()
            model.fit(text, steps=steps, bptt=50, batch_size=32)
            s = (time.perf_counter() - t0) / steps * 1e3
            f, b = acc["fwd"] / steps * 1e3, acc["bwd"] / steps * 1e3
            print(
                f"{cell:4} H={H:3}: step {s:7.1f} ms  layer forward {f:6.1f} ({f / s:4.0%})  "
                f"backward {b:6.1f} ({b / s:4.0%})  rest {s - f - b:5.1f} ({(s - f - b) / s:4.0%})",
                flush=True,
            )


if __name__ == "__main__":
    main()
