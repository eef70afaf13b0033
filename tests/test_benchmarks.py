"""The benchmark peers compute the same gradients, and the runner and table are well formed.

Also bench/harness.py's helpers (the scripts of bench/ build on them), imported from there.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, reference_only_run

from rnnfast import benchmark

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import harness


def _grads(peer, case):
    out = benchmark.make_runner(peer, case)()
    if peer == "torch":  # the torch runner returns dx only (the rest stays in the module)
        return [out.numpy()]
    return [np.asarray(g) for g in out]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_peer_computes_the_same_gradients(dtype):
    case = benchmark.Case(6, 3, 5, 7, dtype)
    peers = benchmark.available_peers()
    assert {"reference", "numpy"} <= set(peers)
    assert "rnnfast" in peers or reference_only_run()  # a missing extension must not pass
    expected = _grads("reference", case)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for peer in peers:
        got = _grads(peer, case)
        assert len(got) == (1 if peer == "torch" else 5), peer  # torch: dx only
        for g, want in zip(got, expected[: len(got)], strict=True):
            assert g.shape == want.shape
            assert_close(g, want, rtol, f"{peer} {dtype}")


def test_run_and_table_are_well_formed():
    cases = [benchmark.Case(3, 2, 4, 5), benchmark.Case(2, 1, 3, 4, "float64")]
    peers = ["reference", "numpy"]
    seen = []
    results = benchmark.run(cases, peers, repeats=3, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 2), (2, 2)]
    assert len(results) == len(cases) * len(peers)
    for r in results:
        assert r["median_ms"] > 0 and r["gflops"] > 0 and r["repeats"] == 3 and r["rounds"] == 3
        case = benchmark.Case(r["T"], r["B"], r["D"], r["H"], r["dtype"])
        assert r["gflops"] == pytest.approx(case.flops / r["median_ms"] / 1e6)
    table = benchmark.format_table(results)
    lines = table.splitlines()
    assert len(lines) == 2 + len(cases)
    assert "3,2,4,5" in lines[2] and "2,1,3,4" in lines[3]
    assert "reference ms" in lines[0] and "x vs numpy" not in lines[0]  # no rnnfast: no ratios
    assert "GEMM" not in lines[0]  # and no roof was timed


def test_run_times_a_gemm_roof_beside_each_case():
    """gemm_roof: every result carries the rate of a GEMM timed in its case's rotation, and
    the table gives that rate and rnnfast's share of it, row by row."""
    cases = [benchmark.Case(3, 2, 4, 5), benchmark.Case(2, 1, 3, 4)]
    results = benchmark.run(cases, ["rnnfast", "numpy"], repeats=3, rounds=2, gemm_roof=64)
    assert len(results) == 4  # no result for the roof itself
    for case in cases:
        roofs = {r["roof_gflops"] for r in results if r["T"] == case.T}
        assert len(roofs) == 1 and roofs.pop() > 0  # one roof per case, shared by its peers
    lines = benchmark.format_table(results).splitlines()
    assert lines[0].split()[-5:] == ["GEMM", "GF/s", "%", "of", "GEMM"]
    for line, case in zip(lines[2:], cases, strict=True):
        ours = next(r for r in results if r["T"] == case.T and r["peer"] == "rnnfast")
        share = 100 * ours["gflops"] / ours["roof_gflops"]
        assert line.split()[-2:] == [f"{ours['roof_gflops']:.0f}", f"{share:.0f}%"]
    assert "GEMM" not in benchmark.format_table(benchmark.run(cases[:1], ["numpy"], 3))


def test_unknown_peer_is_refused():
    with pytest.raises(ValueError, match="peer must be one of"):
        benchmark.make_runner("tensorflow", benchmark.Case(1, 1, 1, 1))


def test_the_package_holds_what_rnnfast_bench_needs_and_no_dev_tooling():
    assert set(benchmark.QUICK_GRID) <= set(benchmark.DEFAULT_GRID)
    assert all(hasattr(benchmark, name) for name in benchmark.__all__)
    for name in ("ISSUE_GRID", "step_runners", "forward_runners", "time_blocks", "time_per_call"):
        assert not hasattr(benchmark, name), name  # bench/harness.py's
    assert not hasattr(benchmark, "peak_extra_memory")


def test_flops_count():
    assert benchmark.Case(2, 3, 4, 5).flops == 6 * 2 * 3 * 5 * (4 + 5)


def test_every_streaming_step_runner_computes_the_same_step():
    """The streaming-step table compares like with like: every runner's new state agrees."""
    runners = harness.step_runners(B=2, D=5, H=7, dtype="float64")
    assert {"rnnfast", "rnnfast-cell", "numpy"} <= set(runners)
    expected = runners["numpy"]()
    for peer, fn in runners.items():
        got = fn()
        got = got[0] if isinstance(got, tuple) else got  # RNN.step: (output, h_new)
        got = got.numpy() if hasattr(got, "numpy") else got
        assert_close(np.asarray(got), expected, 1e-12, peer)


def test_time_blocks_runs_setup_before_each_block():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    setup = {"a": lambda: calls.append("setup a")}
    ms = harness.time_blocks(runners, repeats=2, rounds=2, setup=setup)
    assert set(ms) == {"a", "b"} and all(t >= 0 for t in ms.values())
    # warm-up (setup a, a, b), then per round: setup a, a, a, b, b
    assert calls == ["setup a", "a", "b"] + ["setup a", "a", "a", "b", "b"] * 2


def test_targets_table_says_what_the_roof_allows():
    import gated

    def row(H, peer, ms, gflops, roof=None):
        r = dict(T=10, B=4, D=8, H=H, peer=peer, median_ms=ms, gflops=gflops)
        return r if roof is None else {**r, "roof_gflops": roof}

    results = [
        # H = 128: 3x the best of torch and JAX; JAX is the best here and we are 4x it
        row(128, "rnnfast", 1.0, 80.0, roof=200.0),
        row(128, "torch", 9.0, 9.0),
        row(128, "jax", 4.0, 20.0),
        # H = 512: 1.1x torch, which runs at 190 GF/s: 209 needed, above a 200 GF/s GEMM
        row(512, "rnnfast", 2.0, 180.0, roof=200.0),
        row(512, "torch", 2.1, 190.0),
    ]
    lines = gated.targets_table("lstm", results).splitlines()
    small = next(line for line in lines if line.startswith("| 10,4,8,128 "))
    large = next(line for line in lines if line.startswith("| 10,4,8,512 "))
    assert "jax 4.000 ms | 4.00 | 60 | 200 | 30% | yes |" in small
    assert "torch 2.100 ms | 1.05 | 209 | 200 | 105% | no |" in large
