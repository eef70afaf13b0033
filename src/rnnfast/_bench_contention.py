"""``rnnfast bench --contention``: rnnfast's speed when it does not own the machine.

Issue 24's scenarios, each timed in a fresh interpreter (so that thread settings, CPU affinity
and BLAS pools start clean) and reported as ratios of times taken in the same run, never as
absolute times (a shared machine's load moves those):

- ``idle``: default settings against rnnfast's own ``set_num_threads(1)``, and the peers
  (PyTorch, and for Elman the NumPy BPTT of :mod:`rnnfast.benchmark`).
- ``busy``: the same while another process keeps one core busy (``python -c "while True:
  pass"``).
- ``callers``: two Python threads calling at once with default settings, against one caller
  and against two callers holding one thread each (throughput).
- ``mixed``: each call right after a PyTorch 512x512 matmul, or a NumPy one (multi-threaded
  BLAS pools that spin after their call), against the call alone.
- ``taskset``: CPU affinity of one CPU and ``set_num_threads(2)``, against one thread.

One call is forward + backward of one float32 layer through ``rnnfast.RNN`` (``LSTM``,
``GRU``), the way a training step calls it. The worker is a script run with ``python -c``, so a
caller can point ``PYTHONPATH`` at another build of rnnfast and time both builds interleaved in
one run (``trees``): how before/after numbers in docs/guide/threads.md were taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

SIZES: tuple[tuple[int, int, int, int], ...] = (
    (100, 8, 64, 128),
    (100, 32, 128, 256),
    (50, 64, 512, 512),
)
CELLS = ("rnn", "lstm", "gru")
SCENARIOS = ("idle", "busy", "callers", "mixed", "taskset")
BUSY_LOOP = "while True: pass"

# The worker: one scenario, one cell, one size; prints {label: [seconds per call, ...]}.
WORKER = r"""
import json, os, sys, threading, time
spec = json.loads(sys.argv[1])
if spec["scenario"] == "taskset":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import warnings
import numpy as np
import rnnfast
from rnnfast import benchmark

warnings.simplefilter("ignore")
T, B, D, H = spec["size"]
cell, reps = spec["cell"], spec["reps"]
rng = np.random.default_rng(0)
make = {"rnn": rnnfast.RNN, "lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell]
x = rng.standard_normal((T, B, D)).astype(np.float32)
dy = rng.standard_normal((T, B, H)).astype(np.float32)


def rnnfast_runner():
    m = make(D, H, dtype="float32")

    def run():
        m.zero_grad()
        m.forward(x)
        m.backward(dy)

    return run


def torch_runner():
    import torch

    m = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, H)
    tx, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

    def run():
        m.zero_grad(set_to_none=True)
        tx.grad = None
        out, _ = m(tx)
        (out * tg).sum().backward()

    return run


def numpy_runner():
    case = benchmark.Case(T, B, D, H, "float32")
    return benchmark.make_runner("numpy", case)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


default_threads = rnnfast.get_num_threads() or 1
one = rnnfast_runner()
out = {}


def add(label, seconds):
    out.setdefault(label, []).append(seconds)


def with_threads(n, fn):
    rnnfast.set_num_threads(n)
    try:
        return fn()
    finally:
        rnnfast.set_num_threads(default_threads)


