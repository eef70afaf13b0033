"""Shared helpers of the LSTM and GRU tests: a configuration grid, a torch twin of an rnnfast
gated layer, and one forward + backward run on each side (packed sequences for ``lengths``)."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np
import torch

import rnnfast

T, B, D, H, P = 5, 4, 3, 6, 2
LENGTHS = (5, 2, 4, 1)


class Config(NamedTuple):
    layers: int
    bidirectional: bool
    batch_first: bool
    lengths: tuple[int, ...] | None
    proj_size: int
    unbatched: bool
    hx: bool

    def __str__(self) -> str:
        parts = [f"L{self.layers}", "bi" if self.bidirectional else "uni"]
        parts += ["bf"] if self.batch_first else []
        parts += ["len"] if self.lengths else []
        parts += [f"P{self.proj_size}"] if self.proj_size else []
        parts += ["unbatched"] if self.unbatched else []
        parts += ["hx"] if self.hx else []
        return "-".join(parts)


def grid(proj_sizes: tuple[int, ...]) -> list[Config]:
    """layers x directions x batch_first x lengths x proj_size, and unbatched (no lengths, no
    batch_first); hx given in every other configuration."""
    configs = []
    for layers, bi, bf, lengths, proj in itertools.product(
        (1, 2), (False, True), (False, True), (None, LENGTHS), proj_sizes
    ):
        hx = (layers + bi + bf + (lengths is None)) % 2 == 0
        configs.append(Config(layers, bi, bf, lengths, proj, False, hx))
    for layers, bi, proj in itertools.product((1, 2), (False, True), proj_sizes):
        configs.append(Config(layers, bi, False, None, proj, True, layers == 2))
    return configs


def torch_dtype(dtype: Any) -> torch.dtype:
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def make_pair(cell: str, config: Config, dtype: Any, **kwargs: Any):
    """(rnnfast layer, torch twin with its weights)."""
    options = {
        "num_layers": config.layers,
        "batch_first": config.batch_first,
        "bidirectional": config.bidirectional,
        **kwargs,
    }
    if cell == "lstm":
        options["proj_size"] = config.proj_size
        ours = rnnfast.LSTM(D, H, **options, dtype=dtype, seed=3)
        theirs = torch.nn.LSTM(D, H, **options, dtype=torch_dtype(dtype))
    else:
        ours = rnnfast.GRU(D, H, **options, dtype=dtype, seed=3)
        theirs = torch.nn.GRU(D, H, **options, dtype=torch_dtype(dtype))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


class Problem(NamedTuple):
    x: np.ndarray
    states0: tuple[np.ndarray, ...] | None  # (h0,) or (h0, c0)
    d_output: np.ndarray
    d_finals: tuple[np.ndarray, ...]


def make_problem(cell: str, config: Config, dtype: Any, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    dirs = 2 if config.bidirectional else 1
    S = config.proj_size or H
    lead = (T,) if config.unbatched else ((B, T) if config.batch_first else (T, B))
    batch = () if config.unbatched else (B,)
    features = (S, H) if cell == "lstm" else (S,)

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    states0 = tuple(arr(config.layers * dirs, *batch, n) for n in features) if config.hx else None
    # d_output is nonzero on the padding too: it must not count.
    return Problem(
        arr(*lead, D),
        states0,
        arr(*lead, dirs * S),
        tuple(arr(config.layers * dirs, *batch, n) for n in features),
    )


def run_torch(cell: str, t, config: Config, p: Problem):
    """torch's outputs, finals, dx, d_states0 (or None) and parameter gradients."""
    xt = torch.tensor(p.x, requires_grad=True)
    s0 = None if p.states0 is None else [torch.tensor(s, requires_grad=True) for s in p.states0]
    hx = None if s0 is None else (tuple(s0) if cell == "lstm" else s0[0])
    if config.lengths is None:
        out, finals = t(xt, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(config.lengths), batch_first=config.batch_first, enforce_sorted=False
        )
        out, finals = t(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=config.batch_first, total_length=T
        )
    finals = finals if cell == "lstm" else (finals,)
    loss = (out * torch.tensor(p.d_output)).sum()
    for f, g in zip(finals, p.d_finals, strict=True):
        loss = loss + (f * torch.tensor(g)).sum()
    loss.backward()
    grads = {name: q.grad.numpy() for name, q in t.named_parameters()}
    d0 = None if s0 is None else tuple(s.grad.numpy() for s in s0)
    return (
        out.detach().numpy(),
        tuple(f.detach().numpy() for f in finals),
        xt.grad.numpy(),
        d0,
        grads,
    )


