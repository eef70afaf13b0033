"""rnnfast bench's modes (inference, packed ``lengths=``, LSTM ``proj_size``): every peer of a
mode computes the same thing, the flop counts and the command-line option."""

import dataclasses

import numpy as np
import pytest
from conftest import assert_close

from rnnfast import benchmark, cli

MODES = ("train", "inference", "packed", "proj")
CELL_MODES = [(c, m) for c in benchmark.CELLS for m in MODES if m != "proj" or c == "lstm"]


def _first(out):
    """dx (forward + backward) or h (inference) from any peer's result, as a NumPy array."""
    while isinstance(out, tuple | list):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out)


@pytest.mark.parametrize(("cell", "mode"), CELL_MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_peer_of_a_mode_computes_the_same(cell, mode, dtype):
    case = benchmark.Case(5, 3, 4, 6, dtype, cell, mode)
    peers = benchmark.available_peers(cell, mode)
    assert "reference" in peers
    expected = _first(benchmark.make_runner("reference", case)())
    T, B = case.T, case.B
    assert expected.shape == ((T, B, case.D) if mode != "inference" else (T, B, case.H))
    if mode == "packed":  # padded steps: no gradient
        lengths = case.lengths
        assert lengths[0] == T and lengths[-1] < T
        assert not expected[lengths[-1]:, -1].any() and expected[:lengths[-1], -1].all()
    rtol = 1e-5 if dtype == "float32" else 1e-10
    for peer in peers:
        got = _first(benchmark.make_runner(peer, case)())
        assert_close(got, expected, rtol, f"{peer} {cell} {mode} {dtype}")


def test_modes_peers_and_refusals():
    assert benchmark.available_peers("gru", "packed") == [
        p for p in ("rnnfast", "reference", "torch") if p in benchmark.available_peers("gru")
    ]
    assert "numpy" not in benchmark.available_peers("rnn", "inference")
    with pytest.raises(ValueError, match="mode must be one of"):
        benchmark.Case(2, 1, 3, 4, mode="eval")
    with pytest.raises(ValueError, match="needs an LSTM"):
        benchmark.Case(2, 1, 3, 4, cell="gru", mode="proj")
    with pytest.raises(ValueError, match="in mode 'packed'"):
        benchmark.make_runner("jax", benchmark.Case(2, 1, 3, 4, cell="lstm", mode="packed"))


def test_flops_of_the_modes():
    train = benchmark.Case(10, 4, 3, 8, cell="lstm")
    G, T, B, D, H = 4, 10, 4, 3, 8
    assert train.flops == 6 * G * T * B * H * (D + H)
    assert dataclasses.replace(train, mode="inference").flops == train.flops // 3
    packed = dataclasses.replace(train, mode="packed")
    assert list(packed.lengths) == [10, 8, 7, 5]
    assert packed.flops == 6 * G * (10 + 8 + 7 + 5) * H * (D + H)
    P = 4
    proj = dataclasses.replace(train, mode="proj")
    assert proj.proj_size == P and proj.lengths is None
    assert proj.flops == 6 * T * B * (G * H * (D + P) + P * H)


def test_table_has_a_mode_column_only_when_a_mode_is_not_train():
    cases = [benchmark.Case(3, 2, 4, 5, cell="gru", mode=m) for m in ("train", "inference")]
    results = benchmark.run(cases, ["reference"], repeats=2, rounds=1)
    lines = benchmark.format_table(results).splitlines()
    assert lines[0].split()[:4] == ["T,B,D,H", "dtype", "cell", "mode"]
    assert "train" in lines[2] and "inference" in lines[3]
    only_train = benchmark.format_table(results[:1]).splitlines()
    assert "mode" not in only_train[0]


@pytest.fixture
def fake_run(monkeypatch):
    calls = []

    def run(cases, peers=None, repeats=None, min_time=0.2, progress=None, gemm_roof=None):
        calls.append(list(cases))
        return [{**vars(c), "peer": "rnnfast", "median_ms": 1.0, "gflops": 1.0} for c in cases]

    monkeypatch.setattr(benchmark, "run", run)
    return calls


def test_cli_mode_option(fake_run, capsys):
    assert cli.main(["bench", "--cell", "lstm", "--mode", "proj", "--quick"]) == 0
    assert {(c.cell, c.mode) for c in fake_run[-1]} == {("lstm", "proj")}
    assert "projected (proj_size=H/2)" in capsys.readouterr().out
    assert cli.main(["bench", "--cell", "gru", "--mode", "packed", "--sizes", "3,2,1,4"]) == 0
    assert [(c.T, c.cell, c.mode) for c in fake_run[-1]] == [(3, "gru", "packed")]
    assert cli.main(["bench", "--mode", "inference", "--quick", "--dtype", "float64"]) == 0
    assert {(c.cell, c.mode, c.dtype) for c in fake_run[-1]} == {("rnn", "inference", "float64")}
    n = len(fake_run)
    assert cli.main(["bench", "--cell", "gru", "--mode", "proj"]) == 2
    assert "only an LSTM has a projection" in capsys.readouterr().err
    assert len(fake_run) == n  # nothing was timed
