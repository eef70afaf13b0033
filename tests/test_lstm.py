"""rnnfast.LSTM and LSTMCell against torch.nn.LSTM / LSTMCell (values and every gradient over
layers x directions x batch_first x lengths x proj_size x unbatched), the reference against the
compiled kernels, the streaming step, state dicts and the constructor's checks."""

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

# vs torch: float64 to 1e-10 (the brief's bound; measured ~1e-15), float32 to 1e-5.
TORCH_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
CONFIGS = grid(proj_sizes=(0, 2))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_lstm_matches_torch(config, dtype):
    ours, theirs = make_pair("lstm", config, dtype)
    p = make_problem("lstm", config, dtype, seed=len(str(config)))
    out_t, finals_t, dx_t, d0_t, grads_t = run_torch("lstm", theirs, config, p)
    out, finals, dx, d0, grads = run_ours("lstm", ours, config, p)
    rtol = TORCH_RTOL[np.dtype(dtype)]
    assert out.dtype == dx.dtype == np.dtype(dtype)
    assert_close(out, out_t, rtol, "output")
    for name, a, e in zip(("h_n", "c_n"), finals, finals_t, strict=True):
        assert_close(a, e, rtol, name)
    assert_close(dx, dx_t, rtol, "dx")
    if d0_t is not None:
        for name, a, e in zip(("dh0", "dc0"), d0, d0_t, strict=True):
            assert_close(a, e, rtol, name)
    assert sorted(grads) == sorted(grads_t)
    for name, g in grads_t.items():
        assert_close(grads[name], g, rtol, name)