def run_ours(cell: str, layer, config: Config, p: Problem):
    """The same from the rnnfast layer."""
    hx = None if p.states0 is None else (p.states0 if cell == "lstm" else p.states0[0])
    out, finals = layer(p.x, hx, config.lengths)
    if cell == "lstm":
        dx, d0 = layer.backward(p.d_output, *p.d_finals)
    else:
        finals = (finals,)
        dx, dh0 = layer.backward(p.d_output, *p.d_finals)
        d0 = (dh0,)
    return out, tuple(finals), dx, d0, dict(layer.grads)


def train_both(cell: str, optimizer: str, steps: int = 25, **options: Any):
    """The same layer (torch's initialization loaded into rnnfast) trained on both sides for
    ``steps`` optimizer steps on one regression batch: (rnnfast's losses, torch's losses, the
    two final state dicts)."""
    torch.manual_seed(0)
    layer_cls = {"lstm": (rnnfast.LSTM, torch.nn.LSTM), "gru": (rnnfast.GRU, torch.nn.GRU)}[cell]
    theirs = layer_cls[1](D, H, **options, dtype=torch.float64)
    ours = layer_cls[0](D, H, **options, dtype=np.float64, seed=0)
    ours.load_state_dict(theirs.state_dict())
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, D))
    features = ours(x)[0].shape[-1]
    y = rng.uniform(-0.5, 0.5, (T, B, features))
    if optimizer == "adam":
        opt = rnnfast.Adam(ours.parameters(), ours.grads, lr=0.01)
        topt = torch.optim.Adam(theirs.parameters(), lr=0.01)
    else:
        opt = rnnfast.SGD(ours.parameters(), ours.grads, lr=0.5, momentum=0.9)
        topt = torch.optim.SGD(theirs.parameters(), lr=0.5, momentum=0.9)
    losses, tlosses = [], []
    for _ in range(steps):
        ours.zero_grad()
        out = ours(x)[0]
        losses.append(float(np.mean((out - y) ** 2)))
        ours.backward(2 * (out - y) / out.size)
        opt.step()
        topt.zero_grad()
        loss = ((theirs(torch.tensor(x))[0] - torch.tensor(y)) ** 2).mean()
        tlosses.append(loss.item())
        loss.backward()
        topt.step()
    return (
        np.array(losses),
        np.array(tlosses),
        ours.state_dict(),
        {k: v.detach().numpy() for k, v in theirs.state_dict().items()},
    )


def check_eval_forward_keeps_no_workspace(layer, x: np.ndarray) -> None:
    """Inference (eval mode) keeps nothing beyond the states; a backward after it recomputes
    the workspace and gives the training-mode gradients."""
    out, _ = layer(x)
    want_dx = layer.backward(np.ones_like(out))[0]
    want = {k: v.copy() for k, v in layer.grads.items()}
    layer.zero_grad()
    layer.eval()
    out_eval, _ = layer(x)
    np.testing.assert_array_equal(out_eval, out)
    assert all(ws is None for lc in layer._cache.layers for ws in lc.workspaces)
    np.testing.assert_allclose(layer.backward(np.ones_like(out))[0], want_dx, rtol=1e-12)
    for k, v in want.items():
        np.testing.assert_allclose(layer.grads[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
