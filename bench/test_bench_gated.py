"""pytest-benchmark suite of the gated cells: LSTM and GRU against their peers.

    pytest bench/test_bench_gated.py --benchmark-only --benchmark-columns=median,iqr,rounds

Forward + BPTT of one layer (float32 against torch and JAX, float64 against torch), the
inference forward and the streaming step against torch, one benchmark group per case: compare
the medians within a group (ratios, not absolute times: the machine is shared and noisy).
Peers not installed are skipped. ``python bench/gated.py`` prints the same as one table.
"""

import dataclasses

import gated
import pytest

from rnnfast.benchmark import GATED_GRID, available_peers, make_runner

CELLS = ("lstm", "gru")
CASES = [
    dataclasses.replace(c, cell=cell, dtype=dtype)
    for cell in CELLS
    for dtype in ("float32", "float64")
    for c in GATED_GRID
]


@pytest.mark.parametrize("peer", ["rnnfast", "torch", "jax"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.cell}-{c.label}-{c.dtype}")
def test_forward_backward(benchmark, case, peer):
    if peer not in available_peers(case.cell):
        pytest.skip(f"{peer} is not installed")
    benchmark.group = f"{case.cell} forward+backward {case.label} {case.dtype}"
    benchmark.extra_info["gflop"] = case.flops / 1e9
    benchmark(make_runner(peer, case))


@pytest.mark.parametrize("peer", ["rnnfast", "torch"])
@pytest.mark.parametrize("case", [c for c in CASES if c.dtype == "float32"],
                         ids=lambda c: f"{c.cell}-{c.label}")  # fmt: skip
def test_inference_forward(benchmark, case, peer):
    runners = gated.inference_runners(case)
    if peer not in runners:
        pytest.skip(f"{peer} is not installed")
    benchmark.group = f"{case.cell} inference forward {case.label}"
    benchmark(runners[peer])


@pytest.mark.parametrize("peer", ["rnnfast", "torch"])
@pytest.mark.parametrize("cell", CELLS)
def test_streaming_step(benchmark, cell, peer):
    runners = gated.step_runners(cell, B=1, D=32, H=128)
    if peer not in runners:
        pytest.skip(f"{peer} is not installed")
    benchmark.group = f"{cell} streaming step B=1 D=32 H=128"
    benchmark(runners[peer])