def test_lstm_cell_matches_torch(dtype):
    rng = np.random.default_rng(1)
    cell = rnnfast.LSTMCell(4, 5, dtype=dtype, seed=0)
    t = torch.nn.LSTMCell(4, 5, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    x, h, c = (rng.standard_normal((3, n)).astype(dtype) for n in (4, 5, 5))
    g_h, g_c = (rng.standard_normal((3, 5)).astype(dtype) for _ in range(2))
    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    h1_t, c1_t = t(xt, (ht, ct))
    ((h1_t * torch.tensor(g_h)).sum() + (c1_t * torch.tensor(g_c)).sum()).backward()
    h1, c1 = cell(x, (h, c))
    dx, (dh, dc) = cell.backward(g_h, g_c)
    rtol = TORCH_RTOL[np.dtype(dtype)]
    for name, a, e in [
        ("h1", h1, h1_t.detach().numpy()),
        ("c1", c1, c1_t.detach().numpy()),
        ("dx", dx, xt.grad.numpy()),
        ("dh", dh, ht.grad.numpy()),
        ("dc", dc, ct.grad.numpy()),
    ]:
        assert_close(a, e, rtol, name)
    for name, q in t.named_parameters():
        assert_close(cell.grads[name], q.grad.numpy(), rtol, name)


def test_lstm_cell_unbatched_and_zero_state():
    cell = rnnfast.LSTMCell(3, 4, dtype=np.float64, seed=0)
    t = torch.nn.LSTMCell(3, 4, dtype=torch.float64)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    x = np.linspace(-1, 1, 3)
    h1, c1 = cell(x)
    h1_t, c1_t = t(torch.tensor(x))
    assert h1.shape == c1.shape == (4,)
    assert_close(h1, h1_t.detach().numpy(), 1e-12, "h1")
    assert_close(c1, c1_t.detach().numpy(), 1e-12, "c1")
    dx, (dh, dc) = cell.backward(np.ones(4))
    assert dx.shape == (3,) and dh.shape == dc.shape == (4,)


def test_step_streams_the_forward(dtype):
    rng = np.random.default_rng(2)
    lstm = rnnfast.LSTM(3, 5, num_layers=2, proj_size=2, dtype=dtype, seed=0)
    x = rng.standard_normal((6, 2, 3)).astype(dtype)
    h0 = rng.standard_normal((2, 2, 2)).astype(dtype)
    c0 = rng.standard_normal((2, 2, 5)).astype(dtype)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    state = (h0, c0)
    rtol = RTOL[np.dtype(dtype)]
    for t in range(6):
        y, state = lstm.step(x[t], state)
        assert_close(y, out[t], rtol, f"output[{t}]")
    assert_close(state[0], h_n, rtol, "h_n")
    assert_close(state[1], c_n, rtol, "c_n")
    y, (h, c) = lstm.step(x[0, 0])  # unbatched, zero state
    assert y.shape == (2,) and h.shape == (2, 2) and c.shape == (2, 5)
    with pytest.raises(ValueError, match="bidirectional"):
        rnnfast.LSTM(3, 5, bidirectional=True).step(x[0].astype(np.float32))


def test_reference_matches_compiled_float64():
    """Both backends of every functional entry point, ~1e-12 in float64 (the reference where
    the kernels are not built yet: then this is the same code twice)."""
    rng = np.random.default_rng(3)
    Hs = 6
    for P in (0, 3):
        S = P or Hs
        args = [
            rng.standard_normal((T, B, D)),
            rng.standard_normal((B, S)),
            rng.standard_normal((B, Hs)),
            rng.standard_normal((4 * Hs, D)) * 0.5,
            rng.standard_normal((4 * Hs, S)) * 0.5,
            rng.standard_normal(4 * Hs),
            rng.standard_normal((P, Hs)) if P else None,
        ]
        outs = {
            b: functional.lstm_forward(*args, training=True, backend=b)
            for b in ("numpy", "cython" if rnnfast.HAVE_COMPILED else "numpy")
        }
        ref, comp = outs["numpy"], outs.get("cython", outs["numpy"])
        assert_close(comp.h, ref.h, 1e-12, "h")
        assert_close(comp.c, ref.c, 1e-12, "c")
        dh, dc = rng.standard_normal(ref.h.shape), rng.standard_normal(ref.c.shape)
        x, h0, c0, w_ih, w_hh, _, w_hr = args
        grads = {}
        for b, o in outs.items():
            grads[b] = functional.lstm_backward(
                dh, dc, x, h0, c0, o.h, o.c, o.workspace, w_ih, w_hh, w_hr, backend=b
            )
        for name, a, e in zip(
            functional.LSTMGrads._fields,
            grads.get("cython", grads["numpy"]),
            grads["numpy"],
            strict=True,
        ):
            if e is not None:
                assert_close(a, e, 1e-12, name)
        # A workspace from one backend, the backward on the other: the same gradients.
        cross = functional.lstm_backward(
            dh, dc, x, h0, c0, ref.h, ref.c, ref.workspace, w_ih, w_hh, w_hr, backend="auto"
        )
        for name, a, e in zip(functional.LSTMGrads._fields, cross, grads["numpy"], strict=True):
            if e is not None:
                assert_close(a, e, 1e-12, name)


def test_inference_forward_keeps_nothing():
    rng = np.random.default_rng(4)
    x, w_ih, w_hh = (
        rng.standard_normal((3, 2, 2)),
        rng.standard_normal((8, 2)),
        rng.standard_normal((8, 2)),
    )
    out = functional.lstm_forward(x, None, None, w_ih, w_hh)
    assert out.workspace is None
    with pytest.raises(TypeError, match="training=True"):
        functional.lstm_backward(
            out.h, None, x, None, None, out.h, out.c, out.workspace, w_ih, w_hh
        )
    trained = functional.lstm_forward(x, None, None, w_ih, w_hh, training=True)
    np.testing.assert_array_equal(trained.h, out.h)
    with pytest.raises(ValueError, match="workspace"):
        functional.lstm_backward(
            out.h[:2], None, x[:2], None, None, out.h[:2], out.c[:2], trained.workspace, w_ih, w_hh
        )


def test_state_dict_round_trips_with_torch():
    t = torch.nn.LSTM(4, 3, 2, bidirectional=True, proj_size=2)
    lstm = rnnfast.LSTM(4, 3, 2, bidirectional=True, proj_size=2, seed=0)
    assert list(lstm.state_dict()) == list(t.state_dict())
    for k, v in t.state_dict().items():
        assert lstm.state_dict()[k].shape == tuple(v.shape), k
    lstm.load_state_dict(t.state_dict())
    lstm.load_state_dict(dict(t.named_parameters()))
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(lstm.state_dict()[k], v.numpy())
    back = torch.nn.LSTM(4, 3, 2, bidirectional=True, proj_size=2)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})
    x = np.ones((2, 1, 4), dtype=np.float32)
    assert_close(lstm(torch.from_numpy(x))[0], back(torch.from_numpy(x))[0].detach(), 3e-6)
    cell, tc = rnnfast.LSTMCell(4, 3, seed=0), torch.nn.LSTMCell(4, 3)
    cell.load_state_dict(tc.state_dict())
    assert list(cell.state_dict()) == list(tc.state_dict())


