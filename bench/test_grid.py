"""pytest-benchmark suite: rnnfast against its peers over the default grid.

    pytest bench/ --benchmark-only --benchmark-columns=median,iqr,rounds

Forward + BPTT of one tanh layer (every peer, float32 and float64), the streaming step and the
inference forward, one benchmark group per case: compare the medians within a group (ratios,
not absolute times: the machine is shared and noisy). Peers not installed are skipped.
"""

import harness
import pytest

from rnnfast.benchmark import DEFAULT_GRID, PEERS, Case, available_peers, make_runner

INSTALLED = available_peers()
CASES = [Case(c.T, c.B, c.D, c.H, dtype) for dtype in ("float32", "float64") for c in DEFAULT_GRID]


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.label}-{c.dtype}")
def test_forward_backward(benchmark, case, peer):
    if peer not in INSTALLED:
        pytest.skip(f"{peer} is not installed")
    if peer == "reference" and case.flops > 1e10:
        pytest.skip("the per-step reference takes seconds here; it is timed on the smaller rows")
    benchmark.group = f"forward+backward {case.label} {case.dtype}"
    benchmark.extra_info["gflop"] = case.flops / 1e9
    benchmark(make_runner(peer, case))


@pytest.mark.parametrize("peer", ["rnnfast", "rnnfast-cell", "numpy", "torch"])
def test_streaming_step(benchmark, peer):
    runners = harness.step_runners(B=1, D=32, H=128)
    if peer not in runners:
        pytest.skip(f"{peer} is not installed")
    benchmark.group = "streaming step B=1 D=32 H=128"
    benchmark(runners[peer])


@pytest.mark.parametrize("peer", ["rnnfast", "torch"])
@pytest.mark.parametrize("case", DEFAULT_GRID[3:], ids=lambda c: c.label)
def test_inference_forward(benchmark, case, peer):
    runners = harness.forward_runners(case)
    if peer not in runners:
        pytest.skip(f"{peer} is not installed")
    benchmark.group = f"inference forward {case.label}"
    benchmark(runners[peer])
