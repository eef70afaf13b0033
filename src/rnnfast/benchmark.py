"""Forward + BPTT benchmarks: rnnfast against NumPy, PyTorch and JAX, in the same run.

What ``rnnfast bench`` times, importable for your own runs::

    from rnnfast import benchmark
    results = benchmark.run(benchmark.QUICK_GRID)
    print(benchmark.format_table(results))

Every peer computes the same thing: one layer of the case's cell (:attr:`Case.cell`: a tanh
``"rnn"``, ``"lstm"`` or ``"gru"``) over (T, B, D) inputs, the loss ``sum(h * dh)`` for a fixed
dh, and the gradients of x, h0 (and an LSTM's c0), the weights and the biases. Timings are
medians of repeats, each peer in its own block after a pause (see :func:`run`); compare
ratios, not absolute times.

Peers (those not installed are left out):
  rnnfast    compiled kernels through rnnfast.rnn_forward / rnn_backward
  reference  the same functions on rnnfast's NumPy reference backend (a per-step loop)
  numpy      NumPy with the input projection hoisted out of the time loop (a strong NumPy)
  torch      torch.nn.RNN / LSTM / GRU, autograd backward
  jax        jax.jit(jax.grad(...)) of a lax.scan

(The gated cells have no ``numpy`` peer.) :func:`blas_info` says which BLAS ran.

The grids: :data:`DEFAULT_GRID` (six sizes, from a char-RNN to a 1024-wide layer) and
:data:`QUICK_GRID` (its three small cases). The repository's ``bench/`` builds its tables and
tuning scripts on this module.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnfast import functional
from rnnfast._tables import format_rows
from rnnfast._validation import check_flag, float_dtype

__all__ = [
    "CELLS",
    "DEFAULT_GRID",
    "GATED_GRID",
    "GEMM_REPEATS",
    "MODES",
    "PEERS",
    "QUICK_GRID",
    "ROOF_GEMM_SIZE",
    "Case",
    "available_peers",
    "best_block_medians",
    "blas_info",
    "format_table",
    "gemm_runner",
    "machine",
    "make_problem",
    "make_runner",
    "run",
    "torch_gated",
    "torch_rnn",
]

PEERS = ("rnnfast", "reference", "numpy", "torch", "jax")
"""Every implementation the benchmark knows, in table order."""
CELLS = ("rnn", "lstm", "gru")
"""The cells a :class:`Case` can time: a tanh Elman layer, an LSTM, a GRU."""
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MODES = ("train", "inference", "packed", "proj")
"""What a :class:`Case` can time (:attr:`Case.mode`)."""
# Between peers: OpenMP and BLAS worker threads keep spinning for a while after a parallel
# region (python bench/spinning_pool.py shows how long and what it costs the next caller).
_PAUSE_S = 0.3


@dataclass(frozen=True)
class Case:
    """One benchmark size: T steps, batch B, input size D, hidden size H."""

    T: int
    B: int
    D: int
    H: int
    dtype: str = "float32"
    cell: str = "rnn"
    """``"rnn"`` (tanh), ``"lstm"`` or ``"gru"``."""
    mode: str = "train"
    """What is timed (:data:`MODES`): ``"train"`` forward + backward; ``"inference"`` the
    forward alone, nothing kept (torch under ``no_grad``); ``"packed"`` forward + backward of
    a padded batch with per-sequence ``lengths`` (:attr:`lengths`; torch through
    ``pack_padded_sequence``); ``"proj"`` forward + backward of an LSTM with
    ``proj_size = H // 2`` (:attr:`proj_size`)."""

    def __post_init__(self) -> None:
        # A misspelled dtype is a TypeError here, not a float16 or float64 run timed as asked.
        object.__setattr__(self, "dtype", float_dtype(self.dtype).name)
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "proj" and (self.cell != "lstm" or self.H < 2):
            raise ValueError(f"mode 'proj' needs an LSTM with H >= 2, got {self.cell} H={self.H}")

    @property
    def proj_size(self) -> int:
        """P, an LSTM's projection in mode ``"proj"`` (``H // 2``), else 0."""
        return self.H // 2 if self.mode == "proj" else 0

    @property
    def lengths(self) -> np.ndarray | None:
        """Mode ``"packed"``: the (B,) valid lengths, evenly from T down to about T/2 (longest
        first, as ``pack_padded_sequence`` wants them); None otherwise."""
        if self.mode != "packed":
            return None
        return np.linspace(self.T, (self.T + 1) // 2, self.B).round().astype(np.int64)

    @property
    def gates(self) -> int:
        """G, the gate blocks of the cell: 1, LSTM 4, GRU 3."""
        return _GATES[self.cell]

    @property
    def flops(self) -> int:
        """Floating-point operations of the products: forward + backward
        ``6 * G * T * B * H * (D + H)`` (three passes, G gate blocks); the inference forward
        one pass; packed, the valid steps only (``sum(lengths) * B`` for ``T * B``); with a
        projection P, ``G * H * (D + P) + P * H`` for ``G * H * (D + H)``."""
        passes = 1 if self.mode == "inference" else 3
        rows = self.T * self.B if self.mode != "packed" else int(self.lengths.sum())
        P = self.proj_size
        per_row = self.gates * self.H * (self.D + (P or self.H)) + P * self.H
        return 2 * passes * rows * per_row

    @property
    def label(self) -> str:
        return f"{self.T},{self.B},{self.D},{self.H}"


DEFAULT_GRID = [
    Case(25, 1, 65, 100),  # a classic char-RNN
    Case(100, 1, 32, 64),
    Case(100, 8, 64, 128),
    Case(100, 32, 128, 256),
    Case(50, 64, 512, 512),
    Case(50, 64, 1024, 1024),
]
"""The cases ``rnnfast bench`` times by default: float32 forward + backward from a classic
char-RNN (T=25, B=1) to a 1024-wide layer over a batch of 64."""
QUICK_GRID = [Case(25, 1, 65, 100), Case(100, 8, 64, 128), Case(100, 32, 128, 256)]
GATED_GRID = [
    Case(25, 1, 65, 100),
    Case(100, 8, 64, 128),
    Case(100, 32, 128, 256),
    Case(50, 64, 512, 512),
    Case(50, 64, 1024, 1024),
]
"""The grid ``rnnfast bench --cell lstm|gru`` times by default (the gated cells' targets)."""
"""The three cases of :data:`DEFAULT_GRID` that ``rnnfast bench --quick`` times, each well under
a second (the char-RNN, and batches of 8 and 32)."""


def available_peers(cell: str = "rnn", mode: str = "train") -> list[str]:
    """The peers that can run ``cell`` in ``mode`` here, in PEERS order."""
    have = {"rnnfast": functional.HAVE_COMPILED, "reference": True, "numpy": True}
    have["torch"] = importlib.util.find_spec("torch") is not None
    have["jax"] = importlib.util.find_spec("jax") is not None
    can = _peers_of(Case(1, 1, 1, 2, cell=cell, mode=mode))
    return [p for p in PEERS if have[p] and p in can]


def make_problem(
    case: Case,
    seed: int | np.random.Generator = 0,
    *,
    bias: bool = True,
    h0: bool = True,
) -> dict[str, np.ndarray | None]:
    """The arrays of one random problem of ``case``'s sizes and dtype, by argument name.

    ``x``, ``h0`` and ``dh`` (the upstream gradient of the states) are standard normal, the
    weights ``w_ih``, ``w_hh`` and the summed bias ``b`` ~ U(-1/sqrt(H), 1/sqrt(H)) like
    PyTorch's initialization; drawn in float64, in a fixed order, then cast. ``bias=False`` or
    ``h0=False`` gives None for that array (its values are drawn all the same, so the others
    do not change). The test suite draws its problems here too.
    """
    bias, h0 = check_flag("bias", bias), check_flag("h0", h0)
    rng = np.random.default_rng(seed)
    T, B, D, H = case.T, case.B, case.D, case.H
    if case.cell != "rnn":
        return _gated_problem(case, rng, bias, h0)
    bound = 1.0 / np.sqrt(H) if H > 0 else 1.0
    x = rng.standard_normal((T, B, D))
    w_ih = rng.uniform(-bound, bound, (H, D))
    w_hh = rng.uniform(-bound, bound, (H, H))
    b = rng.uniform(-bound, bound, H)
    h0_arr = rng.standard_normal((B, H))
    dh = rng.standard_normal((T, B, H))
    dt = np.dtype(case.dtype)
    return {
        "x": x.astype(dt),
        "h0": h0_arr.astype(dt) if h0 else None,
        "w_ih": w_ih.astype(dt),
        "w_hh": w_hh.astype(dt),
        "b": b.astype(dt) if bias else None,
        "dh": dh.astype(dt),
    }


def _gated_problem(
    case: Case, rng: np.random.Generator, bias: bool, h0: bool
) -> dict[str, np.ndarray | None]:
    """A gated cell's problem: x, h0, c0 (LSTM), w_ih (G*H, D), w_hh (G*H, S), b_ih, b_hh,
    dh, and with a projection (:attr:`Case.proj_size` P > 0) w_hr (P, H); S = P or H. As
    :func:`make_problem`."""
    T, B, D, H, G = case.T, case.B, case.D, case.H, case.gates * case.H
    S = case.proj_size or H
    bound = 1.0 / np.sqrt(H) if H > 0 else 1.0
    dt = np.dtype(case.dtype)
    arrays = {
        "x": rng.standard_normal((T, B, D)),
        "w_ih": rng.uniform(-bound, bound, (G, D)),
        "w_hh": rng.uniform(-bound, bound, (G, S)),
        "b_ih": rng.uniform(-bound, bound, G),
        "b_hh": rng.uniform(-bound, bound, G),
        "h0": rng.standard_normal((B, S)),
        "c0": rng.standard_normal((B, H)),
        "dh": rng.standard_normal((T, B, S)),
    }
    if case.proj_size:
        arrays["w_hr"] = rng.uniform(-bound, bound, (case.proj_size, H))
    out: dict[str, np.ndarray | None] = {k: v.astype(dt) for k, v in arrays.items()}
    if case.cell != "lstm":
        del out["c0"]
    if not bias:
        out["b_ih"] = out["b_hh"] = None
    if not h0:
        out["h0"] = None
        if "c0" in out:
            out["c0"] = None
    return out


# ---------------------------------------------------------------------------------------------
# One forward + backward per peer. Each factory does its setup once and returns the timed call.


def _rnnfast_backend(backend: str) -> Callable[[dict[str, np.ndarray]], Callable[[], Any]]:
    def factory(p: dict[str, np.ndarray]) -> Callable[[], Any]:
        def run() -> Any:
            h = functional.rnn_forward(
                p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b"], backend=backend
            )
            return functional.rnn_backward(
                p["dh"], p["x"], p["h0"], h, p["w_ih"], p["w_hh"], backend=backend
            )

        return run

    return factory


def _numpy(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    x, h0, w_ih, w_hh, b, g = p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b"], p["dh"]
    T, B, D = x.shape
    H = w_ih.shape[0]

    def run() -> Any:
        h = (x.reshape(T * B, D) @ w_ih.T + b).reshape(T, B, H)  # input GEMM hoisted
        h_prev = h0
        for t in range(T):
            h[t] += h_prev @ w_hh.T
            np.tanh(h[t], out=h[t])
            h_prev = h[t]
        da = np.empty_like(h)
        da_next = None
        for t in reversed(range(T)):
            up = g[t] if da_next is None else g[t] + da_next @ w_hh
            da[t] = up * (1 - h[t] * h[t])
            da_next = da[t]
        da2 = da.reshape(T * B, H)
        h_prev_all = np.concatenate([h0[None], h[:-1]]).reshape(T * B, H)
        return (
            (da2 @ w_ih).reshape(T, B, D),
            da[0] @ w_hh,
            da2.T @ x.reshape(T * B, D),
            da2.T @ h_prev_all,
            da2.sum(0),
        )

    return run


def torch_rnn(p: dict[str, np.ndarray]) -> Any:
    """A one-layer torch.nn.RNN holding the problem ``p``'s weights (bias ``b`` as bias_ih,
    bias_hh zero)."""
    return _torch_layer(p, "rnn")


def _state_dict(p: dict[str, np.ndarray], cell: str) -> dict[str, np.ndarray]:
    """The problem's weights under PyTorch's names (an Elman problem's bias ``b`` as bias_ih,
    bias_hh zero; a projection's ``w_hr`` as weight_hr_l0)."""
    d = {"weight_ih_l0": p["w_ih"], "weight_hh_l0": p["w_hh"]}
    if cell == "rnn":
        d["bias_ih_l0"], d["bias_hh_l0"] = p["b"], np.zeros_like(p["b"])
    else:
        d["bias_ih_l0"], d["bias_hh_l0"] = p["b_ih"], p["b_hh"]
    if p.get("w_hr") is not None:
        d["weight_hr_l0"] = p["w_hr"]
    return d


def _torch_layer(p: dict[str, np.ndarray], cell: str) -> Any:
    import torch

    D, H = p["w_ih"].shape[1], p["w_ih"].shape[0] // _GATES[cell]
    kwargs = {"proj_size": p["w_hr"].shape[0]} if p.get("w_hr") is not None else {}
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    layer = module(D, H, dtype=getattr(torch, p["x"].dtype.name), **kwargs)
    with torch.no_grad():
        for name, value in _state_dict(p, cell).items():
            getattr(layer, name).copy_(torch.from_numpy(value))
    return layer


def _torch_runner(p: dict[str, np.ndarray], case: Case) -> Callable[[], Any]:
    """torch.nn.RNN / LSTM / GRU in ``case.mode``: autograd forward + backward (returns dx),
    packed through ``pack_padded_sequence``, or the forward under ``no_grad``."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    layer = _torch_layer(p, case.cell)
    grad = case.mode != "inference"
    x = torch.from_numpy(p["x"]).requires_grad_(grad)
    keys = ("h0", "c0") if case.cell == "lstm" else ("h0",)
    states = [torch.from_numpy(p[k])[None].clone().requires_grad_(grad) for k in keys]
    state = tuple(states) if case.cell == "lstm" else states[0]
    g = torch.from_numpy(p["dh"])
    lengths = None if case.lengths is None else torch.from_numpy(case.lengths)

    def forward() -> Any:
        if lengths is None:
            return layer(x, state)[0]
        out, _ = layer(pack_padded_sequence(x, lengths), state)
        return pad_packed_sequence(out, total_length=case.T)[0]

    if not grad:

        def infer() -> Any:
            with torch.no_grad():
                return forward()

        return infer

    def release() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        for s in states:
            s.grad = None

    def run() -> Any:
        release()
        (forward() * g).sum().backward()
        return x.grad

    run.release = release  # type: ignore[attr-defined]  # frees the gradients it holds
    return run


def _jax(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import jax

    if p["x"].dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def loss(x, h0, w_ih, w_hh, b, g):
        xw = jnp.einsum("tbd,hd->tbh", x, w_ih) + b

        def step(h, xw_t):
            h = jnp.tanh(xw_t + h @ w_hh.T)
            return h, h

        _, hs = jax.lax.scan(step, h0, xw)
        return jnp.sum(hs * g)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
    args = [jnp.asarray(p[k]) for k in ("x", "h0", "w_ih", "w_hh", "b", "dh")]

    def run() -> Any:
        return jax.block_until_ready(grad(*args))

    return run


_FACTORIES: dict[str, Callable[[dict[str, np.ndarray]], Callable[[], Any]]] = {
    "rnnfast": _rnnfast_backend("cython"),
    "reference": _rnnfast_backend("numpy"),
    "numpy": _numpy,
    "jax": _jax,
}


# The gated cells and the modes: each a factory of (problem, case).


def _rnnfast_runner(backend: str) -> Callable[[dict[str, np.ndarray], Case], Callable[[], Any]]:
    """rnnfast on ``backend`` in ``case.mode``: the functional forward (+ backward), or for
    ``"packed"`` the layer (rnnfast.RNN / LSTM / GRU) with ``lengths=``, its own way there."""

    def factory(p: dict[str, np.ndarray], case: Case) -> Callable[[], Any]:
        cell, mode = case.cell, case.mode
        if mode == "packed":
            return _rnnfast_packed(p, case, backend)
        training = mode != "inference"
        if cell == "rnn":
            args = (p["x"], p["h0"], p["w_ih"], p["w_hh"])
            if not training:
                return lambda: functional.rnn_forward(*args, p["b"], backend=backend)
            return _rnnfast_backend(backend)(p)
        if cell == "lstm":
            b, w_hr = p["b_ih"] + p["b_hh"], p.get("w_hr")
            fwd = (p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], b, w_hr)

            def run() -> Any:
                out = functional.lstm_forward(*fwd, training=training, backend=backend)
                if not training:
                    return out
                return functional.lstm_backward(
                    p["dh"], None, p["x"], p["h0"], p["c0"], *out, p["w_ih"], p["w_hh"], w_hr,
                    backend=backend,
                )  # fmt: skip

            return run
        fwd = (p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])

        def run_gru() -> Any:
            out = functional.gru_forward(*fwd, training=training, backend=backend)
            if not training:
                return out
            return functional.gru_backward(
                p["dh"], p["x"], p["h0"], *out, p["w_ih"], p["w_hh"], p["b_hh"], backend=backend
            )

        return run_gru

    return factory


def _rnnfast_packed(p: dict[str, np.ndarray], case: Case, backend: str) -> Callable[[], Any]:
    from rnnfast import nn

    module = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[case.cell]
    layer = module(case.D, case.H, dtype=case.dtype, seed=0, backend=backend)
    layer.load_state_dict(_state_dict(p, case.cell))
    h0 = p["h0"][None]
    state = (h0, p["c0"][None]) if case.cell == "lstm" else h0
    x, g, lengths = p["x"], p["dh"], case.lengths

    def run() -> Any:
        layer(x, state, lengths)
        return layer.backward(g)

    run.release = layer.zero_grad  # type: ignore[attr-defined]
    return run


def torch_gated(p: dict[str, np.ndarray], cell: str) -> Any:
    """A one-layer torch.nn.LSTM or GRU holding the problem's weights (and an LSTM's
    projection ``w_hr``, if the problem has one, as ``proj_size``)."""
    return _torch_layer(p, cell)


def _jax_cell(cell: str, projected: bool) -> Callable[..., Any]:
    """The cell's step for lax.scan: (carry, x-projection row) -> (carry, h)."""
    import jax
    import jax.numpy as jnp

    def lstm_step(w):
        def step(carry, xw_t):
            h, c = carry
            a = xw_t + h @ w["w_hh"].T + w["b_hh"]
            i, f, g, o = jnp.split(a, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            if projected:
                h = h @ w["w_hr"].T
            return (h, c), h

        return step

    def gru_step(w):
        def step(h, xw_t):
            gh = h @ w["w_hh"].T + w["b_hh"]
            xr, xz, xn = jnp.split(xw_t, 3, axis=-1)
            hr, hz, hn = jnp.split(gh, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            return h, h

        return step

    return lstm_step if cell == "lstm" else gru_step


def _jax_gated(p: dict[str, np.ndarray], case: Case) -> Callable[[], Any]:
    """A jitted lax.scan of the cell: the gradient of every input and weight (modes "train",
    "proj"), or the forward alone ("inference")."""
    import jax

    if p["x"].dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    make_step = _jax_cell(case.cell, p.get("w_hr") is not None)

    def states(x, state, w):
        xw = jnp.einsum("tbd,gd->tbg", x, w["w_ih"]) + w["b_ih"]  # the input projection hoisted
        return jax.lax.scan(make_step(w), state, xw)[1]

    keys = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
    w = {k: jnp.asarray(p[k]) for k in keys if p.get(k) is not None}
    x, g = jnp.asarray(p["x"]), jnp.asarray(p["dh"])
    state = jnp.asarray(p["h0"])
    if case.cell == "lstm":
        state = (state, jnp.asarray(p["c0"]))
    if case.mode == "inference":
        fn = jax.jit(states)
        return lambda: jax.block_until_ready(fn(x, state, w))
    grad = jax.jit(jax.grad(lambda x, s, w, g: jnp.sum(states(x, s, w) * g), argnums=(0, 1, 2)))
    return lambda: jax.block_until_ready(grad(x, state, w, g))


_RUNNERS: dict[str, Callable[[dict[str, np.ndarray], Case], Callable[[], Any]]] = {
    "rnnfast": _rnnfast_runner("cython"),
    "reference": _rnnfast_runner("numpy"),
    "torch": _torch_runner,
    "jax": _jax_gated,
}
# The peers of each mode, in PEERS order (an Elman cell's numpy and jax peers: "train" only).
_MODE_PEERS = {
    "train": ("rnnfast", "reference", "numpy", "torch", "jax"),
    "inference": ("rnnfast", "reference", "torch", "jax"),
    "packed": ("rnnfast", "reference", "torch"),
    "proj": ("rnnfast", "reference", "torch", "jax"),
}


def make_runner(peer: str, case: Case, seed: int = 0) -> Callable[[], Any]:
    """The timed call of ``peer`` for ``case`` (setup done, compiled where the peer compiles)."""
    peers = _peers_of(case)
    if peer not in peers:
        raise ValueError(
            f"peer must be one of {peers} for cell {case.cell!r} in mode {case.mode!r}, "
            f"got {peer!r}"
        )
    p = make_problem(case, seed)
    if case.cell == "rnn" and case.mode == "train" and peer != "torch":
        return _FACTORIES[peer](p)
    return _RUNNERS[peer](p, case)


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_block_medians(
    runners: Mapping[str, Callable[[], Any]],
    repeats: Mapping[str, int],
    rounds: int = 3,
    calls: int = 1,
    setup: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """Each runner's time per call in seconds: the lowest of its blocks' medians.

    The runners take turns, ``rounds`` times: a runner's block is ``setup[name]()`` (if any), a
    pause, then ``repeats[name]`` samples, each the mean of ``calls`` calls. Blocks rather than
    call-by-call interleaving, because runners keep thread pools that spin for a while after
    each call (OpenMP, OpenBLAS), and one timed while the previous one's threads still spin on
    the other core loses; rounds, and the lowest block median, because on a shared machine
    whose load changes over seconds every runner then gets the same chances of a quiet block.
    """
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(max(1, rounds)):
        for name, fn in runners.items():
            if setup is not None and name in setup:
                setup[name]()
            time.sleep(_PAUSE_S)  # let the previous runner's spinning threads go to sleep
            samples = []
            for _ in range(repeats[name]):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples.append((time.perf_counter() - t0) / calls)
            best[name] = min(best[name], statistics.median(samples))
    return best


def run(
    cases: Sequence[Case],
    peers: Sequence[str] | None = None,
    repeats: int | None = None,
    min_time: float = 0.2,
    progress: Callable[[int, int], None] | None = None,
    rounds: int = 3,
    gemm_roof: int | None = None,
) -> list[dict[str, Any]]:
    """Time forward + backward of every case on every peer; one result dict per (case, peer).

    Timed by :func:`best_block_medians`: each peer's repeats in a block, the peers taking turns
    ``rounds`` times, a peer's time the lowest of its blocks' medians. Without ``repeats``, a
    block repeats until it has run for ``min_time / rounds`` seconds (at least 3 and at most
    1000 times), judged from a warm-up call.

    ``gemm_roof=n``: an n x n x n BLAS GEMM (:func:`gemm_runner`) takes its turns in each
    case's rotation too, and every result of the case gets its rate as ``roof_gflops``: a roof
    measured in the same moments as the case, which a roof timed before or after the whole
    table is not, on a machine whose speed changes over minutes.
    """
    rounds = max(1, rounds)
    results = []
    for i, case in enumerate(cases):
        have = available_peers(case.cell, case.mode) if peers is None else peers
        runners = {peer: make_runner(peer, case) for peer in have if peer in _peers_of(case)}
        counts = {}
        for peer, fn in runners.items():
            first = _timed(fn)  # warm-up: caches, JIT compilation, thread pools
            budget = min_time / rounds / max(first, 1e-7)
            counts[peer] = repeats or int(min(1000, max(3, budget)))
        roof = {}
        if gemm_roof:
            gemm, gemm_flops = gemm_runner(case.dtype, gemm_roof)
            gemm()
            runners[_ROOF], counts[_ROOF] = gemm, GEMM_REPEATS
        best = best_block_medians(runners, counts, rounds)
        if gemm_roof:
            roof["roof_gflops"] = gemm_flops / best[_ROOF] / 1e9
        for peer in runners:
            if peer == _ROOF:
                continue
            results.append(
                {
                    **asdict(case),
                    "peer": peer,
                    "median_ms": best[peer] * 1e3,
                    "gflops": case.flops / best[peer] / 1e9,
                    "repeats": counts[peer],
                    "rounds": rounds,
                    **roof,
                }
            )
        del runners
        if progress is not None:
            progress(i + 1, len(cases))
    return results


def _peers_of(case: Case) -> tuple[str, ...]:
    """The peers that can time ``case`` (installed or not)."""
    peers = _MODE_PEERS[case.mode]
    if case.cell == "rnn" and case.mode != "train":
        return tuple(p for p in peers if p != "jax")
    return peers if case.cell == "rnn" else tuple(p for p in peers if p != "numpy")


# The roof's runner in a case's rotation (a name no peer has), its samples per block, and the
# n of the n x n x n GEMM that `rnnfast bench` and bench/make_results.py time.
_ROOF = "(gemm roof)"
GEMM_REPEATS = 5
ROOF_GEMM_SIZE = 2048


def gemm_runner(dtype: str = "float32", n: int = ROOF_GEMM_SIZE) -> tuple[Callable[[], Any], int]:
    """(call, flops): one n x n x n GEMM of NumPy's BLAS into a preallocated output, the roof
    that :func:`run` times beside each case."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    return (lambda: np.matmul(a, b, out=out)), 2 * n**3


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> dict[str, str]:
    """The BLAS libraries loaded (threadpoolctl): ``library``, ``version`` and ``core`` (the
    core type its kernels run for) of SciPy's, which rnnfast's kernels call; ``others`` lists
    the rest (NumPy's, a peer's) with where they come from; ``warning`` when the environment
    forces a core type (OPENBLAS_CORETYPE)."""
    info: dict[str, str] = {"library": "unknown", "version": "?", "core": "?"}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["library"] = "unknown (threadpoolctl is not installed)"
        pools = []
    else:
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    # SciPy's first: the kernels call it (scipy.linalg.cython_blas)
    pools.sort(key=lambda p: "scipy" not in Path(str(p.get("filepath"))).parent.name)
    for i, pool in enumerate(pools):
        line = f"{pool.get('internal_api')} {pool.get('version')}"
        core = str(pool.get("architecture"))
        if i == 0:
            info.update(library=str(pool.get("internal_api")), version=str(pool.get("version")))
            info.update(core=core, prefix=str(pool.get("prefix")))
        else:
            where = Path(str(pool.get("filepath"))).parent.name
            others = info.get("others", "")
            info["others"] = (others + "; " if others else "") + f"{line} ({where}, {core})"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    if forced:
        info["warning"] = (
            f"OPENBLAS_CORETYPE={forced} forces OpenBLAS's kernels for that core; unset it "
            "(env -u OPENBLAS_CORETYPE ...) to time the kernels this CPU would pick"
        )
    return info


def machine() -> str:
    """One line about this machine: processor, cores, Python, NumPy."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, NumPy {np.__version__}"
    )


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A text table: per case, each peer's median ms and GFLOP/s, and rnnfast's speed-up over it.

    Where the results carry a GEMM roof (``roof_gflops``, see :func:`run`), the table gives it
    and rnnfast's GFLOP/s as a share of it.
    """
    by_case: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in results:
        key = (r["T"], r["B"], r["D"], r["H"], r["dtype"], r.get("cell", "rnn"),
               r.get("mode", "train"))  # fmt: skip
        by_case.setdefault(key, {})[r["peer"]] = r
    peers = [p for p in PEERS if any(p in row for row in by_case.values())]
    cells = len({key[5] for key in by_case}) > 1 or any(key[5] != "rnn" for key in by_case)
    modes = any(key[6] != "train" for key in by_case)
    head = ["T,B,D,H", "dtype"] + (["cell"] if cells else []) + (["mode"] if modes else [])
    for p in peers:
        head += [f"{p} ms", f"{p} GF/s"]
    others = [p for p in peers if p != "rnnfast"] if "rnnfast" in peers else []
    head += [f"x vs {p}" for p in others]
    share = "rnnfast" in peers and any("roof_gflops" in r for r in results)
    if share:
        head += ["GEMM GF/s", "% of GEMM"]
    rows = [head]
    for (T, B, D, H, dtype, cell, mode), row in by_case.items():
        line = [f"{T},{B},{D},{H}", dtype] + ([cell] if cells else []) + ([mode] if modes else [])
        for p in peers:
            r = row.get(p)
            line += ["-", "-"] if r is None else [f"{r['median_ms']:.3f}", f"{r['gflops']:.1f}"]
        ours = row.get("rnnfast")
        for p in others:
            other = row.get(p)
            line.append(
                "-"
                if ours is None or other is None
                else f"{other['median_ms'] / ours['median_ms']:.2f}"
            )
        if share:
            roof = None if ours is None else ours.get("roof_gflops")
            line += (
                ["-", "-"]
                if roof is None
                else [f"{roof:.0f}", f"{100 * ours['gflops'] / roof:.0f}%"]
            )
        rows.append(line)
    return format_rows(rows, right=range(len(head)))
