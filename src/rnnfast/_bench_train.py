"""End-to-end training speed: ``CharRNN.fit`` against the same loop written in PyTorch.

    python -m rnnfast._bench_train [--cells rnn lstm gru] [--hidden 128 512] [--steps 4]
    rnnfast bench --train

Both sides train a character model on the bundled corpus: one-hot input, one recurrent layer,
a Linear decoder, softmax cross-entropy, Adam (lr 2e-3), gradient-norm clipping at 5,
truncated BPTT over windows of 50 characters with the state carried (detached) across
windows, a batch of 32 streams, float32. PyTorch's loop is what its tutorials write
(``nn.RNN``/``nn.LSTM``/``nn.GRU`` + ``nn.Linear`` + ``F.cross_entropy`` + ``Adam`` +
``clip_grad_norm_``), at its default thread count. Both start from the same weights.

The two take turns in blocks (:func:`rnnfast.benchmark.best_block_medians`), so a shared
machine's load falls on both alike: compare the ratio, not the absolute chars/s.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rnnfast import get_num_threads, set_num_threads
from rnnfast.benchmark import best_block_medians
from rnnfast.datasets import corpus_text
from rnnfast.models import CharRNN

__all__ = [
    "PEERS",
    "TrainCase",
    "blas_line",
    "format_table",
    "model_for",
    "plain_runner",
    "rnnfast_runner",
    "run",
    "run_cli",
    "torch_loop",
    "torch_runner",
]

BPTT, BATCH, LR, MAX_NORM = 50, 32, 2e-3, 5.0


class TrainCase:
    """One row: a cell and a hidden size (the rest fixed above)."""

    def __init__(self, cell: str, hidden: int, dtype: str = "float32") -> None:
        self.cell, self.hidden, self.dtype = cell, hidden, dtype

    @property
    def label(self) -> str:
        return f"{self.cell} H={self.hidden}"


def model_for(text: str, case: TrainCase, seed: int = 0) -> CharRNN:
    return CharRNN(sorted(set(text)), case.hidden, cell=case.cell, dtype=case.dtype, seed=seed)


def torch_loop(
    model: CharRNN,
    text: str,
    *,
    bptt: int = BPTT,
    batch_size: int = BATCH,
    lr: float = LR,
    max_grad_norm: float = MAX_NORM,
) -> Callable[[int], list[float]]:
    """``fit(steps) -> losses``: the PyTorch loop equivalent to ``model.fit``, on a torch copy
    of ``model``'s current weights (each call starts at the first window with a zero state and
    a fresh Adam, as ``fit`` does)."""
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, model.dtype.name)
    V, H = len(model.vocab), model.rnn.hidden_size
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[model.cell]
    rnn = cls(V, H, dtype=dtype)
    decoder = torch.nn.Linear(H, V, dtype=dtype)
    state = model.state_dict()
    rnn.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in state.items() if k[:4] == "rnn."})
    decoder.load_state_dict(
        {k[8:]: torch.from_numpy(v) for k, v in state.items() if k[:8] == "decoder."}
    )
    params = [*rnn.parameters(), *decoder.parameters()]
    ids = torch.from_numpy(model.encode(text))
    n = (len(ids) - 1) // batch_size
    inputs = ids[: n * batch_size].reshape(batch_size, n).T.contiguous()
    targets = ids[1 : n * batch_size + 1].reshape(batch_size, n).T.contiguous()
    windows = [slice(t, min(t + bptt, n)) for t in range(0, n, bptt)]

    def detach(h: Any) -> Any:
        return tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()

    def fit(steps: int) -> list[float]:
        opt = torch.optim.Adam(params, lr=lr)
        losses = []
        h = None
        for step in range(steps):
            i = step % len(windows)
            w = windows[i]
            if i == 0:
                h = None
            x = F.one_hot(inputs[w], V).to(dtype)
            out, h_n = rnn(x, h)
            logits = decoder(out)
            loss = F.cross_entropy(logits.reshape(-1, V), targets[w].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            h = detach(h_n)
            losses.append(loss.item())
        return losses

    return fit


def rnnfast_runner(
    model: CharRNN, text: str, steps: int, threads: int | None = None
) -> Callable[[], Any]:
    """``model.fit``; ``threads``: :func:`rnnfast.set_num_threads` during the call (None: as
    set)."""

    def run() -> Any:
        if threads is None:
            return model.fit(text, steps=steps, bptt=BPTT, batch_size=BATCH, lr=LR)
        before = get_num_threads()
        set_num_threads(threads)
        try:
            return model.fit(text, steps=steps, bptt=BPTT, batch_size=BATCH, lr=LR)
        finally:
            if before is not None:
                set_num_threads(before)

    return run


def plain_runner(model: CharRNN, text: str, steps: int) -> Callable[[], Any]:
    """The generic loop (:func:`rnnfast.truncated_bptt` over ``model.forward``/``backward``,
    :func:`rnnfast.softmax_cross_entropy`, per-array clipping, Adam), as ``fit`` ran before its
    fused step, on a copy of ``model`` (so its optimizer takes the per-parameter path)."""
    from rnnfast.train import Adam, batchify, softmax_cross_entropy, truncated_bptt

    copy = model_for(text, TrainCase(model.cell, model.rnn.hidden_size, model.dtype.name))
    copy.load_state_dict(model.state_dict())
    params = copy.parameters()
    grads = {k: v for k, v in copy.grads.items()}
    ids = copy.encode(text)
    inputs, targets = batchify(ids[:-1], BATCH), batchify(ids[1:], BATCH)

    def run() -> Any:
        # the per-parameter update, as before the flat buffers
        opt = Adam(params, grads, lr=LR)
        opt._store = None
        return truncated_bptt(
            copy, inputs, targets, softmax_cross_entropy, opt, bptt=BPTT, steps=steps,
            max_grad_norm=MAX_NORM,
        ).losses  # fmt: skip

    return run


def torch_runner(
    model: CharRNN, text: str, steps: int, threads: int | None = None
) -> Callable[[], Any]:
    """The PyTorch loop; ``threads``: torch's intra-op threads during the call (None: its
    default)."""
    import torch

    fit = torch_loop(model, text)

    def run() -> Any:
        if threads is None:
            return fit(steps)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fit(steps)
        finally:
            torch.set_num_threads(before)

    return run


PEERS = {
    "rnnfast": rnnfast_runner,
    "rnnfast-plain": plain_runner,
    "rnnfast-1thread": lambda m, t, s: rnnfast_runner(m, t, s, threads=1),
    "torch": torch_runner,
    "torch-1thread": lambda m, t, s: torch_runner(m, t, s, threads=1),
}


def run(
    cases: Sequence[TrainCase],
    steps: int = 2,
    repeats: int = 3,
    rounds: int = 2,
    peers: Sequence[str] = ("rnnfast", "rnnfast-plain", "torch", "torch-1thread"),
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """chars/s of every peer on every case: per case the peers take turns in blocks of
    ``repeats`` samples of ``steps`` optimizer steps, ``rounds`` times; the lowest block
    median counts."""
    text = corpus_text()
    chars = steps * BPTT * BATCH
    results = []
    for i, case in enumerate(cases):
        model = model_for(text, case)
        runners = {p: PEERS[p](model, text, steps) for p in peers}
        for fn in runners.values():
            fn()  # warm-up: imports, BLAS and thread start, first allocations
        seconds = best_block_medians(runners, dict.fromkeys(runners, repeats), rounds)
        for peer, s in seconds.items():
            results.append(
                {
                    "cell": case.cell,
                    "hidden": case.hidden,
                    "dtype": case.dtype,
                    "peer": peer,
                    "steps": steps,
                    "seconds": s,
                    "chars_per_sec": chars / s,
                }
            )
        if progress is not None:
            progress(i + 1, len(cases))
    return results


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """One line per case: each peer's chars/s and rnnfast's ratio to the others."""
    rows: dict[tuple, dict[str, float]] = {}
    for r in results:
        rows.setdefault((r["cell"], r["hidden"], r["dtype"]), {})[r["peer"]] = r["chars_per_sec"]
    peers = [p for p in PEERS if any(p in row for row in rows.values())]
    others = [p for p in peers if p != "rnnfast"]
    head = f"{'cell':<5} {'H':>4} {'dtype':<8}" + "".join(f" {p + ' ch/s':>18}" for p in peers)
    head += "".join(f" {'x ' + p:>16}" for p in others)
    if "rnnfast-1thread" in peers and "torch-1thread" in peers:
        head += f" {'1thread x 1thread':>20}"
    lines = [head]
    for (cell, hidden, dtype), row in rows.items():
        line = f"{cell:<5} {hidden:>4} {dtype:<8}"
        line += "".join(f" {f'{row[p]:,.0f}' if p in row else '-':>18}" for p in peers)
        ours = row.get("rnnfast")
        for p in others:
            line += f" {f'{ours / row[p]:.2f}' if ours and row.get(p) else '-':>16}"
        if row.get("rnnfast-1thread") and row.get("torch-1thread"):
            line += f" {row['rnnfast-1thread'] / row['torch-1thread']:>20.2f}"
        lines.append(line)
    return "\n".join(lines)


def blas_line() -> str:
    """Which BLAS libraries, versions and core types are loaded (threadpoolctl), and a warning
    when the environment forces a core type."""
    import os

    from threadpoolctl import threadpool_info

    libs = [
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
        f"({i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    line = "BLAS: " + ("; ".join(libs) or "unknown")
    forced = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if forced:
        line += f"\nWARNING: {', '.join(forced)} set in the environment: the core type is forced"
    return line


def run_cli(args: Any) -> int:
    """``rnnfast bench --train``: the default cases, printed with date, machine and command."""
    import datetime

    from rnnfast.benchmark import machine

    peers = list(PEERS)
    try:
        import torch  # noqa: F401
    except ImportError:
        peers = [p for p in peers if not p.startswith("torch")]
    cases = [TrainCase(c, h) for h in (128, 512) for c in ("rnn", "lstm", "gru")]
    print(f"Timing CharRNN.fit against {', '.join(peers)} on {len(cases)} cases.", flush=True)
    results = run(cases, repeats=args.repeats or 3, peers=peers)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"\n$ {args.command_line}\n{date}, {machine()}\n{blas_line()}\n")
    print(format_table(results))
    if args.json:
        from rnnfast.cli._common import write_json

        write_json(args.json, {"date": date, "machine": machine(), "results": results})
        print(f"\nWrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnfast._bench_train", description=__doc__)
    p.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    p.add_argument("--hidden", nargs="+", type=int, default=[128, 512])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    args = p.parse_args(argv)
    cases = [TrainCase(c, h) for h in args.hidden for c in args.cells]
    results = run(cases, args.steps, args.repeats, args.rounds, args.peers)
    print(blas_line())
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
