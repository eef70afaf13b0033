"""rnnfast.GRU and GRUCell against torch.nn.GRU / GRUCell (values and every gradient over
layers x directions x batch_first x lengths x unbatched), the reference against the compiled
kernels, the streaming step and state dicts."""

from __future__ import annotations

import gated_torch
import numpy as np
import pytest
import torch
from conftest import RTOL, assert_close
from gated_torch import B, D, T, grid, make_pair, make_problem, run_ours, run_torch, train_both

import rnnfast
from rnnfast import functional

pytestmark = pytest.mark.torch

TORCH_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
CONFIGS = grid(proj_sizes=(0,))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gru_matches_torch(config, dtype, bias):
    ours, theirs = make_pair("gru", config, dtype, bias=bias)
    p = make_problem("gru", config, dtype, seed=len(str(config)))
    out_t, finals_t, dx_t, d0_t, grads_t = run_torch("gru", theirs, config, p)
    out, finals, dx, d0, grads = run_ours("gru", ours, config, p)
    rtol = TORCH_RTOL[np.dtype(dtype)]
    assert out.dtype == dx.dtype == np.dtype(dtype)
    assert_close(out, out_t, rtol, "output")
    assert_close(finals[0], finals_t[0], rtol, "h_n")
    assert_close(dx, dx_t, rtol, "dx")
    if d0_t is not None:
        assert_close(d0[0], d0_t[0], rtol, "dh0")
    assert sorted(grads) == sorted(grads_t)
    for name, g in grads_t.items():
        assert_close(grads[name], g, rtol, name)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_matches_torch(dtype, bias):
    rng = np.random.default_rng(1)
    cell = rnnfast.GRUCell(4, 5, bias=bias, dtype=dtype, seed=0)
    t = torch.nn.GRUCell(
        4, 5, bias=bias, dtype=torch.float64 if dtype == np.float64 else torch.float32
    )
    t.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    x, h, g = (rng.standard_normal((3, n)).astype(dtype) for n in (4, 5, 5))
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h, requires_grad=True)
    h1_t = t(xt, ht)
    (h1_t * torch.tensor(g)).sum().backward()
    h1 = cell(x, h)
    dx, dh = cell.backward(g)
    rtol = TORCH_RTOL[np.dtype(dtype)]
    assert_close(h1, h1_t.detach().numpy(), rtol, "h1")
    assert_close(dx, xt.grad.numpy(), rtol, "dx")
    assert_close(dh, ht.grad.numpy(), rtol, "dh")
    for name, q in t.named_parameters():
        assert_close(cell.grads[name], q.grad.numpy(), rtol, name)
    h1 = cell(x[0])  # unbatched, zero state
    assert h1.shape == (5,)
    assert_close(h1, t(torch.tensor(x[0])).detach().numpy(), rtol, "unbatched h1")


def test_step_streams_the_forward(dtype):
    rng = np.random.default_rng(2)
    gru = rnnfast.GRU(3, 5, num_layers=2, dtype=dtype, seed=0)
    x = rng.standard_normal((6, 2, 3)).astype(dtype)
    h0 = rng.standard_normal((2, 2, 5)).astype(dtype)
    out, h_n = gru(x, h0)
    h = h0
    rtol = RTOL[np.dtype(dtype)]
    for t in range(6):
        y, h = gru.step(x[t], h)
        assert_close(y, out[t], rtol, f"output[{t}]")
    assert_close(h, h_n, rtol, "h_n")
    with pytest.raises(ValueError, match="bidirectional"):
        rnnfast.GRU(3, 5, bidirectional=True).step(x[0].astype(np.float32))


