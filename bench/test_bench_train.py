"""pytest-benchmark suite: end-to-end training, ``CharRNN.fit`` against the same PyTorch loop.

    pytest bench/test_bench_train.py --benchmark-only --benchmark-columns=median,iqr,rounds

One benchmark group per cell and hidden size (one-hot input, one layer, Linear decoder, softmax
cross-entropy, Adam, clipping at 5, truncated BPTT over 50 characters, batch 32, float32; see
:mod:`rnnfast._bench_train`): each round is 2 optimizer steps (3,200 characters). Compare the
medians within a group; the machine is shared, so ratios are what count.
"""

import pytest

from rnnfast import _bench_train as bt
from rnnfast.datasets import corpus_text

TEXT = corpus_text()
STEPS = 2
CASES = [bt.TrainCase(cell, hidden) for hidden in (128, 512) for cell in ("rnn", "lstm", "gru")]


@pytest.mark.parametrize("peer", list(bt.PEERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.cell}-H{c.hidden}")
def test_charrnn_fit(benchmark, case, peer):
    if peer.startswith("torch"):
        pytest.importorskip("torch")
    model = bt.model_for(TEXT, case)
    runner = bt.PEERS[peer](model, TEXT, STEPS)
    runner()  # warm-up
    benchmark.group = f"CharRNN.fit {case.label} (chars per round: {STEPS * bt.BPTT * bt.BATCH})"
    benchmark.pedantic(runner, rounds=5, iterations=1)
