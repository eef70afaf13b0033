"""Recurrent layers: :class:`RNNBase` (the stack of layers and directions, ``lengths=``, the
streaming step, shared by every cell) with :class:`RNN` (the Elman cell), and
:class:`RNNCell` (one step).

A cell plugs in as a subclass of RNNBase: it gives its number of gate rows (the weights are
``(gates * hidden_size, ·)``, PyTorch's layout: 1 for the Elman RNN, 4 for an LSTM, 3 for a
GRU), its functional calls for one layer-direction (``_run_forward``, ``_run_backward``) and
its ``step`` (one call of its door in :mod:`rnnfast.functional`, with ``_step_stack`` and
``_step_layer``); the layer, direction, padding and dropout bookkeeping is shared.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, NamedTuple

import numpy as np

from rnnfast import functional
from rnnfast._backend import BACKENDS
from rnnfast._validation import (
    NONLINEARITIES,
    Seed,
    StepLayer,
    as_float_array,
    as_lengths,
    check_choice,
    check_flag,
    check_int,
    check_shape,
    float_dtype,
    to_numpy,
)
from rnnfast.nn.module import Module, _uniform

__all__ = ["RNN", "RNNBase", "RNNCell"]


# --------------------------------------------------------------------------------------------
# The single step: the streaming path (RNNCell, RNN.step)


def _step_params(
    parameters: dict[str, np.ndarray], names: list[tuple[str, str, str | None, str | None]]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], ...]:
    """The live (w_ih, w_hh, b_ih, b_hh) of each layer, in the form functional.rnn_step takes."""
    p = parameters
    return tuple(
        [
            (p[w_ih], p[w_hh], None if b_ih is None else p[b_ih], None if b_hh is None else p[b_hh])
            for w_ih, w_hh, b_ih, b_hh in names
        ]
    )


def _accumulate_grads(
    g: dict[str, np.ndarray], names: tuple[str, str, str | None, str | None], grads: Any
) -> None:
    """Add one layer's RNNGrads into its parameters' gradients: PyTorch's two biases both
    receive db (they enter the recurrence as their sum)."""
    w_ih, w_hh, b_ih, b_hh = names
    g[w_ih] += grads.dw_ih
    g[w_hh] += grads.dw_hh
    if b_ih is not None:
        g[b_ih] += grads.db
        g[b_hh] += grads.db


# --------------------------------------------------------------------------------------------
# RNN


def _set_options(
    layer: Module,
    input_size: Any,
    hidden_size: Any,
    bias: Any,
    nonlinearity: Any,
    dtype: Any,
    backend: Any,
) -> None:
    """Check and set the options every recurrent layer has (RNN's and RNNCell's)."""
    layer.input_size = check_int("input_size", input_size, 1)
    # hidden_size 0: torch.nn.RNN refuses it, torch.nn.RNNCell returns (B, 0); rnnfast refuses
    # both (docs/guide: differences from PyTorch).
    layer.hidden_size = check_int("hidden_size", hidden_size, 1)
    layer.bias = check_flag("bias", bias)
    layer.nonlinearity = check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    layer.dtype = float_dtype(dtype)
    layer.backend = check_choice("backend", backend, BACKENDS)


def _state_argument(name: str, value: Any, hx: Any) -> Any:
    """The initial state given as ``name`` (positionally or by the old keyword) or as
    PyTorch's ``hx=``, not both."""
    if hx is None:
        return value
    if value is not None:
        raise TypeError(f"pass the initial state once: {name}= or hx=, not both")
    return hx


def _reverse_index(lengths: np.ndarray, T: int) -> np.ndarray:
    """(T, B) time index that reverses each sequence within its own length and keeps the padding
    in place: ``idx[t, b] = lengths[b] - 1 - t`` for ``t < lengths[b]``, else ``t``. Its own
    inverse."""
    t = np.arange(T)[:, None]
    return np.where(t < lengths, lengths - 1 - t, t)


def _reverse_time(a: np.ndarray, rev: np.ndarray | None) -> np.ndarray:
    """``a`` (T, B, ...) reversed in time (within each sequence's length when ``rev`` is the
    index from _reverse_index), as a new C-contiguous array."""
    if rev is None:
        return np.ascontiguousarray(a[::-1])
    return np.take_along_axis(a, rev[:, :, None], axis=0)