@pytest.mark.parametrize("bias", [True, False])
def test_reference_matches_compiled_float64(bias):
    rng = np.random.default_rng(3)
    Hs = 6
    x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, Hs))
    w_ih, w_hh = rng.standard_normal((3 * Hs, D)) * 0.5, rng.standard_normal((3 * Hs, Hs)) * 0.5
    b_ih, b_hh = (
        (rng.standard_normal(3 * Hs), rng.standard_normal(3 * Hs)) if bias else (None, None)
    )
    backends = ("numpy", "cython") if rnnfast.HAVE_COMPILED else ("numpy",)
    outs = {
        b: functional.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, backend=b)
        for b in backends
    }
    dh = rng.standard_normal(outs["numpy"].h.shape)
    grads = {
        b: functional.gru_backward(dh, x, h0, o.h, o.workspace, w_ih, w_hh, b_hh, backend=b)
        for b, o in outs.items()
    }
    last = backends[-1]
    assert_close(outs[last].h, outs["numpy"].h, 1e-12, "h")
    for name, a, e in zip(functional.GRUGrads._fields, grads[last], grads["numpy"], strict=True):
        assert (a is None) == (e is None) == (not bias and name.startswith("db")), name
        if e is not None:
            assert_close(a, e, 1e-12, name)
    ref = outs["numpy"]
    cross = functional.gru_backward(dh, x, h0, ref.h, ref.workspace, w_ih, w_hh, b_hh, backend=last)
    for name, a, e in zip(functional.GRUGrads._fields, cross, grads["numpy"], strict=True):
        if e is not None:
            assert_close(a, e, 1e-12, name)


def test_one_bias_alone_is_refused():
    x, w = np.zeros((2, 1, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match="b_ih and b_hh"):
        functional.gru_forward(x, None, w[:, :2], np.zeros((3, 1)), np.zeros(3), None)


def test_w_ih_rows_must_be_three_blocks():
    with pytest.raises(ValueError, match="3 \\* hidden_size"):
        functional.gru_forward(np.zeros((2, 1, 2)), None, np.zeros((4, 2)), np.zeros((4, 1)))


def test_state_dict_round_trips_with_torch():
    t = torch.nn.GRU(4, 3, 2, bidirectional=True)
    gru = rnnfast.GRU(4, 3, 2, bidirectional=True, seed=0)
    assert list(gru.state_dict()) == list(t.state_dict())
    gru.load_state_dict(t.state_dict())
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(gru.state_dict()[k], v.numpy())
    back = torch.nn.GRU(4, 3, 2, bidirectional=True)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    x = np.ones((2, 1, 4), dtype=np.float32)
    assert_close(gru(torch.from_numpy(x))[0], back(torch.from_numpy(x))[0].detach(), 3e-6)
    cell, tc = rnnfast.GRUCell(4, 3, seed=0), torch.nn.GRUCell(4, 3)
    cell.load_state_dict(tc.state_dict())
    assert list(cell.state_dict()) == list(tc.state_dict())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True}])
def test_training_follows_torch(optimizer, options):
    """torch's initialization, the same optimizer steps: the same loss curve and weights."""
    losses, tlosses, ours, theirs = train_both("gru", optimizer, **options)
    assert losses[-1] < 0.95 * losses[0]  # it learns
    assert_close(losses, tlosses, 1e-9, "loss curve")
    for k, v in theirs.items():
        assert_close(ours[k], v, 1e-9, k)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_an_eval_forward_keeps_no_workspace_and_backward_still_works(backend):
    layer = rnnfast.GRU(
        3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, backend=backend
    )
    gated_torch.check_eval_forward_keeps_no_workspace(
        layer, np.random.default_rng(0).standard_normal((4, 2, 3))
    )


def test_a_workspace_serves_two_backwards():
    """The compiled backward writes its gate gradients over the workspace; a second backward
    from the same workspace recomputes it and gives the same gradients."""
    rng = np.random.default_rng(5)
    x, w_ih, w_hh = (
        rng.standard_normal((6, 3, 4)),
        rng.standard_normal((15, 4)),
        rng.standard_normal((15, 5)),
    )
    b_ih, b_hh = rng.standard_normal(15), rng.standard_normal(15)
    out = functional.gru_forward(x, None, w_ih, w_hh, b_ih, b_hh, training=True)
    dh = rng.standard_normal(out.h.shape)
    first = functional.gru_backward(dh, x, None, *out, w_ih, w_hh, b_hh)
    second = functional.gru_backward(dh, x, None, *out, w_ih, w_hh, b_hh)
    for name, a, b in zip(first._fields, first, second, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    ref = functional.gru_backward(dh, x, None, *out, w_ih, w_hh, b_hh, backend="numpy")
    for name, a, b in zip(first._fields, first, ref, strict=True):
        assert_close(a, b, 1e-12, name)
