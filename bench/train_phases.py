"""Share of a CharRNN.fit step in the recurrent layer (forward, backward) against the rest.

    PYTHONPATH=src python bench/train_phases.py [THREADS]

THREADS: rnnfast.set_num_threads first (1 for a profile less sensitive to a loaded machine).
"""

import sys
import time

import rnnfast
from rnnfast.datasets import corpus_text
from rnnfast.models import CharRNN

text = corpus_text()
threads = int(sys.argv[1]) if len(sys.argv) > 1 else None
if threads:
    rnnfast.set_num_threads(threads)
for H in (128, 512):
    for cell in ("rnn", "lstm", "gru"):
        m = CharRNN(sorted(set(text)), H, cell=cell, seed=0)
        acc = {"fwd": 0.0, "bwd": 0.0}
        f0, b0 = m.rnn.forward, m.rnn.backward

        def fwd(*a, **k):
            t = time.perf_counter()
            r = f0(*a, **k)
            acc["fwd"] += time.perf_counter() - t
            return r

        def bwd(*a, **k):
            t = time.perf_counter()
            r = b0(*a, **k)
            acc["bwd"] += time.perf_counter() - t
            return r

        m.rnn.forward, m.rnn.backward = fwd, bwd
        m.rnn.__call__  # RNNBase __call__ -> self.forward (instance attr wins)
        steps = 6 if H == 128 else 3
        m.fit(text, steps=2, bptt=50, batch_size=32)
        acc.update(fwd=0.0, bwd=0.0)
        t = time.perf_counter()
        m.fit(text, steps=steps, bptt=50, batch_size=32)
        tot = time.perf_counter() - t
        f, b = acc["fwd"] / steps * 1e3, acc["bwd"] / steps * 1e3
        s = tot / steps * 1e3
        print(
            f"{cell:4} H={H:3}: step {s:7.1f} ms  layer fwd {f:6.1f} ({f / s:4.0%})  layer bwd {b:6.1f} ({b / s:4.0%})  rest {s - f - b:5.1f} ({(s - f - b) / s:4.0%})",
            flush=True,
        )