def _write_reversed(out: np.ndarray, a: np.ndarray, rev: np.ndarray | None) -> None:
    """``out[...] = _reverse_time(a, rev)`` without the intermediate copy (``rev`` is its own
    inverse, so scattering ``a`` through it reverses too)."""
    if rev is None:
        out[::-1] = a
    else:
        np.put_along_axis(out, rev[:, :, None], a, axis=0)


class _LayerCache(NamedTuple):
    inputs: list[np.ndarray]  # per direction, (T, B, D_l), in that direction's time order
    states: list[np.ndarray]  # per direction, (T, B, H), zero beyond each sequence's end
    dropout_mask: np.ndarray | None  # applied to this layer's output


class _ForwardCache(NamedTuple):
    layers: list[_LayerCache]
    h0: np.ndarray | None  # (L * dirs, B, H)
    T: int  # the input's full length (the kernels ran T_run <= T steps)
    last: np.ndarray  # (B,) each sequence's last valid step
    valid: np.ndarray | None  # (T_run, B) bool, None without lengths
    rev: np.ndarray | None  # (T_run, B) reversal index, None without lengths
    output_shape: tuple[int, ...]
    h_n_shape: tuple[int, ...]
    batched: bool


class RNNBase(Module):
    """The recurrent layers' shared body, as ``torch.nn.RNNBase``: parameters per layer and
    direction, the loop over them, ``lengths=``, dropout between layers, and what the streaming
    step needs (``_step_stack``, the live weights; ``_step_layer``, the input rules).

    A subclass is one cell: ``_GATES`` (rows of the weights per hidden unit), and its calls
    into :mod:`rnnfast.functional`: for one layer-direction (``_run_forward``,
    ``_run_backward``) and ``step`` for the whole stack. Arguments as
    :class:`RNN` (``nonlinearity`` is the Elman cell's).
    """

    _GATES: ClassVar[int] = 1

    def _run_forward(self, k: int, x: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
        """All states (T, B, H) of layer-direction ``k`` over ``x`` (T, B, D)."""
        raise NotImplementedError

    def _run_backward(
        self, k: int, dh: np.ndarray, x: np.ndarray, h0: np.ndarray | None, h: np.ndarray
    ) -> functional.RNNGrads:
        """The gradients of layer-direction ``k`` (:class:`rnnfast.functional.RNNGrads`)."""
        raise NotImplementedError

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: Seed = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _set_options(self, input_size, hidden_size, bias, nonlinearity, dtype, backend)
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.batch_first = check_flag("batch_first", batch_first)
        self.bidirectional = check_flag("bidirectional", bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float | np.floating):
            raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout applies between layers, so it does nothing with num_layers=1 "
                f"(dropout={dropout})",
                UserWarning,
                stacklevel=2,
            )
        self.dropout = float(dropout)
        self._rng = np.random.default_rng(seed)

        dirs = self._num_directions
        bound = 1.0 / math.sqrt(self.hidden_size)
        # Per (layer, direction) k = layer * dirs + d: the names of w_ih, w_hh, b_ih, b_hh.
        self._names: list[tuple[str, str, str | None, str | None]] = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else dirs * self.hidden_size
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                rows = self._GATES * self.hidden_size
                shapes = {
                    f"weight_ih{sfx}": (rows, layer_input),
                    f"weight_hh{sfx}": (rows, self.hidden_size),
                }
                if self.bias:
                    shapes[f"bias_ih{sfx}"] = (rows,)
                    shapes[f"bias_hh{sfx}"] = (rows,)
                for name, shape in shapes.items():
                    self._add_parameter(name, _uniform(self._rng, shape, bound, self.dtype))
                names = list(shapes) + ([] if self.bias else [None, None])
                self._names.append(tuple(names))
        self._cache: _ForwardCache | None = None
        # step()'s per-layer (w_ih, w_hh, b_ih, b_hh): the live arrays, as parameters are never
        # replaced after construction (loads and optimizers write into them).
        self._step_layers = _step_params(self._parameters, self._names)
        # A bidirectional RNN's reverse direction needs the whole sequence: its step gets no
        # layers, which the kernel declines, and the validation refuses with this message.
        self._step_stack = () if self.bidirectional else self._step_layers
        self._step_layer = StepLayer(
            self.input_size,
            self.hidden_size,
            self.dtype,
            (self.num_layers,),
            "step() runs forward in time, but a bidirectional RNN's reverse direction needs the "
            "whole sequence: call rnn(x) instead"
            if self.bidirectional
            else None,
        )

    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {
            "num_layers": 1,
            "nonlinearity": "tanh",
            "bias": True,
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
        }
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s + ("" if self.dtype == np.float32 else f", dtype={self.dtype.name}")

    def layer_weights(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(w_ih, w_hh, b_ih + b_hh or None) of layer-direction ``k = layer * dirs + d``: the
        arguments of :func:`rnnfast.rnn_forward` for it (the weights live, the bias a sum)."""
        p = self._parameters
        w_ih, w_hh, b_ih, b_hh = self._names[k]
        return p[w_ih], p[w_hh], None if b_ih is None else p[b_ih] + p[b_hh]

    def _dropout_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        keep = 1.0 - self.dropout
        mask = self._rng.random(shape) < keep
        return mask.astype(self.dtype) * self.dtype.type(1.0 / keep if keep > 0 else 0.0)

    def forward(
        self, x: Any, h0: Any | None = None, lengths: Any | None = None, *, hx: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the whole stack over a sequence.

        Args:
            x: input, (T, B, input_size), (B, T, input_size) with batch_first, or (T, input_size).
            h0: initial states (num_layers * dirs, B, H), or (num_layers * dirs, H) for an
                unbatched x; None for zeros. Also by PyTorch's name, ``hx=``.
            lengths: (B,) integers in [1, T], the valid length of each sequence of a padded
                batch, or None (all T). As PyTorch with a PackedSequence: outputs beyond a
                sequence's end are zero, ``h_n`` holds each sequence's state at its own last
                step, the reverse direction starts there, and the padding's values never
                matter.

        Returns:
            (output, h_n): output (T, B, dirs * H) (batch-first or unbatched like x): the last
            layer's states, forward and reverse concatenated; h_n (num_layers * dirs, B, H):
            every layer's and direction's final state.

        Raises:
            TypeError: an array of the wrong dtype, or float lengths.
            ValueError: a wrong shape or rank, T = 0, or lengths out of range.
        """
        h0 = _state_argument("h0", h0, hx)
        x = as_float_array("x", x, self.dtype)
        layout = "(batch, seq, input_size)" if self.batch_first else "(seq, batch, input_size)"
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"x must have shape {layout} or unbatched (seq, input_size) with "
                f"input_size={self.input_size}, got {x.shape}"
            )
        batched = x.ndim == 3
        x_tm = (x.swapaxes(0, 1) if self.batch_first else x) if batched else x[:, None]
        T, B = x_tm.shape[:2]
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        L, dirs, H = self.num_layers, self._num_directions, self.hidden_size
        h_n_shape = (L * dirs, B, H) if batched else (L * dirs, H)
        if h0 is not None:
            h0 = as_float_array("h0", h0, self.dtype)
            check_shape("h0", h0, h_n_shape, meaning="(num_layers * num_directions, batch, hidden)")
            h0 = np.array(h0 if batched else h0[:, None], dtype=self.dtype, order="C")

        if lengths is None:
            T_run, last, valid, rev = T, np.full(B, T - 1), None, None
        else:
            lens = as_lengths(lengths, B, T)
            T_run = int(lens.max(initial=1))
            last = lens - 1
            valid = np.arange(T_run)[:, None] < lens
            rev = _reverse_index(lens, T_run)
        batch = np.arange(B)

        # A private copy (x may be changed by the caller before backward), padding zeroed.
        inp = np.array(x_tm[:T_run], dtype=self.dtype, order="C")
        if valid is not None:
            inp[~valid] = 0
        h_n = np.empty((L * dirs, B, H), dtype=self.dtype)
        layers = []
        for layer in range(L):
            out = np.empty((T_run, B, dirs * H), dtype=self.dtype)
            inputs, states = [], []
            for d in range(dirs):
                k = layer * dirs + d
                seq = inp if d == 0 else _reverse_time(inp, rev)
                h = self._run_forward(k, seq, None if h0 is None else h0[k])
                if valid is not None:  # both directions' valid steps are t < lengths[b]
                    h[~valid] = 0
                h_n[k] = h[last, batch]
                inputs.append(seq)
                states.append(h)
                if d == 0:
                    out[..., :H] = h
                else:
                    _write_reversed(out[..., H:], h, rev)
            mask = None
            if self.training and self.dropout > 0 and layer < L - 1:
                mask = self._dropout_mask(out.shape)
                out *= mask
            layers.append(_LayerCache(inputs, states, mask))
            inp = out

        output = inp
        if T_run < T:
            output = np.concatenate([output, np.zeros((T - T_run, B, dirs * H), self.dtype)])
        if not batched:
            output, h_n = output[:, 0], h_n[:, 0]
        elif self.batch_first:
            output = output.swapaxes(0, 1)
        self._cache = _ForwardCache(
            layers, h0, T, last, valid, rev, output.shape, h_n.shape, batched
        )
        return output, h_n

    def backward(self, d_output: Any, d_h_n: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagation through time through every layer and direction of the last forward.

        Adds every parameter's gradient into ``self.grads``.

        Args:
            d_output: dL/d(output), shaped like the forward's ``output``. Values at padded
                positions (beyond ``lengths``) are ignored: those outputs are constant zeros.
            d_h_n: dL/d(h_n) shaped like ``h_n``, or None. Enters each sequence at its own last
                valid step.

        Returns:
            (dx, dh0): dL/dx shaped like x (zero at padded positions) and dL/dh0 shaped like
            ``h_n`` (returned also when h0 was None).
        """
        c = self._cache
        if c is None:
            raise RuntimeError("backward() needs a forward() first")
        L, dirs, H = self.num_layers, self._num_directions, self.hidden_size
        d_out = as_float_array("d_output", d_output, self.dtype)
        check_shape("d_output", d_out, c.output_shape, meaning="the forward's output shape")
        if not c.batched:
            d_out = d_out[:, None]
        elif self.batch_first:
            d_out = d_out.swapaxes(0, 1)
        T_run, B = c.layers[0].states[0].shape[:2]
        d_out = np.array(d_out[:T_run], dtype=self.dtype, order="C")
        if c.valid is not None:
            d_out[~c.valid] = 0
        if d_h_n is not None:
            d_h_n = as_float_array("d_h_n", d_h_n, self.dtype)
            check_shape("d_h_n", d_h_n, c.h_n_shape, meaning="the forward's h_n shape")
            d_h_n = d_h_n if c.batched else d_h_n[:, None]
        batch = np.arange(B)

        dh0 = np.empty((L * dirs, B, H), dtype=self.dtype)
        for layer in reversed(range(L)):
            lc = c.layers[layer]
            if lc.dropout_mask is not None:
                d_out *= lc.dropout_mask
            d_in = None
            for d in range(dirs):
                k = layer * dirs + d
                dh = d_out[..., d * H : (d + 1) * H]
                # Contiguous; for one direction d_out itself, which is ours to change.
                dh = np.ascontiguousarray(dh) if d == 0 else _reverse_time(dh, c.rev)
                if d_h_n is not None:
                    dh[c.last, batch] += d_h_n[k]
                h0_k = None if c.h0 is None else c.h0[k]
                g = self._run_backward(k, dh, lc.inputs[d], h0_k, lc.states[d])
                _accumulate_grads(self._grads, self._names[k], g)
                dh0[k] = g.dh0
                dx = g.dx if d == 0 else _reverse_time(g.dx, c.rev)
                d_in = dx if d_in is None else np.add(d_in, dx, out=d_in)
            d_out = d_in

        dx = d_out
        if T_run < c.T:
            dx = np.concatenate([dx, np.zeros((c.T - T_run, *dx.shape[1:]), self.dtype)])
        if not c.batched:
            return dx[:, 0], dh0[:, 0]
        return (dx.swapaxes(0, 1) if self.batch_first else dx), dh0


class RNN(RNNBase):
    """A multi-layer Elman RNN: ``torch.nn.RNN`` on NumPy arrays, with an explicit backward.

    ``h_t = act(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)`` per layer and direction, with
    ``act`` tanh or relu; layer k > 0 reads the (dropped-out, in training) outputs of layer k-1.

    Args:
        input_size: features D of the input.
        hidden_size: features H of the state.
        num_layers: stacked layers.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: whether there are the biases ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·); ``h0`` and ``h_n``
            are (num_layers * num_directions, B, H) either way, as in PyTorch.
        dropout: probability of zeroing each output of every layer but the last, in training
            mode only; the survivors are scaled by 1 / (1 - dropout).
        bidirectional: add a reverse-direction RNN per layer (``*_reverse`` parameters); the
            output concatenates the forward and reverse states.
        dtype: np.float32 (default) or np.float64, of parameters and of all arrays.
        seed: an int, a ``np.random.Generator`` or None (fresh entropy): draws the initial
            parameters, U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, then the dropout masks.
        backend: the backend of :func:`rnnfast.rnn_forward` (``"auto"``, ``"cython"``,
            ``"numpy"``).

    Shapes (``L`` = num_layers, ``dirs`` = 2 if bidirectional else 1):
        x: (T, B, input_size), (B, T, input_size) with batch_first, or unbatched (T, input_size).
        h0, h_n: (L * dirs, B, H), or unbatched (L * dirs, H).
        output: (T, B, dirs * H), (B, T, dirs * H) with batch_first, or unbatched (T, dirs * H).

    Examples:
        >>> rnn = RNN(10, 20, num_layers=2, seed=0)
        >>> x = np.ones((5, 3, 10), dtype=np.float32)
        >>> output, h_n = rnn(x)
        >>> output.shape, h_n.shape
        ((5, 3, 20), (2, 3, 20))
        >>> dx, dh0 = rnn.backward(np.ones_like(output))
        >>> dx.shape
        (5, 3, 10)
        >>> output2, _ = rnn(x, hx=h_n)  # PyTorch's name for the initial state
    """

    _GATES = 1

    def _run_forward(self, k: int, x: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
        w_ih, w_hh, b = self.layer_weights(k)
        return functional.rnn_forward(
            x, h0, w_ih, w_hh, b, nonlinearity=self.nonlinearity, backend=self.backend
        )

    def _run_backward(
        self, k: int, dh: np.ndarray, x: np.ndarray, h0: np.ndarray | None, h: np.ndarray
    ) -> functional.RNNGrads:
        w_ih, w_hh = self._step_layers[k][:2]  # (the biases' sum is not needed)
        return functional.rnn_backward(
            dh, x, h0, h, w_ih, w_hh, nonlinearity=self.nonlinearity, backend=self.backend
        )

    def step(self, x_t: Any, h: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One time step of the whole stack, the state carried by the caller (streaming).

        ``output, h = rnn.step(x[t], h)`` for t = 0, 1, ... gives the same ``output`` as
        ``rnn(x, h0)[0][t]``, and the final ``h`` equals its ``h_n``. Inference only: nothing is
        remembered for backward, and dropout is not applied (as in ``eval()``). Not available
        for a bidirectional RNN, whose reverse direction needs the whole sequence.

        Args:
            x_t: (B, input_size), or unbatched (input_size,).
            h: (num_layers, B, H) (unbatched: (num_layers, H)), or None for zeros.

        Returns:
            (output_t, h_new): the last layer's new state (B, H) and all new states
            (num_layers, B, H) (unbatched: without the B axis).

        Examples:
            >>> rnn = RNN(3, 4, num_layers=2, seed=0)
            >>> x = np.ones((5, 2, 3), dtype=np.float32)
            >>> h = None
            >>> for t in range(5):
            ...     y, h = rnn.step(x[t], h)
            >>> bool(np.allclose(y, rnn(x)[0][-1], atol=1e-6))
            True
        """
        return functional.step(
            x_t, h, self._step_stack, self.nonlinearity, self.backend, self._step_layer
        )


