"""rnnfast.RNN, RNNCell, Linear and Embedding against PyTorch: outputs, final states and every
gradient, float32 and float64, with packed sequences for ``lengths``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from conftest import RTOL, assert_close

import rnnfast

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch


class Config(NamedTuple):
    layers: int
    bidirectional: bool = False
    batch_first: bool = False
    nonlinearity: str = "tanh"
    bias: bool = True
    h0: bool = False
    unbatched: bool = False
    lengths: tuple[int, ...] | None = None

    def __str__(self) -> str:
        defaults = Config(self.layers)
        changed = [f"{k}={v}" for k, v in self._asdict().items() if v != getattr(defaults, k)]
        return "-".join([f"L{self.layers}", *changed])


CONFIGS = [
    Config(1),
    Config(2),
    Config(3),
    Config(1, bidirectional=True),
    Config(3, bidirectional=True, h0=True),
    Config(2, batch_first=True, h0=True),
    Config(2, nonlinearity="relu"),
    Config(2, bidirectional=True, nonlinearity="relu", bias=False),
    Config(1, bias=False, h0=True),
    Config(2, unbatched=True, h0=True),
    Config(2, bidirectional=True, unbatched=True),
    Config(1, lengths=(5, 2, 4, 1)),
    Config(2, bidirectional=True, lengths=(3, 5, 1, 5), h0=True),
    Config(3, bidirectional=True, batch_first=True, lengths=(2, 4, 4, 3), nonlinearity="relu"),
    Config(2, lengths=(1, 1, 1, 1), h0=True),
]


def to_torch(a: np.ndarray, requires_grad: bool = False):
    return torch.tensor(a, requires_grad=requires_grad)


def torch_dtype(dtype: np.dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def torch_rnn_from(rnn: rnnfast.RNN, dtype: np.dtype):
    """A torch.nn.RNN of the same configuration, with rnn's weights (numpy -> torch)."""
    t = torch.nn.RNN(
        rnn.input_size,
        rnn.hidden_size,
        rnn.num_layers,
        nonlinearity=rnn.nonlinearity,
        bias=rnn.bias,
        batch_first=rnn.batch_first,
        bidirectional=rnn.bidirectional,
        dtype=torch_dtype(dtype),
    )
    t.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    return t


def run_torch(t, x, h0, lengths, g, g_n, batch_first):
    """torch forward (packed when lengths is given) and backward of sum(out*g) + sum(h_n*g_n)."""
    xt = to_torch(x, True)
    h0t = None if h0 is None else to_torch(h0, True)
    if lengths is None:
        out, h_n = t(xt, h0t)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
        )
        out, h_n = t(packed, h0t)
        total = x.shape[1] if batch_first else x.shape[0]
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=batch_first, total_length=total
        )
    ((out * to_torch(g)).sum() + (h_n * to_torch(g_n)).sum()).backward()
    return out.detach().numpy(), h_n.detach().numpy(), xt.grad.numpy(), h0t


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_rnn_matches_torch(config: Config, dtype):
    rng = np.random.default_rng(len(CONFIGS) + config.layers)
    T, B, D, H = 5, 4, 3, 6
    dirs = 2 if config.bidirectional else 1
    rnn = rnnfast.RNN(
        D,
        H,
        config.layers,
        nonlinearity=config.nonlinearity,
        bias=config.bias,
        batch_first=config.batch_first,
        bidirectional=config.bidirectional,
        dtype=dtype,
        seed=3,
    )
    t = torch_rnn_from(rnn, dtype)

    lead = () if config.unbatched else ((B, T) if config.batch_first else (T, B))
    x = rng.standard_normal((*(lead or (T,)), D)).astype(dtype)
    state = (config.layers * dirs, *(() if config.unbatched else (B,)), H)
    h0 = rng.standard_normal(state).astype(dtype) if config.h0 else None
    g = rng.standard_normal((*(lead or (T,)), dirs * H)).astype(dtype)
    g_n = rng.standard_normal(state).astype(dtype)  # g is nonzero on padding: it must not count

    out_t, h_n_t, dx_t, h0t = run_torch(t, x, h0, config.lengths, g, g_n, config.batch_first)
    out, h_n = rnn(x, h0, config.lengths)
    dx, dh0 = rnn.backward(g, g_n)

    rtol = RTOL[np.dtype(dtype)]
    assert out.dtype == h_n.dtype == dx.dtype == dh0.dtype == dtype
    assert_close(out, out_t, rtol, "output")
    assert_close(h_n, h_n_t, rtol, "h_n")
    assert_close(dx, dx_t, rtol, "dx")
    if h0t is not None:
        assert_close(dh0, h0t.grad.numpy(), rtol, "dh0")
    for name, p in t.named_parameters():
        assert_close(rnn.grads[name], p.grad.numpy(), rtol, name)


