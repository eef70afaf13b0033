"""The gated cells (LSTM, GRU) against their peers, every table in one interleaved run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gated.py [--quick] [--cell lstm]

Per cell: forward + backward of one layer, float32, on the gated grid against torch.nn.LSTM /
GRU and a jitted JAX lax.scan (rnnfast.benchmark.run, the peers taking turns in each case's
rotation, a 2048 GEMM beside them as the roof); the same rows in float64 against torch; the
inference forward against torch under no_grad (and JAX); packed ``lengths=`` against torch's
pack_padded_sequence; the LSTM with proj_size = H/2 against torch's proj_size (and JAX) (the
modes of rnnfast.benchmark.Case); and the streaming step B=1, D=32, H=128 against torch's
LSTMCell / GRUCell. Ratios within one run are what to compare (the machine is
shared). Also imported by test_bench_gated.py for its runners.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import harness
import numpy as np

import rnnfast
from rnnfast import benchmark
from rnnfast.benchmark import GATED_GRID, Case

SECTIONS = (
    ("train", "float32", "forward + backward, float32"),
    ("train", "float64", "forward + backward, float64"),
    ("inference", "float32", "inference forward, float32 (torch under no_grad)"),
    ("packed", "float32", "forward + backward with lengths= (torch: pack_padded_sequence)"),
    ("proj", "float32", "forward + backward with proj_size = H/2"),
)
"""(mode, dtype, title) of each table per cell (rnnfast.benchmark.Case.mode)."""


def step_runners(
    cell: str, B: int = 1, D: int = 32, H: int = 128, dtype: str = "float32"
) -> dict[str, Callable[[], Any]]:
    """One streaming step of a one-layer cell, its state fed back: rnnfast's layer ``step``
    and torch's LSTMCell / GRUCell under no_grad."""
    layer = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell](D, H, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((B, D)).astype(dtype)
    state: list[Any] = [None]

    def ours() -> Any:
        out, state[0] = layer.step(x, state[0])
        return out

    runners: dict[str, Callable[[], Any]] = {"rnnfast": ours}
    if importlib.util.find_spec("torch") is not None:
        import torch

        module = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell]
        torch_cell = module(D, H, dtype=getattr(torch, np.dtype(dtype).name))
        xt = torch.from_numpy(x)
        theirs_state: list[Any] = [None]

        def theirs() -> Any:
            with torch.no_grad():
                theirs_state[0] = torch_cell(xt, theirs_state[0])
            return theirs_state[0]

        runners["torch"] = theirs
    return runners


def issue_target(H: int) -> tuple[float, tuple[str, ...]]:
    """The speed-up issue 19 asks of a float32 forward + backward row of hidden size ``H``, and
    the peers it is measured against (the best of them)."""
    if H <= 128:
        return 3.0, ("torch", "jax")
    if H <= 256:
        return 1.5, ("torch", "jax")
    return 1.1, ("torch",)


def targets_table(cell: str, results: Sequence[dict[str, Any]]) -> str:
    """Per row: the target, the rate it needs (the target times the best peer's GF/s: the same
    FLOP count for every peer) and that rate as a share of the GEMM timed beside the row. A
    target that needs more than the GEMM rate cannot be met by any kernel on this machine."""
    by_case: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["T"], r["B"], r["D"], r["H"]), {})[r["peer"]] = r
    lines = [
        "| T,B,D,H | target | best peer | rnnfast x it | needs GF/s | GEMM GF/s | needs % of "
        "GEMM | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (T, B, D, H), row in by_case.items():
        target, against = issue_target(H)
        peers = [row[p] for p in against if p in row]
        ours = row.get("rnnfast")
        if ours is None or not peers:
            continue
        best = min(peers, key=lambda r: r["median_ms"])
        ratio = best["median_ms"] / ours["median_ms"]
        needs = target * best["gflops"]
        roof = ours.get("roof_gflops")
        share = "-" if roof is None else f"{100 * needs / roof:.0f}%"
        lines.append(
            f"| {T},{B},{D},{H} | {target}x {'/'.join(against)} | {best['peer']} "
            f"{best['median_ms']:.3f} ms | {ratio:.2f} | {needs:.0f} | "
            f"{'-' if roof is None else f'{roof:.0f}'} | {share} | "
            f"{'yes' if ratio >= target else 'no'} |"
        )
    return (
        f"### {cell.upper()}: the speed-up targets against the roof (float32, forward + "
        "backward)\n\nThe rate a target needs is the target times the best peer's GF/s; above "
        "100% of the GEMM timed beside the row, no kernel on this machine can meet it.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def tables(cells: Sequence[str], grid: Sequence[Case], rounds: int = 3) -> Iterator[str]:
    """Every table of the gated cells, one markdown section per (cell, mode, dtype) and one
    for the streaming steps, as each is timed."""
    for cell in cells:
        cases = [dataclasses.replace(c, cell=cell) for c in grid]
        for mode, dtype, title in SECTIONS:
            if mode == "proj" and cell != "lstm":
                continue
            rows = [dataclasses.replace(c, mode=mode, dtype=dtype) for c in cases]
            have = benchmark.available_peers(cell, mode)
            peers = [p for p in ("rnnfast", "torch", "jax") if p in have]
            if dtype == "float64":
                peers = [p for p in peers if p != "jax"]
            results = benchmark.run(
                rows, peers=peers, rounds=rounds, gemm_roof=benchmark.ROOF_GEMM_SIZE
            )
            yield f"### {cell.upper()}: {title}\n\n```\n{benchmark.format_table(results)}\n```\n"
            if mode == "train" and dtype == "float32":
                yield targets_table(cell, results)
    lines = ["| cell | " + " | ".join(step_runners(cells[0])) + " |"]
    lines.append("|---" * len(lines[0].split("|")[1:-1]) + "|")
    for cell in cells:
        us = harness.time_per_call(step_runners(cell), calls=2000)
        lines.append(f"| {cell} | " + " | ".join(f"{v:.2f}" for v in us.values()) + " |")
    yield (
        "### Gated streaming step, B=1 D=32 H=128, float32 (us per call; torch's LSTMCell / "
        "GRUCell under no_grad)\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru"), nargs="+", default=["lstm", "gru"])
    parser.add_argument("--quick", action="store_true", help="the first three rows only")
    args = parser.parse_args()
    blas = benchmark.blas_info()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"{date}, {benchmark.machine()}")
    print(f"BLAS of the kernels: {blas['library']} {blas['version']}, core {blas['core']}")
    if "warning" in blas:
        print(f"warning: {blas['warning']}")
    for text in tables(args.cell, GATED_GRID[:3] if args.quick else GATED_GRID):
        print(text, flush=True)


if __name__ == "__main__":
    main()