# --------------------------------------------------------------------------------------------
# RNNCell


class RNNCell(Module):
    """One Elman step ``h' = act(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)``:
    ``torch.nn.RNNCell`` on NumPy arrays (its signature and parameter names).

    Args:
        input_size, hidden_size, bias, nonlinearity: as ``torch.nn.RNNCell``.
        dtype, seed, backend: as :class:`RNN`.

    ``cell(x, h)`` with x (B, input_size) or unbatched (input_size,) and h (B, H), (H,) or None
    (zeros) returns h'. ``cell.backward(d_h_new)`` backpropagates through the most recent call.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        dtype: Any = np.float32,
        seed: Seed = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _set_options(self, input_size, hidden_size, bias, nonlinearity, dtype, backend)
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.hidden_size)
        H, D = self.hidden_size, self.input_size
        shapes = {"weight_ih": (H, D), "weight_hh": (H, H)}
        if self.bias:
            shapes |= {"bias_ih": (H,), "bias_hh": (H,)}
        for name, shape in shapes.items():
            self._add_parameter(name, _uniform(rng, shape, bound, self.dtype))
        self._cache: tuple[np.ndarray, np.ndarray | None, np.ndarray, bool] | None = None
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else (None, None))
        self._names = [names]
        self._step_layers = _step_params(self._parameters, self._names)  # live, as RNN's
        self._step_layer = StepLayer(self.input_size, self.hidden_size, self.dtype, ())

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += "" if self.bias else ", bias=False"
        return s + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")

    def forward(self, x: Any, h: Any | None = None, *, hx: Any | None = None) -> np.ndarray:
        """h' (B, H), or (H,) for an unbatched x; the state ``h`` also by PyTorch's ``hx=``.

        Examples:
            >>> cell = RNNCell(3, 4, seed=0)
            >>> h = cell(np.ones((2, 3), np.float32))
            >>> h = cell(np.ones((2, 3), np.float32), hx=h)
            >>> h.shape
            (2, 4)
            >>> dx, dh = cell.backward(np.ones_like(h))
            >>> dx.shape, dh.shape
            ((2, 3), (2, 4))
        """
        if hx is not None:
            h = _state_argument("h", h, hx)
        output, h_stack = functional.step(
            x, h, self._step_layers, self.nonlinearity, self.backend, self._step_layer
        )
        batched = output.ndim == 2
        # Copies for backward, safe from changes the caller makes to its arrays; h_stack is one
        # already (the same values as the output, which the caller gets). The door has
        # validated x and h: a plain array of the cell's dtype (the common case) is copied as
        # it is, anything else converted.
        dtype = self.dtype
        if (
            batched
            and type(x) is np.ndarray
            and x.dtype is dtype
            and (h is None or (type(h) is np.ndarray and h.dtype is dtype))
        ):
            x_copy, h_copy = x.copy(), None if h is None else h.copy()
        else:
            x_copy = np.array(to_numpy(x), dtype=dtype, ndmin=2)
            h_copy = None if h is None else np.array(to_numpy(h), dtype=dtype, ndmin=2)
        self._cache = (x_copy, h_copy, h_stack[0] if batched else h_stack, batched)
        return output

    def backward(self, d_h_new: Any) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagate dL/dh' through the most recent call: returns (dx, dh), shaped like
        that call's x and h' (dh also when h was None), and adds the parameters' gradients
        into ``self.grads``."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first")
        x2, h2, h_new, batched = self._cache
        d = as_float_array("d_h_new", d_h_new, self.dtype)
        check_shape("d_h_new", d, h_new.shape if batched else h_new.shape[1:], meaning="h' shape")
        w_ih, w_hh = self._step_layers[0][:2]
        grads = functional.rnn_backward(
            d.reshape(1, *h_new.shape),
            x2[None],
            h2,
            h_new[None],
            w_ih,
            w_hh,
            nonlinearity=self.nonlinearity,
            backend=self.backend,
        )
        _accumulate_grads(self._grads, self._names[0], grads)
        dx, dh = grads.dx[0], grads.dh0
        return (dx, dh) if batched else (dx[0], dh[0])
