"""matplotlib figures for the commands' plots, and saving them (or a one-line notice
without matplotlib)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PLOT_HINT = "pip install 'rnnfast[plot]'"


def save_plot(path: Path | str, draw: Callable[[Path], None]) -> bool:
    """Run ``draw(path)``; without matplotlib, print a one-line notice instead.

    Returns whether the plot was written.
    """
    try:
        draw(Path(path))
    except ImportError as exc:
        if not (exc.name or "").startswith("matplotlib"):
            raise
        print(
            f"note: matplotlib is not installed, so {path} was not drawn ({PLOT_HINT})",
            file=sys.stderr,
        )
        return False
    return True


def figure(**kwargs: Any) -> Any:
    """A matplotlib Figure (no pyplot: no GUI backend, no global state); ImportError
    without matplotlib."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def plot_losses(ax: Any, losses: Sequence[float], smoothed: Sequence[float]) -> None:
    """Each step's loss, faint, and the smoothed loss over it."""
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="loss of each step")
    ax.plot(steps, smoothed, color="tab:blue", lw=2, label="smoothed")
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
