"""The truncated-BPTT window loop: one loop for :func:`rnnfast.truncated_bptt` and for the
models' fused ``fit`` step (``rnnfast.models._train``), which differ only in how a window's
gradients are computed, zeroed and clipped."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def window_loop(
    windows: list[slice],
    steps: int,
    rows: int,
    state: Any,
    train_window: Callable[[slice, Any], tuple[float, Any]],
    zero_grad: Callable[[], None],
    clip: Callable[[], object] | None,
    optimizer_step: Callable[[], None],
    report: Callable[[int, float, int, float], bool | None] | None,
) -> tuple[list[float], Any]:
    """Take ``steps`` optimizer steps over ``windows`` (epochs restart at the first window from
    ``state``): per step ``zero_grad()``, ``loss, state = train_window(window, state)``,
    ``clip()``, ``optimizer_step()``, then ``report(step, loss, tokens, seconds)``, which
    stops the loop by returning True. Returns (losses, final state)."""
    losses: list[float] = []
    h = state
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        i = step % len(windows)
        w = windows[i]
        if i == 0:
            h = state
        zero_grad()
        loss, h_n = train_window(w, h)
        if clip is not None:
            clip()
        optimizer_step()
        h = h_n
        loss = float(loss)
        losses.append(loss)
        tokens += (w.stop - w.start) * rows
        if report is not None and report(step + 1, loss, tokens, time.perf_counter() - start):
            break
    return losses, h
