"""rnnfast matches a one-layer torch.nn.RNN: outputs and every gradient."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, make_problem

import rnnfast

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

# (T, B, D, H, nonlinearity, bias)
CONFIGS = [
    (5, 3, 4, 6, "tanh", True),
    (7, 2, 3, 5, "relu", True),
    (4, 3, 5, 4, "tanh", False),
    (6, 4, 4, 8, "relu", False),
    (5, 1, 3, 7, "tanh", True),
    (1, 4, 3, 5, "relu", True),
    (1, 1, 1, 1, "tanh", True),
    (12, 8, 16, 64, "tanh", True),
    (9, 5, 16, 64, "relu", True),
]


def config_id(config) -> str:
    T, B, D, H, nonlinearity, bias = config
    return f"T{T}-B{B}-D{D}-H{H}-{nonlinearity}-{'bias' if bias else 'nobias'}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch_rnn(config, dtype, backend):
    T, B, D, H, nonlinearity, bias = config
    seed = sum(config[:4])
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(D, H, num_layers=1, nonlinearity=nonlinearity, bias=bias)
    rnn = rnn.double() if dtype == np.float64 else rnn.float()

    # Inputs and the loss weights G (as dh) from the shared generator; weights from torch.
    p = make_problem(np.random.default_rng(seed), T, B, D, H, dtype)
    x = torch.tensor(p.x, requires_grad=True)
    h0 = torch.tensor(p.h0[None], requires_grad=True)
    out, h_n = rnn(x, h0)
    (out * torch.from_numpy(p.dh)).sum().backward()

    w_ih = rnn.weight_ih_l0.detach().numpy()
    w_hh = rnn.weight_hh_l0.detach().numpy()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy() if bias else None
    assert w_ih.dtype == w_hh.dtype == p.dtype

    h = rnnfast.rnn_forward(p.x, p.h0, w_ih, w_hh, b, nonlinearity=nonlinearity, backend=backend)
    grads = rnnfast.rnn_backward(
        p.dh, p.x, p.h0, h, w_ih, w_hh, nonlinearity=nonlinearity, backend=backend
    )

    rtol = RTOL[p.dtype]
    assert h.dtype == p.dtype
    assert_close(h, out.detach().numpy(), rtol, "h")
    assert_close(h[-1], h_n.detach().numpy()[0], rtol, "h[-1]")
    assert_close(grads.dx, x.grad.numpy(), rtol, "dx")
    assert_close(grads.dh0, h0.grad.numpy()[0], rtol, "dh0")
    assert_close(grads.dw_ih, rnn.weight_ih_l0.grad.numpy(), rtol, "dw_ih")
    assert_close(grads.dw_hh, rnn.weight_hh_l0.grad.numpy(), rtol, "dw_hh")
    if bias:
        assert_close(grads.db, rnn.bias_ih_l0.grad.numpy(), rtol, "db vs bias_ih")
        assert_close(grads.db, rnn.bias_hh_l0.grad.numpy(), rtol, "db vs bias_hh")
    else:
        # Without a bias, db is still the gradient a bias at zero would receive: sum of da.
        assert_close(grads.db, torch_bias_grad_at_zero(rnn, x, h0, p.dh), rtol, "db")


def torch_bias_grad_at_zero(rnn, x, h0, dh) -> np.ndarray:
    """The gradient of a zero bias, from an identical torch RNN that has one."""
    with_bias = torch.nn.RNN(
        rnn.input_size, rnn.hidden_size, nonlinearity=rnn.nonlinearity, bias=True
    ).to(x.dtype)
    with torch.no_grad():
        with_bias.weight_ih_l0.copy_(rnn.weight_ih_l0)
        with_bias.weight_hh_l0.copy_(rnn.weight_hh_l0)
        with_bias.bias_ih_l0.zero_()
        with_bias.bias_hh_l0.zero_()
    out, _ = with_bias(x.detach(), h0.detach())
    (out * torch.from_numpy(dh)).sum().backward()
    return with_bias.bias_ih_l0.grad.numpy()
