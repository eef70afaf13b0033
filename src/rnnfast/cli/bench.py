"""``rnnfast bench``: forward + backward timings of rnnfast and its peers
(:mod:`rnnfast.benchmark`)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnfast import benchmark
from rnnfast.cli._common import (
    EXIT_OK,
    POSITIVE,
    Commands,
    UsageError,
    add_command,
    check_writable,
    progress_bar,
    write_json,
)
from rnnfast.cli._plots import figure, save_plot


def add_parser(commands: Commands) -> None:
    """Add the ``rnnfast bench`` sub-parser."""
    p = add_command(
        commands,
        "bench",
        "time forward + backward against the NumPy reference, PyTorch and JAX",
        "Time forward + backward (the best of three rounds' medians) of rnnfast's compiled "
        "kernels and of each peer installed, in the same run, and print ms, GFLOP/s and "
        "rnnfast's speed-up.",
    )
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true", help="3 small cases instead of the full grid")
    grid.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        metavar="T,B,D,H",
        help="cases to time: steps, batch, input size, hidden size",
    )
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="floating-point type"
    )
    p.add_argument(
        "--cell",
        choices=benchmark.CELLS,
        default="rnn",
        help="the layer to time: a tanh RNN (default), an LSTM or a GRU (against torch.nn.LSTM "
        "/ GRU and a JAX lax.scan; the default grid is then the gated cells' own)",
    )
    p.add_argument(
        "--mode",
        choices=benchmark.MODES,
        default="train",
        help="what to time: forward + backward (train, the default); the forward alone "
        "(inference, against torch under no_grad); forward + backward of a padded batch with "
        "per-sequence lengths (packed, against torch's pack_padded_sequence); an LSTM with "
        "proj_size H/2 (proj)",
    )
    p.add_argument(
        "--peers",
        nargs="+",
        choices=benchmark.PEERS,
        default=None,
        metavar="PEER",
        help=f"implementations to time, of {', '.join(benchmark.PEERS)} (default: all installed)",
    )
    p.add_argument(
        "--repeats",
        type=POSITIVE,
        metavar="N",
        default=None,
        help="timed repeats per case and round",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--train",
        action="store_true",
        help="end to end instead: CharRNN.fit chars/s against the same PyTorch loop "
        "(rnn, lstm, gru at H=128 and 512)",
    )
    p.add_argument("--plot", metavar="FILE", help="draw a bar chart (needs matplotlib)")
    p.add_argument(
        "--contention",
        action="store_true",
        help="time the shared-machine scenarios instead (a busy core, concurrent callers, "
        "calls between PyTorch's, one CPU), as ratios in one run; see docs/guide/threads.md",
    )
    p.set_defaults(run=run)


def _size(text: str) -> tuple[int, int, int, int]:
    """``T,B,D,H``: four positive integers."""
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected T,B,D,H as four positive integers, e.g. 100,32,64,128; got {text!r}"
        )
    return values  # type: ignore[return-value]


def _plot_bench(path: Path, results: Sequence[dict[str, Any]]) -> None:
    cases = list(dict.fromkeys((r["T"], r["B"], r["D"], r["H"], r["dtype"]) for r in results))
    peers = list(dict.fromkeys(r["peer"] for r in results))
    ms = {(r["T"], r["B"], r["D"], r["H"], r["dtype"], r["peer"]): r["median_ms"] for r in results}
    fig = figure(figsize=(max(6.0, 1.3 * len(cases) + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / max(len(peers), 1)
    x = np.arange(len(cases))
    for i, peer in enumerate(peers):
        heights = [ms.get((*case, peer), np.nan) for case in cases]
        ax.bar(x + (i - (len(peers) - 1) / 2) * width, heights, width, label=peer)
    ax.set_xticks(x, [f"{t}x{b}x{d}x{h}\n{dt}" for t, b, d, h, dt in cases], fontsize="small")
    ax.set_yscale("log")
    ax.set_xlabel("case: T x B x D x H")
    ax.set_ylabel("median forward + backward (ms)")
    ax.set_title("rnnfast bench")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)


def run(args: argparse.Namespace) -> int:
    if args.train:  # end to end (rnnfast._bench_train): its own cases and table
        from rnnfast import _bench_train

        return _bench_train.run_cli(args)
    if args.contention:
        from rnnfast import _bench_contention

        return _bench_contention.cli(args)
    if args.mode == "proj" and args.cell != "lstm":
        raise UsageError("--mode proj: only an LSTM has a projection (add --cell lstm)")
    available = list(benchmark.available_peers(args.cell, args.mode))
    if args.peers:
        missing = [p for p in args.peers if p not in available]
        if missing:
            raise UsageError(
                f"--peers: {', '.join(missing)} not installed here (available: "
                f"{', '.join(available)})"
            )
    for option in ("json", "plot"):
        if getattr(args, option):
            check_writable(f"--{option}", getattr(args, option))
    if args.sizes:
        kind = {"dtype": args.dtype, "cell": args.cell, "mode": args.mode}
        cases = [benchmark.Case(*size, **kind) for size in args.sizes]
    else:
        full = benchmark.DEFAULT_GRID if args.cell == "rnn" else benchmark.GATED_GRID
        grid = benchmark.QUICK_GRID if args.quick else full
        cases = [
            dataclasses.replace(case, dtype=args.dtype, cell=args.cell, mode=args.mode)
            for case in grid
        ]
    peers = args.peers or available
    what = "" if args.cell == "rnn" else f" {args.cell.upper()}"
    timed = {
        "train": "forward + backward",
        "inference": "inference forward",
        "packed": "packed (lengths=) forward + backward",
        "proj": "projected (proj_size=H/2) forward + backward",
    }[args.mode]
    print(f"Timing{what} {timed} of {len(cases)} cases with {', '.join(peers)}.", flush=True)
    with progress_bar(len(cases), "bench", unit="case") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        results = benchmark.run(
            cases,
            peers=args.peers,
            repeats=args.repeats,
            progress=progress,
            gemm_roof=benchmark.ROOF_GEMM_SIZE if "rnnfast" in peers else None,
        )
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = benchmark.machine()
    blas = benchmark.blas_info()
    command = args.command_line
    print(f"\n$ {command}\n{date}, {machine}")
    print(
        f"BLAS of the kernels: {blas['library']} {blas['version']}, core type {blas['core']}",
        end="",
    )
    print(f" (also loaded: {blas['others']})" if "others" in blas else "")
    if "warning" in blas:
        print(f"warning: {blas['warning']}")
    print()
    print(benchmark.format_table(results))
    if args.json:
        write_json(
            args.json,
            {
                "date": date,
                "machine": machine,
                "blas": blas,
                "command": command,
                "results": results,
            },
        )
        print(f"\nWrote {args.json}")
    if args.plot and save_plot(args.plot, lambda p: _plot_bench(p, results)):
        print(f"Wrote {args.plot}")
    return EXIT_OK
