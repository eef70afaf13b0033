"""Write bench/RESULTS.md: every benchmark table, from one run.

    python bench/make_results.py [--out bench/RESULTS.md] [--repeats N] [--rounds 5]

Needs the peers installed for their columns (pip install torch==2.13.0 jax jaxlib). Run it
on a quiet machine: the tables report medians and ratios measured in this same run.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
from pathlib import Path

import gated
import harness
import numpy as np

import rnnfast
from rnnfast import benchmark
from rnnfast.benchmark import Case


def grid_section(dtype: str, repeats: int | None, rounds: int) -> tuple[str, list[dict]]:
    cases = [Case(c.T, c.B, c.D, c.H, dtype) for c in benchmark.DEFAULT_GRID]
    results = benchmark.run(
        cases,
        repeats=repeats,
        min_time=0.3 * rounds,
        rounds=rounds,
        gemm_roof=benchmark.ROOF_GEMM_SIZE,
    )
    n = benchmark.ROOF_GEMM_SIZE
    head = (
        f"### Forward + BPTT, {dtype} (GEMM GF/s: a {n}^3 BLAS GEMM timed in each case's "
        "rotation with the peers, the roof for that row's % of GEMM)"
    )
    return f"{head}\n\n```\n{benchmark.format_table(results)}\n```\n", results


def step_section() -> str:
    lines = [
        "| peer | us per call | rnnfast RNN.step speed-up | rnnfast RNNCell speed-up |",
        "|---|---|---|---|",
    ]
    times = harness.time_per_call(harness.step_runners())
    for peer, us in times.items():
        lines.append(
            f"| {peer} | {us:.3f} | {us / times['rnnfast']:.1f}x | "
            f"{us / times['rnnfast-cell']:.1f}x |"
        )
    return (
        "### Streaming step (B=1, D=32, H=128, float32, one call from Python)\n\n"
        "rnnfast is `RNN.step`, rnnfast-cell `RNNCell` (which also keeps copies of its inputs "
        "for a backward pass), torch `torch.nn.RNNCell` under `no_grad`.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def inference_section(training: list[dict]) -> str:
    lines = [
        "| T,B,D,H | rnnfast forward ms | torch no_grad ms | x vs torch | rnnfast fwd+bwd ms |",
        "|---|---|---|---|---|",
    ]
    train_ms = {
        (r["T"], r["B"], r["D"], r["H"]): r["median_ms"] for r in training if r["peer"] == "rnnfast"
    }
    for case in benchmark.DEFAULT_GRID:
        runners = harness.forward_runners(case)
        ms = harness.time_blocks(runners, repeats=11)
        torch_ms = ms.get("torch")
        ratio = "-" if torch_ms is None else f"{torch_ms / ms['rnnfast']:.2f}"
        lines.append(
            f"| {case.label} | {ms['rnnfast']:.3f} | "
            f"{'-' if torch_ms is None else f'{torch_ms:.3f}'} | {ratio} | "
            f"{train_ms.get((case.T, case.B, case.D, case.H), float('nan')):.3f} |"
        )
    return "### Inference-only forward (float32)\n\n" + "\n".join(lines) + "\n"


def memory_section() -> str:
    lines = ["| T,B,D,H | " + " | ".join(benchmark.available_peers()) + " |"]
    lines.append("|---" * (1 + len(benchmark.available_peers())) + "|")
    for case in benchmark.DEFAULT_GRID[3:]:
        cells = []
        for peer in benchmark.available_peers():
            m = harness.peak_extra_memory(case, peer)
            extra = m["peak_extra_bytes"]
            cells.append(f"{extra / 2**20:.1f} MiB ({extra / m['tbh_bytes']:.2f})")
        lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
    return (
        "### Peak extra memory of forward + backward (float32)\n\n"
        "Beyond inputs, weights, outputs and gradients; in parentheses, in units of one "
        "(T, B, H) buffer.\n\n" + "\n".join(lines) + "\n"
    )


def _torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def threads_section() -> str:
    lines = ["| T,B,D,H | peer | 1 thread ms | 2 threads ms | speed-up |", "|---|---|---|---|---|"]
    peers = [p for p in ("rnnfast", "torch") if p in benchmark.available_peers()]
    for case in benchmark.DEFAULT_GRID[4:]:
        for peer in peers:
            fn = benchmark.make_runner(peer, case)
            setter = _torch_threads if peer == "torch" else rnnfast.set_num_threads
            setup = {n: functools.partial(setter, n) for n in (1, 2)}
            ms = harness.time_blocks(dict.fromkeys(setup, fn), repeats=5, setup=setup)
            lines.append(
                f"| {case.label} | {peer} | {ms[1]:.1f} | {ms[2]:.1f} | {ms[1] / ms[2]:.2f}x |"
            )
    rnnfast.set_num_threads(2)
    return "### Two threads against one (float32)\n\n" + "\n".join(lines) + "\n"


def train_section() -> str:
    from rnnfast import _bench_train as train

    peers = [p for p in train.PEERS if "torch" not in p or "torch" in benchmark.available_peers()]
    cases = [train.TrainCase(c, h) for h in (128, 512) for c in ("rnn", "lstm", "gru")]
    results = train.run(cases, peers=peers)
    return (
        "### End to end: `CharRNN.fit` against the same PyTorch loop (float32, chars/s)\n\n"
        "The loop of `rnnfast bench --train` (one-hot input, one layer, Linear decoder, softmax "
        "cross-entropy, Adam, clipping, truncated BPTT 50, batch 32); `-1thread` peers run "
        "with `rnnfast.set_num_threads(1)` / `torch.set_num_threads(1)`, `rnnfast-plain` is "
        "the generic `truncated_bptt` loop. " + train.blas_line() + "\n\n"
        f"```\n{train.format_table(results)}\n```\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--repeats", type=int, default=None)
    # Five rounds: on a shared machine the ratios move by tens of percent between runs (compare
    # two runs of this script), and with more rounds each peer more likely gets a quiet block.
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from rnnfast._core import kernels as _kernels

    blas = benchmark.blas_info()

    sections = [
        "# rnnfast benchmark results\n",
        f"- Command: `python {' '.join(sys.argv)}`",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {benchmark.machine()}; rnnfast SIMD level {_kernels.simd_level()}; "
        f"threads {rnnfast.get_num_threads()}",
        f"- BLAS of the kernels (threadpoolctl): {blas['library']} {blas['version']}, core type "
        f"{blas['core']}" + (f" (warning: {blas['warning']})" if "warning" in blas else ""),
        f"- Peers: {', '.join(benchmark.available_peers())}"
        + "".join(
            f"; {m} {__import__(m).__version__}"
            for m in ("torch", "jax")
            if m in benchmark.available_peers()
        ),
        f"- Times: each peer's repeats run in blocks after a pause, {args.rounds} rounds over the "
        "peers (grid tables; three elsewhere); "
        "a peer's time is the lowest of its blocks' medians (see `rnnfast.benchmark.run`); "
        "`x vs P` is P's time over rnnfast's (above 1: rnnfast is faster). FLOPs counted as "
        "`6*T*B*H*(D+H)`.\n",
    ]
    grid32, train32 = grid_section("float32", args.repeats, args.rounds)
    print(grid32, flush=True)
    grid64, _ = grid_section("float64", args.repeats, args.rounds)
    print(grid64, flush=True)
    sections += ["## Plain (Elman) RNN\n", grid32, grid64]
    gated_parts = [
        "## Gated cells (LSTM, GRU)\n\nFLOPs counted as `2*G*T*B*H*(D+H)` per pass (G = 4 "
        "gates for the LSTM, 3 for "
        "the GRU), three passes for forward + backward; `rnnfast bench --cell lstm|gru "
        "[--mode inference|packed|proj] [--dtype float64]` times any of these rows.\n"
    ]
    for text in gated.tables(["lstm", "gru"], benchmark.GATED_GRID, rounds=min(args.rounds, 3)):
        print(text, flush=True)
        gated_parts.append(text)
    for make in (
        step_section,
        lambda: inference_section(train32),
        memory_section,
        threads_section,
    ):
        text = make()
        print(text, flush=True)
        sections.append(text)
    sections += gated_parts
    text = train_section()
    print(text, flush=True)
    sections.append(text)
    Path(args.out).write_text("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
