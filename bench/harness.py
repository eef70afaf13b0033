"""Benchmark helpers that only bench/ uses: the streaming step and the inference-only forward
against their peers, quick timers, and the peak memory of forward + backward.

What ``rnnfast bench`` needs (cases, grids, peers, forward + backward runners, the block timer,
the results table) is in the package, :mod:`rnnfast.benchmark`, which this module builds on.
The scripts import it as ``harness`` (they run from bench/, which Python puts first on the
path; pytest does the same for test_grid.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnfast import functional
from rnnfast.benchmark import Case, best_block_medians, make_problem, make_runner, torch_rnn

__all__ = [
    "forward_runners",
    "peak_extra_memory",
    "step_runners",
    "time_blocks",
    "time_per_call",
]


# ---------------------------------------------------------------------------------------------
# Streaming inference: one step from Python, B=1 (the real-time path).


def step_runners(
    B: int = 1, D: int = 32, H: int = 128, dtype: str = "float32", peers: Sequence[str] = ()
) -> dict[str, Callable[[], Any]]:
    """One inference step per call: rnnfast ``RNN.step`` and ``RNNCell``, a NumPy one-liner,
    torch RNNCell under ``no_grad``.

    ``peers`` limits the set (default: all available among rnnfast, rnnfast-cell, numpy, torch).
    """
    from rnnfast.nn import RNN, RNNCell

    rnn = RNN(D, H, dtype=dtype, seed=0)
    sd = rnn.state_dict()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, D)).astype(dtype)
    h = rng.standard_normal((1, B, H)).astype(dtype)
    w_ih, w_hh, b_ih, b_hh = (
        sd[f"{n}_l0"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    h2 = h[0]
    rnn_cell = RNNCell(D, H, dtype=dtype, seed=0)
    rnn_cell.load_state_dict({k: sd[f"{k}_l0"] for k in rnn_cell.state_dict()})
    runners: dict[str, Callable[[], Any]] = {
        "rnnfast": lambda: rnn.step(x, h),
        # RNNCell also keeps copies of its inputs for a backward pass
        "rnnfast-cell": lambda: rnn_cell(x, h2),
        "numpy": lambda: np.tanh(x @ w_ih.T + b_ih + h2 @ w_hh.T + b_hh),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        cell = torch.nn.RNNCell(D, H, dtype=getattr(torch, dtype))
        cell.load_state_dict({k: torch.from_numpy(sd[f"{k}_l0"]) for k in cell.state_dict()})
        tx, th = torch.from_numpy(x), torch.from_numpy(h2)

        def torch_step() -> Any:
            with torch.no_grad():
                return cell(tx, th)

        runners["torch"] = torch_step
    return {k: v for k, v in runners.items() if not peers or k in peers}


def time_per_call(
    runners: Mapping[str, Callable[[], Any]], calls: int = 2000, repeats: int = 5, rounds: int = 3
) -> dict[str, float]:
    """Each runner's time per call in us (:func:`best_block_medians`, samples of ``calls``)."""
    for fn in runners.values():
        fn()
    best = best_block_medians(runners, dict.fromkeys(runners, repeats), rounds, calls)
    return {name: t * 1e6 for name, t in best.items()}


# ---------------------------------------------------------------------------------------------
# Inference-only forward: the output sequence, nothing kept for a backward pass.


def forward_runners(case: Case, peers: Sequence[str] = ()) -> dict[str, Callable[[], Any]]:
    """Forward only: rnnfast.rnn_forward, and torch.nn.RNN under torch.no_grad()."""
    p = make_problem(case)
    runners: dict[str, Callable[[], Any]] = {
        "rnnfast": lambda: functional.rnn_forward(
            p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b"], backend="cython"
        ),
    }
    # torch only when asked for: its import and setup would otherwise land in a profile of ours
    if (not peers or "torch" in peers) and importlib.util.find_spec("torch") is not None:
        import torch

        rnn = torch_rnn(p)
        x, h0 = torch.from_numpy(p["x"]), torch.from_numpy(p["h0"])[None]

        def torch_forward() -> Any:
            with torch.no_grad():
                return rnn(x, h0)

        runners["torch"] = torch_forward
    return {k: v for k, v in runners.items() if not peers or k in peers}


def time_blocks(
    runners: Mapping[str, Callable[[], Any]],
    repeats: int = 7,
    rounds: int = 3,
    setup: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """Each runner's time per call in ms (:func:`best_block_medians`), after a warm-up call."""
    for name, fn in runners.items():
        if setup is not None and name in setup:
            setup[name]()
        fn()
    best = best_block_medians(runners, dict.fromkeys(runners, repeats), rounds, setup=setup)
    return {name: t * 1e3 for name, t in best.items()}


# ---------------------------------------------------------------------------------------------
# Peak memory of forward + backward, beyond inputs, weights, outputs and gradients.


def peak_extra_memory_child(case: Case, peer: str) -> None:
    """Run in a fresh process: print the peak extra bytes of one forward + backward."""

    def rss(field: str) -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) * 1024

    fn = make_runner(peer, case)
    fn()  # load everything, warm allocators
    getattr(fn, "release", lambda: None)()  # a peer holding its last gradients lets go
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = rss("VmRSS")
    grads = fn()
    peak = rss("VmHWM")
    # What the caller keeps: the states h (forward output) and all gradients.
    item = np.dtype(case.dtype).itemsize
    kept_bytes = item * (
        case.T * case.B * case.H  # h
        + case.T * case.B * case.D  # dx
        + case.B * case.H  # dh0
        + case.H * (case.D + case.H + 1)  # dw_ih, dw_hh, db
    )
    del grads
    print(
        json.dumps(
            {
                "peak_extra_bytes": peak - before - kept_bytes,
                "tbh_bytes": item * case.T * case.B * case.H,
            }
        )
    )


def peak_extra_memory(case: Case, peer: str) -> dict[str, int]:
    """Peak memory of one forward + backward beyond inputs, weights, outputs and gradients.

    Measured in a fresh process from the resident-set high-water mark (Linux), for any peer;
    ``tbh_bytes`` is the size of one (T, B, H) buffer, for scale.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from harness import Case, peak_extra_memory_child;"
        f"peak_extra_memory_child(Case{(case.T, case.B, case.D, case.H, case.dtype)!r}, "
        f"{peer!r})"
    )
    # A fixed mmap threshold: every large array is its own mapping, returned to the system when
    # freed, so the resident set follows what is alive (glibc otherwise raises the threshold
    # after the first free and keeps freed memory resident).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
