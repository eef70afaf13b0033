"""The sweep behind the choice of `rnnfast demo`'s recall task (docs/guide/command-line.md,
"The demo's recall task"): train a CharRNN of each cell on a recall variant and print one JSON
line per (seed, cell) with its recall accuracy on 300 new lines.

Its data are drawn by its own code (the same distributions as ``rnnfast.datasets.recall``,
other draws), so its numbers are those of the guide's list, not of the demo. Examples:

    PYTHONPATH=src python bench/experiments/recall_sweep.py --gap 20 --steps 1500
    RNNFAST_BACKEND=numpy PYTHONPATH=src python bench/experiments/recall_sweep.py --gap 15
    PYTHONPATH=src python bench/experiments/recall_sweep.py --kind noise --gap 25 --steps 1500
    PYTHONPATH=src python bench/experiments/recall_sweep.py --gap 5 --gap-max 25 --steps 1200
    PYTHONPATH=src python bench/experiments/recall_sweep.py --gap 20 --cells lstm --forget-bias 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from rnnfast import CharRNN

SYMBOLS = "abcdefghijklmnop"
NOISE = "0123456789ABCDEFGHIJ"


def make(
    kind: str,
    n: int,
    gap: int,
    k: int,
    rng: np.random.Generator,
    gap_max: int | None = None,
    n_noise: int = 8,
) -> str:
    """Lines of a symbol, a gap (dots, distractors from NOISE, or from the symbols), '=' and the
    symbol again; the gap's length drawn from gap..gap_max when that is given."""
    symbols = SYMBOLS[:k]
    lines = []
    for _ in range(n):
        c = symbols[rng.integers(k)]
        g = gap if gap_max is None else int(rng.integers(gap, gap_max + 1))
        if kind == "dots":
            middle = "." * g
        elif kind == "noise":
            middle = "".join(NOISE[i] for i in rng.integers(0, n_noise, g))
        else:  # "same": distractors drawn from the symbols themselves
            middle = "".join(symbols[i] for i in rng.integers(0, k, g))
        lines.append(c + middle + "=" + c + "\n")
    return "".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("dots", "noise", "same"), default="dots")
    p.add_argument("--gap", type=int, default=15)
    p.add_argument("--gap-max", type=int, default=None, help="draw each gap from gap..gap-max")
    p.add_argument("--symbols", type=int, default=4, help="how many symbols to recall")
    p.add_argument("--distractors", type=int, default=8, help="distinct noise symbols")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--embedding", type=int, default=None)
    p.add_argument("--forget-bias", type=float, default=None, help="LSTM forget-gate bias")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cells", default="rnn,lstm,gru")
    a = p.parse_args()
    for seed in (int(s) for s in a.seeds.split(",")):
        text, test = (
            make(a.kind, n, a.gap, a.symbols, np.random.default_rng(s), a.gap_max, a.distractors)
            for n, s in ((3000, seed), (300, seed + 1000))
        )
        vocab = "".join(sorted(set(text) | set(test)))
        for cell in a.cells.split(","):
            model = CharRNN(vocab, a.hidden, cell=cell, seed=seed, embedding_dim=a.embedding)
            if cell == "lstm" and a.forget_bias is not None:
                params = model.parameters()  # gates i, f, g, o: f is the second quarter
                params["rnn.bias_ih_l0"][a.hidden : 2 * a.hidden] = a.forget_bias
                params["rnn.bias_hh_l0"][a.hidden : 2 * a.hidden] = 0.0
            start = time.perf_counter()
            with threadpool_limits(1):
                losses = model.fit(text, a.steps, a.bptt, a.batch, lr=a.lr)
            seconds = time.perf_counter() - start
            ids = model.encode(test)
            logits, _ = model.eval().forward(ids[:, None])
            pos = np.flatnonzero(ids == vocab.index("="))
            right = np.argmax(logits[pos, 0], axis=1) == ids[pos + 1]
            row = {
                **{k: v for k, v in vars(a).items() if k not in ("seeds", "cells")},
                "backend": os.environ.get("RNNFAST_BACKEND", "auto"),
                "seed": seed,
                "cell": cell,
                "recall": round(float(right.mean()), 3),
                "loss_last_50": round(float(np.mean(losses[-50:])), 3),
                "loss_per_100_steps": [
                    round(float(np.mean(losses[i : i + 100])), 3)
                    for i in range(0, len(losses), 100)
                ],
                "seconds": round(seconds, 1),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
