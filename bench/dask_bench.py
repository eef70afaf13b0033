"""Data-parallel training on Dask: 1 against 2 workers on this machine, a small and a large
CharRNN (rnnfast.distributed.fit_distributed), beside single-process ``model.fit``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src python bench/dask_bench.py

Every worker is a process with one thread and one BLAS thread; the single-process fit runs in
this process with one BLAS thread. The configurations run interleaved, round after round (the
machine may be shared: a neighbour's load then lands on all of them alike), and the figures
are medians over the steps of every round, the first steps of each fit (imports, shards)
left out. Per step: the wall time, the compute of the slowest worker (forward and backward),
and the rest ("communication": weights out, gradients and states back, Dask's scheduling).
Scaling efficiency = step(1 worker) / (2 x step(2 workers)). Also the round trip of an empty
task and the time to move 8 MB to a worker and back: the two constants of the cost model in
docs/guide/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import rnnfast
from rnnfast.distributed import fit_distributed

MODELS = {
    # name: (hidden, layers, batch, bptt)
    "small": (64, 1, 32, 50),
    "large": (512, 1, 64, 50),
}
WARMUP = 2


def local_steps(model, text, steps, batch, bptt) -> list[float]:
    times: list[float] = []
    last = [time.perf_counter()]

    def callback(progress):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with threadpool_limits(1):
        model.fit(text, steps=steps, bptt=bptt, batch_size=batch, callback=callback)
    return times[WARMUP:]


def dask_steps(model, text, client, steps, batch, bptt):
    rows: list[tuple[float, float, float]] = []
    last = [time.perf_counter()]

    def callback(progress):
        now = time.perf_counter()
        rows.append((now - last[0], progress.compute_seconds, progress.communication_seconds))
        last[0] = now

    last[0] = time.perf_counter()
    fit_distributed(
        model, text, client, steps=steps, bptt=bptt, batch_size=batch, callback=callback
    )
    return rows[WARMUP:]


def transfer_constants(client) -> dict[str, float]:
    """Median seconds of an empty task's round trip, and of 8 MB to a worker and back."""

    def noop(x):
        return x

    trips = []
    for i in range(30):
        t = time.perf_counter()
        client.submit(noop, i, pure=False).result()
        trips.append(time.perf_counter() - t)
    payload = np.ones(1 << 20)  # 8 MB
    moves = []
    for _ in range(10):
        t = time.perf_counter()
        [f] = client.scatter([payload], hash=False)
        client.submit(noop, f, pure=False).result()
        moves.append(time.perf_counter() - t)
        del f
    return {"round_trip_s": statistics.median(trips), "move_8MB_s": statistics.median(moves)}


def main() -> None:
    import distributed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()

    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    text = rnnfast.datasets.corpus_text()
    vocab = sorted(set(text))
    clusters = {}
    clients = {}
    try:
        for n in (1, 2):
            clusters[n] = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                env=env,
            )
            clients[n] = distributed.Client(clusters[n], set_as_default=False)
        constants = transfer_constants(clients[2])
        results = {}
        for name in args.models:
            hidden, layers, batch, bptt = MODELS[name]
            samples: dict[str, list] = {"local": [], "1 worker": [], "2 workers": []}
            for _ in range(args.rounds):

                def model(hidden=hidden, layers=layers):
                    return rnnfast.CharRNN(vocab, hidden, layers, seed=0)

                samples["local"] += local_steps(model(), text, args.steps, batch, bptt)
                for n in (1, 2):
                    samples[f"{n} worker" + ("s" if n > 1 else "")] += dask_steps(
                        model(), text, clients[n], args.steps, batch, bptt
                    )
            m = rnnfast.CharRNN(vocab, hidden, layers, seed=0)
            n_params = sum(p.size for p in m.parameters().values())
            row = {
                "hidden": hidden,
                "layers": layers,
                "batch": batch,
                "bptt": bptt,
                "parameters": n_params,
                "gradient_bytes": n_params * m.dtype.itemsize,
                "local_step_s": statistics.median(samples["local"]),
            }
            for key in ("1 worker", "2 workers"):
                steps = samples[key]
                row[key] = {
                    "step_s": statistics.median(s[0] for s in steps),
                    "compute_s": statistics.median(s[1] for s in steps),
                    "communication_s": statistics.median(s[2] for s in steps),
                }
            row["scaling_efficiency"] = row["1 worker"]["step_s"] / (2 * row["2 workers"]["step_s"])
            row["speedup_vs_local"] = row["local_step_s"] / row["2 workers"]["step_s"]
            results[name] = row
    finally:
        for c in clients.values():
            c.close()
        for c in clusters.values():
            c.close()

    print(f"cpu count {os.cpu_count()}; load average {os.getloadavg()}")
    print(
        f"empty task round trip {1e3 * constants['round_trip_s']:.1f} ms; "
        f"8 MB to a worker and back {1e3 * constants['move_8MB_s']:.1f} ms"
    )
    header = (
        f"{'model':6} {'params':>9} {'grad KB':>8} {'local ms':>9} | "
        f"{'1w step':>8} {'comp':>6} {'comm':>6} | {'2w step':>8} {'comp':>6} "
        f"{'comm':>6} {'comm %':>6} | {'eff.':>5} {'vs local':>8}"
    )
    print(header)
    for name, r in results.items():
        one, two = r["1 worker"], r["2 workers"]
        print(
            f"{name:6} {r['parameters']:9d} {r['gradient_bytes'] / 1e3:8.0f} "
            f"{1e3 * r['local_step_s']:9.1f} | {1e3 * one['step_s']:8.1f} "
            f"{1e3 * one['compute_s']:6.1f} {1e3 * one['communication_s']:6.1f} | "
            f"{1e3 * two['step_s']:8.1f} {1e3 * two['compute_s']:6.1f} "
            f"{1e3 * two['communication_s']:6.1f} "
            f"{100 * two['communication_s'] / two['step_s']:6.0f} | "
            f"{r['scaling_efficiency']:5.2f} {r['speedup_vs_local']:8.2f}"
        )
    print(json.dumps({"constants": constants, "models": results}, indent=1))


if __name__ == "__main__":
    main()