def test_initialization_is_uniform_within_one_over_sqrt_h():
    lstm = rnnfast.LSTM(5, 16, 2, proj_size=4, bidirectional=True, seed=0)
    for name, p in lstm.parameters().items():
        assert np.abs(p).max() <= 0.25, name
        assert np.abs(p).max() > 0.2, name  # not a narrower range


@pytest.mark.parametrize("proj_size", [6, 7, -1])
def test_proj_size_must_be_below_hidden_size(proj_size):
    with pytest.raises(ValueError, match="proj_size"):
        rnnfast.LSTM(3, 6, proj_size=proj_size)


@pytest.mark.parametrize("proj_size", [1.0, True, "2", None])
def test_proj_size_must_be_an_int(proj_size):
    with pytest.raises(TypeError, match="proj_size"):
        rnnfast.LSTM(3, 6, proj_size=proj_size)


@pytest.mark.parametrize(
    ("hx", "error"),
    [
        (np.zeros((1, 2, 4)), TypeError),  # an array, not a tuple
        ((np.zeros((1, 2, 4)),), ValueError),
        ((np.zeros((1, 2, 4)), np.zeros((1, 2, 4)), np.zeros((1, 2, 4))), ValueError),
        ((np.zeros((1, 2, 4)), None), TypeError),
        ((np.zeros((1, 2, 4)), np.zeros((1, 2, 5))), ValueError),
        ((np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4))), TypeError),
    ],
)
def test_a_wrong_hx_is_refused(hx, error):
    lstm = rnnfast.LSTM(3, 4, dtype=np.float64, seed=0)
    with pytest.raises(error, match=r"hx|h0|c0"):
        lstm(np.zeros((2, 2, 3)), hx)


def test_grads_accumulate_and_backward_needs_forward():
    lstm = rnnfast.LSTM(3, 4, dtype=np.float64, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        lstm.backward(np.zeros((2, 1, 4)))
    x = np.ones((2, 1, 3))
    out, _ = lstm(x)
    lstm.backward(np.ones_like(out))
    once = lstm.grads["weight_hh_l0"].copy()
    lstm(x)
    lstm.backward(np.ones_like(out))
    assert_close(lstm.grads["weight_hh_l0"], 2 * once, 1e-14)
    assert not np.allclose(once, 0)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "proj_size": 3, "bidirectional": True}])
def test_training_follows_torch(optimizer, options):
    """torch's initialization, the same optimizer steps: the same loss curve and weights."""
    losses, tlosses, ours, theirs = train_both("lstm", optimizer, **options)
    assert losses[-1] < 0.95 * losses[0]  # it learns
    assert_close(losses, tlosses, 1e-9, "loss curve")
    for k, v in theirs.items():
        assert_close(ours[k], v, 1e-9, k)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_an_eval_forward_keeps_no_workspace_and_backward_still_works(backend):
    layer = rnnfast.LSTM(
        3,
        5,
        num_layers=2,
        bidirectional=True,
        proj_size=2,
        dtype=np.float64,
        seed=0,
        backend=backend,
    )
    gated_torch.check_eval_forward_keeps_no_workspace(
        layer, np.random.default_rng(0).standard_normal((4, 2, 3))
    )


def test_a_workspace_serves_two_backwards():
    """The compiled backward uses the workspace's memory for its gradients; a second backward
    from the same workspace recomputes it and gives the same gradients."""
    rng = np.random.default_rng(5)
    x, w_ih, w_hh = (
        rng.standard_normal((6, 3, 4)),
        rng.standard_normal((20, 4)),
        rng.standard_normal((20, 5)),
    )
    out = functional.lstm_forward(x, None, None, w_ih, w_hh, training=True)
    dh = rng.standard_normal(out.h.shape)
    first = functional.lstm_backward(dh, None, x, None, None, *out, w_ih, w_hh)
    second = functional.lstm_backward(dh, None, x, None, None, *out, w_ih, w_hh)
    for name, a, b in zip(first._fields, first, second, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)
