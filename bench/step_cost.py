"""What one streaming step costs, by hidden size: a fixed part and a part per byte of weights.

Times ``RNN.step`` (or ``LSTM.step``, ``GRU.step``: ``--cell``) (B=1, float32) at each hidden
size, the best of several repeats of many
calls, and fits time = fixed + slope * weight bytes over the sizes (least squares). The fixed
part is the call from Python (argument checks, two small output arrays); the slope, the
matrix-vector product reading w_ih and w_hh once per call.

    python bench/step_cost.py [--cell rnn|lstm|gru] [--input-size 32] [--sizes 32 64 128 ...]
        [--threads 1 2]

``--threads``: time each size with each of these ``rnnfast.set_num_threads`` settings, in
turn (one thread: no step shares its rows with the step's helper thread), one column each.

The part per byte is bounded by the L2 cache's read bandwidth when the weights do not fit in L1:
on the AVX-512 EPYC of docs/design/kernels.md, about 117 GB/s, so 2.8 us for the 328 KB of an
LSTM at D=32 H=128 before any call overhead.
"""

import argparse
import timeit

import numpy as np

import rnnfast
from rnnfast import GRU, LSTM, RNN

CELLS = {"rnn": (RNN, 1), "lstm": (LSTM, 4), "gru": (GRU, 3)}  # class, gate blocks


def step_time_us(cell: str, input_size: int, hidden_size: int, calls: int, repeats: int) -> float:
    """Best mean time of one step call, in microseconds."""
    layer = CELLS[cell][0](input_size, hidden_size, seed=0)
    x = np.ones((1, input_size), np.float32)
    h = np.zeros((1, 1, hidden_size), np.float32)
    state = (h, h.copy()) if cell == "lstm" else h
    best = min(timeit.repeat(lambda: layer.step(x, state), number=calls, repeat=repeats))
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=sorted(CELLS), default="rnn")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128, 160, 192, 256])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=None)
    args = parser.parse_args()
    kib, times = [], []
    settings = args.threads or [None]
    print(
        "hidden  weights KiB"
        + "".join("  us per call" if n is None else f"  us, {n} thread(s)" for n in settings)
    )
    for H in args.sizes:
        kib.append(CELLS[args.cell][1] * (args.input_size + H) * H * 4 / 1024)
        row = []
        for n in settings:
            if n is not None:
                rnnfast.set_num_threads(n)
            row.append(step_time_us(args.cell, args.input_size, H, args.calls, args.repeats))
        times.append(row[0])
        print(f"{H:6d}  {kib[-1]:11.1f}" + "".join(f"  {t:11.3f}" for t in row))
    if len(args.sizes) > 1:
        slope, fixed = np.polyfit(kib, times, 1)
        print(f"fit ({settings[0] or 'default'}): {fixed:.3f} us + {slope * 1e3:.1f} ns per KiB")


if __name__ == "__main__":
    main()
