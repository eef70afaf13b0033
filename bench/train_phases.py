"""Where a CharRNN.fit step goes: the recurrent layer's forward and backward, the rest of the
fused step (encoding, decoder, softmax cross-entropy), the optimizer, and the loop around them
(zeroing, clipping, windows).

    PYTHONPATH=src python bench/train_phases.py [THREADS] [--cpu] [--plain-layer]
        [--embedding DIM] [--layers L] [--hidden H ...] [--cells CELL ...]

THREADS: rnnfast.set_num_threads first (1 for a profile less sensitive to a loaded machine).
--cpu: this process's CPU time instead of wall time (with THREADS 1, what a loaded machine
changes least). --plain-layer: the layer on the encoded input, not reading the ids (the step
before functional.gathered_forward).
The case is rnnfast._bench_train's: one-hot corpus, batch 32, windows of 50, float32, Adam.
"""

import argparse
import resource
import time

import rnnfast
from rnnfast import functional
from rnnfast.datasets import corpus_text
from rnnfast.models import CharRNN
from rnnfast.models._base import make_optimizer

PHASES = ("fwd", "bwd", "step", "opt")
GATHERED = (functional.gathered_forward, functional.gathered_backward)


CLOCK = [time.perf_counter]


def timed(fn, acc, key):
    """fn, adding its seconds into acc[key]."""

    def wrapper(*args, **kwargs):
        t0 = CLOCK[0]()
        result = fn(*args, **kwargs)
        acc[key] += CLOCK[0]() - t0
        return result

    return wrapper


def profile(
    text: str, cell: str, H: int, steps: int, embedding: int | None, layers: int, plain: bool
):
    model = CharRNN(
        sorted(set(text)), H, cell=cell, seed=0, embedding_dim=embedding, num_layers=layers
    )
    acc = dict.fromkeys(PHASES, 0.0)
    # instance attributes: Module.__call__, the fused step and the window loop call these
    model.rnn.forward = timed(model.rnn.forward, acc, "fwd")
    model.rnn.backward = timed(model.rnn.backward, acc, "bwd")
    # the one-layer path of the fused step calls these instead (looked up at each call)
    functional.gathered_forward = timed(GATHERED[0], acc, "fwd")
    functional.gathered_backward = timed(GATHERED[1], acc, "bwd")
    opt = make_optimizer(model, "adam", None)
    opt.step = timed(opt.step, acc, "opt")
    model.fit(text, steps=2, bptt=50, batch_size=32, optimizer=opt)  # warm-up, makes the step
    fused = model._fused_step
    if plain:
        fused.gathered = False
        model.fit(text, steps=2, bptt=50, batch_size=32, optimizer=opt)  # its buffers
    fused_call = type(fused).__call__
    model._fused_step = type(fused).__new__(type(fused))
    model._fused_step.__dict__.update(fused.__dict__)
    type(model._fused_step).__call__ = timed(fused_call, acc, "step")
    try:
        for k in acc:
            acc[k] = 0.0
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), CLOCK[0]()
        model.fit(text, steps=steps, bptt=50, batch_size=32, optimizer=opt)
        total, r1 = CLOCK[0]() - t0, resource.getrusage(resource.RUSAGE_SELF)
    finally:
        type(fused).__call__ = fused_call
    acc["faults"] = r1.ru_minflt - r0.ru_minflt  # pages touched for the first time
    acc["sys"] = r1.ru_stime - r0.ru_stime
    return total / steps, {k: v / steps for k, v in acc.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("threads", nargs="?", type=int)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--plain-layer", action="store_true")
    p.add_argument("--embedding", type=int)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    p.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    args = p.parse_args()
    if args.cpu:
        CLOCK[0] = time.process_time
    if args.threads is not None:
        rnnfast.set_num_threads(args.threads)
    text = corpus_text()
    print(
        "ms per step: layer forward, layer backward, decoder+loss (+encoding), optimizer, "
        "other; minor page faults and system ms per step"
    )
    for H in args.hidden:
        for cell in args.cells:
            steps = 8 if H == 128 else 3
            s, a = profile(text, cell, H, steps, args.embedding, args.layers, args.plain_layer)
            dec = a["step"] - a["fwd"] - a["bwd"]
            other = s - a["step"] - a["opt"]
            parts = [("fwd", a["fwd"]), ("bwd", a["bwd"]), ("dec", dec), ("opt", a["opt"]),
                     ("other", other)]  # fmt: skip
            line = "  ".join(f"{k} {v * 1e3:6.2f} ({v / s:4.0%})" for k, v in parts)
            line += f"  faults {a['faults']:6.0f}  sys {a['sys'] * 1e3:5.2f}"
            print(f"{cell:4} H={H:3}: step {s * 1e3:7.2f} ms  {line}", flush=True)


if __name__ == "__main__":
    main()
