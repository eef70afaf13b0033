"""The measurements page's plots, drawn at build time from bench/RESULTS.md's grid tables.

Called by matplotlib's plot directive (``.. plot:: /_scripts/plot_results.py times``): each
public function draws one figure from both dtypes' forward + BPTT tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # the plot directive runs the code without __file__, from this directory
    HERE = Path.cwd()
RESULTS = HERE.parents[1] / "bench" / "RESULTS.md"
PEERS = ("rnnfast", "reference", "numpy", "torch", "jax")
COLORS = {
    "rnnfast": "tab:blue",
    "reference": "tab:orange",
    "numpy": "tab:green",
    "torch": "tab:red",
    "jax": "tab:purple",
}
LABELS = {
    "rnnfast": "rnnfast",
    "reference": "NumPy reference",
    "numpy": "NumPy loop (hoisted)",
    "torch": "PyTorch",
    "jax": "JAX lax.scan",
}


def grid_tables(path: Path = RESULTS) -> dict[str, list[dict[str, str]]]:
    """dtype -> rows of the "Forward + BPTT" table, each a dict column -> text."""
    text = path.read_text(encoding="utf-8")
    tables: dict[str, list[dict[str, str]]] = {}
    pattern = r"^#+ Forward \+ BPTT, (\w+).*?\n```\n(.*?)\n```"
    for dtype, block in re.findall(pattern, text, flags=re.MULTILINE | re.DOTALL):
        lines = [line for line in block.splitlines() if line.strip()]
        header = re.split(r"\s{2,}", lines[0].strip())
        rows = [
            dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[2:]
        ]
        tables[dtype] = rows
    if not tables:
        raise ValueError(f"no 'Forward + BPTT' table in {path}")
    return tables


def _panels(title: str, ylabel: str, *, log: bool) -> Iterator[tuple[Any, np.ndarray, list]]:
    """One panel per dtype's table: yields (axes, x positions, rows) for the caller to draw
    on, then labels each panel, and the figure once all are drawn."""
    tables = grid_tables()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.2), squeeze=False)
    fig.suptitle(title)
    for ax, (dtype, rows) in zip(axes[0], tables.items(), strict=True):
        x = np.arange(len(rows))
        yield ax, x, rows
        if log:
            ax.set_yscale("log")
        ax.set_xticks(x, [row["T,B,D,H"] for row in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(dtype)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()


def times() -> None:
    """Milliseconds of forward + backward, each peer, log scale."""
    for ax, x, rows in _panels("Forward + backward, ms (lower is better)", "ms", log=True):
        peers = [p for p in PEERS if f"{p} ms" in rows[0]]
        width = 0.8 / len(peers)
        for i, peer in enumerate(peers):
            offset = (i - (len(peers) - 1) / 2) * width
            ms = [float(row[f"{peer} ms"]) for row in rows]
            ax.bar(x + offset, ms, width, label=LABELS[peer], color=COLORS[peer])


def speedup() -> None:
    """rnnfast's speed-up over each peer ("x vs P"), log scale, 1 marked."""
    title = "rnnfast's speed-up: the peer's time over rnnfast's"
    for ax, x, rows in _panels(title, "x faster", log=True):
        for peer in [p for p in PEERS[1:] if f"x vs {p}" in rows[0]]:
            ratio = [float(row[f"x vs {peer}"]) for row in rows]
            ax.plot(x, ratio, "o-", label=LABELS[peer], color=COLORS[peer])
        ax.axhline(1.0, color="black", lw=0.8)


def roof() -> None:
    """rnnfast's GFLOP/s against the GEMM roof timed beside each row."""
    title = "rnnfast's rate against a BLAS GEMM timed beside it"
    for ax, x, rows in _panels(title, "GFLOP/s", log=False):
        gemm = [float(row["GEMM GF/s"]) for row in rows]
        ours = [float(row["rnnfast GF/s"]) for row in rows]
        ax.bar(x - 0.2, gemm, 0.4, label="GEMM 2048^3", color="lightgray")
        ax.bar(x + 0.2, ours, 0.4, label="rnnfast", color=COLORS["rnnfast"])
        for xi, row, rate in zip(x, rows, ours, strict=True):
            ax.annotate(row["% of GEMM"], (xi + 0.2, rate), ha="center", va="bottom", fontsize=8)