sc = spec["scenario"]
if sc in ("idle", "busy", "taskset"):
    if sc == "taskset":
        rnnfast.set_num_threads(2)
        default_threads = 2
    runners = {"default": one, "one": one}
    if sc != "taskset" and spec.get("peers", True):
        runners["torch"] = torch_runner()
        if cell == "rnn":
            runners["numpy"] = numpy_runner()
    for fn in set(runners.values()):
        fn(); fn()
    with_threads(1, one)
    for _ in range((reps + 2) // 3):
        for label, fn in runners.items():
            if label == "one":
                with_threads(1, lambda: [add(label, timed(fn)) for _ in range(3)])
            else:
                for _ in range(3):
                    add(label, timed(fn))
elif sc == "callers":
    runners = [one, rnnfast_runner()]
    for fn in runners:
        fn(); fn()
    k = 3

    def together(label):
        barrier = threading.Barrier(len(runners) + 1)

        def loop(fn):
            barrier.wait()
            for _ in range(k):
                fn()

        threads = [threading.Thread(target=loop, args=(fn,)) for fn in runners]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        add(label, (time.perf_counter() - t0) / (k * len(runners)))

    for _ in range(max(3, reps // k)):
        together("two_default")
        with_threads(1, lambda: together("two_one"))
        for _ in range(k):
            add("one_caller", timed(one))
elif sc == "mixed":
    import torch

    a = torch.randn(512, 512)
    m = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
    one(); one(); a @ a; m @ m
    for _ in range((reps + 2) // 3):
        for _ in range(3):
            add("alone", timed(one))
        for _ in range(3):
            a @ a
            add("after_torch", timed(one))
        for _ in range(3):
            m @ m
            add("after_numpy", timed(one))
print(json.dumps(out))
"""


def run_worker(
    scenario: str,
    cell: str,
    size: Sequence[int],
    reps: int = 21,
    pythonpath: str | None = None,
    peers: bool = True,
    timeout: float = 600,
) -> dict[str, list[float]]:
    """One worker process: {label: seconds per call} for one scenario, cell and size.

    ``pythonpath``: the rnnfast tree to import (None: this one)."""
    unset = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.pop("RNNFAST_BACKEND", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    spec = {"scenario": scenario, "cell": cell, "size": list(size), "reps": reps, "peers": peers}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"contention worker failed ({scenario} {cell} {size}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class BusyCore:
    """A context manager: another process keeping one core busy."""

    def __enter__(self) -> BusyCore:
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def _stats(samples: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(samples)
    return float(np.median(a)), float(np.percentile(a, 90))


def ratios(scenario: str, t: dict[str, list[float]]) -> dict[str, float]:
    """The ratios issue 24 sets targets on, from one worker's samples (lower is better for
    ``x_over_*``; higher for ``throughput``, ``peer_speedup``)."""
    med = {k: _stats(v)[0] for k, v in t.items()}
    p90 = {k: _stats(v)[1] for k, v in t.items()}
    r: dict[str, float] = {}
    if scenario in ("idle", "busy", "taskset"):
        r["default_ms"] = med["default"] * 1e3
        r["one_ms"] = med["one"] * 1e3
        r["default/one"] = med["default"] / med["one"]
        r["default/one p90"] = p90["default"] / p90["one"]
        peers = [med[p] for p in ("torch", "numpy") if p in med]
        if peers:
            r["best peer/default"] = min(peers) / med["default"]
    elif scenario == "callers":
        best = min(med["one_caller"], med["two_one"])
        r["two_default_ms"] = med["two_default"] * 1e3
        r["throughput vs best"] = best / med["two_default"]
    elif scenario == "mixed":
        r["alone_ms"] = med["alone"] * 1e3
        r["after torch/alone"] = med["after_torch"] / med["alone"]
        r["after numpy/alone"] = med["after_numpy"] / med["alone"]
    return r


def run(
    scenarios: Sequence[str] = SCENARIOS,
    cells: Sequence[str] = ("rnn",),
    sizes: Sequence[Sequence[int]] = SIZES,
    reps: int = 21,
    trees: Sequence[tuple[str, str | None]] = (("rnnfast", None),),
    rounds: int = 1,
    peers: bool = True,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Every scenario x cell x size, each build of ``trees`` ((label, PYTHONPATH or None))
    timed in turn, ``rounds`` times, under the same load; a row of ratios per build."""
    rows = []
    for scenario in scenarios:
        for cell in cells:
            for size in sizes:
                samples: dict[str, dict[str, list[float]]] = {label: {} for label, _ in trees}
                load = BusyCore() if scenario == "busy" else None
                if load is not None:
                    load.__enter__()
                try:
                    for _ in range(rounds):
                        for label, path in trees:
                            got = run_worker(scenario, cell, size, reps, path, peers)
                            for k, v in got.items():
                                samples[label].setdefault(k, []).extend(v)
                finally:
                    if load is not None:
                        load.__exit__()
                for label, _ in trees:
                    row = {"scenario": scenario, "cell": cell, "size": ",".join(map(str, size))}
                    row["build"] = label
                    row.update(ratios(scenario, samples[label]))
                    rows.append(row)
                    if progress is not None:
                        progress(row)
    return rows


def header() -> str:
    """Which BLAS and core type run the kernels, and the CPUs available."""
    from rnnfast import _threads, benchmark

    blas = _threads.blas_library() or "unknown BLAS"
    core = "?"
    try:
        import threadpoolctl

        for info in threadpoolctl.threadpool_info():
            if info.get("filepath") == blas or (
                _threads.blas_library() is None and info.get("internal_api") == "openblas"
            ):
                core = " ".join(
                    str(info.get(k)) for k in ("internal_api", "version", "architecture")
                )
    except ImportError:
        pass
    return (
        f"{benchmark.machine()}; kernels' BLAS: {os.path.basename(blas)} ({core}); "
        f"CPUs available: {_threads.available_cpus()}; OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}"
    )


def format_row(row: dict[str, Any]) -> str:
    """One result line."""
    keys = [k for k in row if k not in ("scenario", "cell", "size", "build")]
    cells = "  ".join(f"{k} {row[k]:.3g}" for k in keys)
    return f"{row['scenario']:8} {row['cell']:5} {row['size']:15} {row['build']:8} {cells}"


def cli(args: Any) -> int:
    """``rnnfast bench --contention`` (its ``--sizes``, ``--repeats``, ``--json``, and
    ``--cell`` where the command has it)."""
    sizes = args.sizes or SIZES
    cell = getattr(args, "cell", None)
    cell = {"elman": "rnn", "tanh": "rnn", "relu": "rnn"}.get(str(cell), cell)
    cells = [cell] if cell in CELLS else ["rnn"]
    reps = args.repeats or 21
    print(header(), flush=True)
    print(f"$ {getattr(args, 'command_line', 'rnnfast bench --contention')}", flush=True)
    rows = run(SCENARIOS, cells, sizes, reps, progress=lambda r: print(format_row(r), flush=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header(), "rows": rows}, f, indent=1)
        print(f"Wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rnnfast._bench_contention [--before PATH] [--cells ...] [--scenarios ...]``:
    the before/after driver (PATH: a src/ directory holding another build of rnnfast)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m rnnfast._bench_contention")
    p.add_argument("--before", help="PYTHONPATH of the build to compare against")
    p.add_argument("--cells", nargs="+", default=["rnn"], choices=CELLS)
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    p.add_argument("--sizes", nargs="+", default=None, help="T,B,D,H ...")
    p.add_argument("--reps", type=int, default=21)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    sizes = [tuple(map(int, s.split(","))) for s in a.sizes] if a.sizes else SIZES
    trees: list[tuple[str, str | None]] = [("after", None)]
    if a.before:
        trees.insert(0, ("before", a.before))
    print(header(), flush=True)
    rows = run(
        a.scenarios,
        a.cells,
        sizes,
        a.reps,
        trees,
        a.rounds,
        not a.no_peers,
        progress=lambda r: print(format_row(r), flush=True),
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