def test_eval_mode_with_dropout_matches_torch_eval():
    rng = np.random.default_rng(0)
    rnn = rnnfast.RNN(3, 5, 3, dropout=0.4, seed=0).eval()
    t = torch.nn.RNN(3, 5, 3, dropout=0.4).eval()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    out_t, h_n_t = t(to_torch(x))
    out, h_n = rnn(x)
    assert_close(out, out_t.detach().numpy(), 3e-5, "output")
    assert_close(h_n, h_n_t.detach().numpy(), 3e-5, "h_n")


def test_state_dict_round_trips_with_torch():
    t = torch.nn.RNN(4, 3, 2, bidirectional=True)  # parameters that require grad
    rnn = rnnfast.RNN(4, 3, 2, bidirectional=True, seed=0)
    rnn.load_state_dict(t.state_dict())
    rnn.load_state_dict(dict(t.named_parameters()))
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(rnn.state_dict()[k], v.numpy())
    with pytest.raises(ValueError, match="weight_ih_l0"):
        rnnfast.RNN(5, 3, 2, bidirectional=True).load_state_dict(t.state_dict())
    back = torch.nn.RNN(4, 3, 2, bidirectional=True)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    x = np.ones((2, 1, 4), dtype=np.float32)
    assert_close(rnn(torch.from_numpy(x))[0], back(torch.from_numpy(x))[0].detach(), 3e-6)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_matches_torch(nonlinearity, dtype):
    rng = np.random.default_rng(1)
    cell = rnnfast.RNNCell(4, 5, nonlinearity=nonlinearity, dtype=dtype, seed=0)
    t = torch.nn.RNNCell(4, 5, nonlinearity=nonlinearity, dtype=torch_dtype(dtype))
    t.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    x = rng.standard_normal((3, 4)).astype(dtype)
    h = rng.standard_normal((3, 5)).astype(dtype)
    g = rng.standard_normal((3, 5)).astype(dtype)
    xt, ht = to_torch(x, True), to_torch(h, True)
    h_new_t = t(xt, ht)
    (h_new_t * to_torch(g)).sum().backward()
    h_new = cell(x, h)
    dx, dh = cell.backward(g)
    rtol = RTOL[np.dtype(dtype)]
    assert_close(h_new, h_new_t.detach().numpy(), rtol, "h'")
    assert_close(dx, xt.grad.numpy(), rtol, "dx")
    assert_close(dh, ht.grad.numpy(), rtol, "dh")
    for name, p in t.named_parameters():
        assert_close(cell.grads[name], p.grad.numpy(), rtol, name)


def test_linear_and_embedding_match_torch():
    rng = np.random.default_rng(2)
    lin = rnnfast.Linear(4, 3, dtype=np.float64, seed=0)
    t = torch.nn.Linear(4, 3, dtype=torch.float64)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x = rng.standard_normal((2, 5, 4))
    g = rng.standard_normal((2, 5, 3))
    xt = to_torch(x, True)
    (t(xt) * to_torch(g)).sum().backward()
    assert_close(lin(x), t(xt).detach().numpy(), 1e-13, "y")
    assert_close(lin.backward(g), xt.grad.numpy(), 1e-13, "dx")
    for name, p in t.named_parameters():
        assert_close(lin.grads[name], p.grad.numpy(), 1e-13, name)

    emb = rnnfast.Embedding(6, 3, padding_idx=2, dtype=np.float64, seed=0)
    te = torch.nn.Embedding(6, 3, padding_idx=2, dtype=torch.float64)
    te.load_state_dict({k: torch.from_numpy(v) for k, v in emb.state_dict().items()})
    ids = np.array([[0, 2, 5], [5, 5, 1]])
    g = rng.standard_normal((2, 3, 3))
    (te(torch.from_numpy(ids)) * to_torch(g)).sum().backward()
    assert_close(emb(ids), te(torch.from_numpy(ids)).detach().numpy(), 0, "lookup")
    emb.backward(g)
    assert_close(emb.grads["weight"], te.weight.grad.numpy(), 1e-14, "weight")
