"""pytest-benchmark suite of the gated cells: LSTM and GRU against their peers.

    pytest bench/test_bench_gated.py --benchmark-only --benchmark-columns=median,iqr,rounds

Forward + BPTT of one layer (float32 against torch and JAX, float64 against torch), the
modes of rnnfast.benchmark.Case (inference forward, packed lengths=, LSTM proj_size) and the
streaming step against torch, one benchmark group per case: compare
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


MODE_CASES = [
    dataclasses.replace(c, cell=cell, mode=mode)
    for cell in CELLS
    for mode in ("inference", "packed", "proj")
    if mode != "proj" or cell == "lstm"
    for c in GATED_GRID
]


@pytest.mark.parametrize("peer", ["rnnfast", "torch", "jax"])
@pytest.mark.parametrize("case", MODE_CASES, ids=lambda c: f"{c.cell}-{c.mode}-{c.label}")
def test_modes(benchmark, case, peer):
    if peer not in available_peers(case.cell, case.mode):
        pytest.skip(f"{peer} is not installed or has no {case.mode} mode")
    benchmark.group = f"{case.cell} {case.mode} {case.label}"
    benchmark.extra_info["gflop"] = case.flops / 1e9
    benchmark(make_runner(peer, case))


@pytest.mark.parametrize("peer", ["rnnfast", "torch"])
@pytest.mark.parametrize("cell", CELLS)
def test_streaming_step(benchmark, cell, peer):
    runners = gated.step_runners(cell, B=1, D=32, H=128)
    if peer not in runners:
        pytest.skip(f"{peer} is not installed")
    benchmark.group = f"{cell} streaming step B=1 D=32 H=128"
    benchmark(runners[peer])
