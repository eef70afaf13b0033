"""Recurrent layers: :class:`RNNBase` (the stack of layers and directions, ``lengths=``, the
streaming step, shared by every cell) with :class:`RNN` (the Elman cell), :class:`LSTM` and
:class:`GRU`, and the one-step cells :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`.

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

from rnnfast import _validation, functional
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

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNBase", "RNNCell"]


# --------------------------------------------------------------------------------------------
# The single step: the streaming path (RNNCell, RNN.step)


def _step_params(
    parameters: dict[str, np.ndarray],
    names: list[tuple[str, str, str | None, str | None]],
    hr_names: list[str | None] | None = None,
) -> tuple[tuple[np.ndarray | None, ...], ...]:
    """The live (w_ih, w_hh, b_ih, b_hh) of each layer, in the form functional.rnn_step takes;
    with ``hr_names`` (an LSTM's) also w_hr or None, as functional.lstm_step takes."""
    p = parameters
    layers = [
        (p[w_ih], p[w_hh], None if b_ih is None else p[b_ih], None if b_hh is None else p[b_hh])
        for w_ih, w_hh, b_ih, b_hh in names
    ]
    if hr_names is not None:
        layers = [
            (*ly, None if hr is None else p[hr]) for ly, hr in zip(layers, hr_names, strict=True)
        ]
    return tuple(layers)


def _named_grads(
    names: tuple[str, str, str | None, str | None], dw_ih: Any, dw_hh: Any, db_ih: Any, db_hh: Any
) -> dict[str, np.ndarray]:
    """One layer-direction's gradients by parameter name (no biases: their names are None)."""
    w_ih, w_hh, b_ih, b_hh = names
    grads = {w_ih: dw_ih, w_hh: dw_hh}
    if b_ih is not None:
        grads[b_ih] = db_ih
        grads[b_hh] = db_hh
    return grads


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
    states: list[tuple[np.ndarray, ...]]  # per direction, (T, B, ·) each (h; an LSTM's c too)
    workspaces: list[Any]  # per direction, what the cell's backward needs beyond the states
    dropout_mask: np.ndarray | None  # applied to this layer's output


class _ForwardCache(NamedTuple):
    layers: list[_LayerCache]
    states0: tuple[np.ndarray | None, ...]  # each (L * dirs, B, ·) or None
    T: int  # the input's full length (the kernels ran T_run <= T steps)
    last: np.ndarray  # (B,) each sequence's last valid step
    valid: np.ndarray | None  # (T_run, B) bool, None without lengths
    rev: np.ndarray | None  # (T_run, B) reversal index, None without lengths
    output_shape: tuple[int, ...]
    final_shapes: tuple[tuple[int, ...], ...]  # of h_n (and c_n)
    batched: bool


class RNNBase(Module):
    """The recurrent layers' shared body, as ``torch.nn.RNNBase``: parameters per layer and
    direction, the loop over them, ``lengths=``, dropout between layers, and what the streaming
    step needs (``_step_stack``, the live weights; ``_step_layer``, the input rules).

    A subclass is one cell: ``_GATES`` (rows of the weights per hidden unit), ``_STATES`` (the
    names of its state arrays: ``("h",)``, an LSTM's ``("h", "c")``), and its calls into
    :mod:`rnnfast.functional`: for one layer-direction (``_run_forward``, ``_run_backward``) and
    ``step`` for the whole stack. Arguments as :class:`RNN` (``nonlinearity`` is the Elman
    cell's).
    """

    _GATES: ClassVar[int] = 1
    _STATES: ClassVar[tuple[str, ...]] = ("h",)
    proj_size: int = 0
    """An LSTM's projection size P (``weight_hr_l{k}``, the state h then has P features);
    0 for none, and for every other cell."""

    def _run_forward(
        self, k: int, x: np.ndarray, states0: tuple[np.ndarray | None, ...]
    ) -> tuple[tuple[np.ndarray, ...], Any]:
        """Layer-direction ``k`` over ``x`` (T, B, D) from its initial states (None: zeros):
        every step's states (T, B, ·) each, h first, and the workspace its backward needs."""
        raise NotImplementedError

    def _run_backward(
        self,
        k: int,
        d_states: tuple[np.ndarray | None, ...],
        x: np.ndarray,
        states0: tuple[np.ndarray | None, ...],
        states: tuple[np.ndarray, ...],
        workspace: Any,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        """Layer-direction ``k``'s backward from the gradients reaching its states from
        outside (None: zeros): (dx, the initial states' gradients, the parameters' gradients
        by name)."""
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
                stacklevel=3 if type(self).__init__ is not RNNBase.__init__ else 2,
            )
        self.dropout = float(dropout)
        self._rng = np.random.default_rng(seed)

        dirs = self._num_directions
        H, S, P = self.hidden_size, self._state_size, self.proj_size
        bound = 1.0 / math.sqrt(H)
        # Per (layer, direction) k = layer * dirs + d: the names of w_ih, w_hh, b_ih, b_hh, and
        # of an LSTM's projection w_hr (None without).
        self._names: list[tuple[str, str, str | None, str | None]] = []
        self._hr_names: list[str | None] = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else dirs * S
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                rows = self._GATES * H
                shapes = {f"weight_ih{sfx}": (rows, layer_input), f"weight_hh{sfx}": (rows, S)}
                if self.bias:
                    shapes[f"bias_ih{sfx}"] = (rows,)
                    shapes[f"bias_hh{sfx}"] = (rows,)
                if P:
                    shapes[f"weight_hr{sfx}"] = (P, H)
                for name, shape in shapes.items():
                    self._add_parameter(name, _uniform(self._rng, shape, bound, self.dtype))
                names = [n for n in shapes if not n.startswith("weight_hr")]
                self._names.append(tuple(names + ([] if self.bias else [None, None])))
                self._hr_names.append(f"weight_hr{sfx}" if P else None)
        self._cache: _ForwardCache | None = None
        # step()'s per-layer (w_ih, w_hh, b_ih, b_hh) (an LSTM's also w_hr): the live arrays,
        # as parameters are never replaced after construction (loads and optimizers write
        # into them).
        self._step_layers = _step_params(
            self._parameters, self._names, self._hr_names if self._STATES != ("h",) else None
        )
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
            self._state_features,
        )

    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _state_size(self) -> int:
        """Features of the state h (and of the outputs per direction)."""
        return self.proj_size or self.hidden_size

    @property
    def _state_features(self) -> tuple[int, ...]:
        """Features of each state array, in the order of ``_STATES`` (an LSTM's c has H)."""
        return (self._state_size,) + (self.hidden_size,) * (len(self._STATES) - 1)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {
            "num_layers": 1,
            "nonlinearity": "tanh",
            "bias": True,
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
            "proj_size": 0,
        }
        for key, default in defaults.items():
            if getattr(self, key, default) != default:
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

    def _forward(
        self, x: Any, states0: tuple[Any, ...], lengths: Any
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The stack over x from the initial states (one per ``_STATES``, each None or
        (L * dirs, B, ·)): (output, the final states), remembered for ``_backward``."""
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
        L, dirs, S = self.num_layers, self._num_directions, self._state_size
        final_shapes = tuple(
            (L * dirs, B, n) if batched else (L * dirs, n) for n in self._state_features
        )
        checked = []
        for name, s0, shape in zip(self._STATES, states0, final_shapes, strict=True):
            if s0 is not None:
                s0 = as_float_array(f"{name}0", s0, self.dtype)
                meaning = "(num_layers * num_directions, batch, features)"
                check_shape(f"{name}0", s0, shape, meaning=meaning)
                s0 = np.array(s0 if batched else s0[:, None], dtype=self.dtype, order="C")
            checked.append(s0)
        states0 = tuple(checked)

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
        finals = tuple(np.empty((L * dirs, B, n), dtype=self.dtype) for n in self._state_features)
        layers = []
        for layer in range(L):
            out = np.empty((T_run, B, dirs * S), dtype=self.dtype)
            inputs, states, workspaces = [], [], []
            for d in range(dirs):
                k = layer * dirs + d
                seq = inp if d == 0 else _reverse_time(inp, rev)
                seqs, ws = self._run_forward(
                    k, seq, tuple(None if s0 is None else s0[k] for s0 in states0)
                )
                h = seqs[0]
                if valid is not None:  # both directions' valid steps are t < lengths[b]
                    h[~valid] = 0
                for final, s in zip(finals, seqs, strict=True):
                    final[k] = s[last, batch]
                inputs.append(seq)
                states.append(seqs)
                workspaces.append(ws)
                if d == 0:
                    out[..., :S] = h
                else:
                    _write_reversed(out[..., S:], h, rev)
            mask = None
            if self.training and self.dropout > 0 and layer < L - 1:
                mask = self._dropout_mask(out.shape)
                out *= mask
            layers.append(_LayerCache(inputs, states, workspaces, mask))
            inp = out

        output = inp
        if T_run < T:
            output = np.concatenate([output, np.zeros((T - T_run, B, dirs * S), self.dtype)])
        if not batched:
            output, finals = output[:, 0], tuple(f[:, 0] for f in finals)
        elif self.batch_first:
            output = output.swapaxes(0, 1)
        self._cache = _ForwardCache(
            layers, states0, T, last, valid, rev, output.shape, final_shapes, batched
        )
        return output, finals

    def _backward(
        self, d_output: Any, d_finals: tuple[Any, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Backpropagation through the last ``_forward``: (dx, the initial states' gradients),
        from d_output and the final states' gradients (each None or shaped like it)."""
        c = self._cache
        if c is None:
            raise RuntimeError("backward() needs a forward() first")
        L, dirs, S = self.num_layers, self._num_directions, self._state_size
        d_out = as_float_array("d_output", d_output, self.dtype)
        check_shape("d_output", d_out, c.output_shape, meaning="the forward's output shape")
        if not c.batched:
            d_out = d_out[:, None]
        elif self.batch_first:
            d_out = d_out.swapaxes(0, 1)
        T_run, B = c.layers[0].states[0][0].shape[:2]
        d_out = np.array(d_out[:T_run], dtype=self.dtype, order="C")
        if c.valid is not None:
            d_out[~c.valid] = 0
        checked = []
        for name, d_final, shape in zip(self._STATES, d_finals, c.final_shapes, strict=True):
            if d_final is not None:
                d_final = as_float_array(f"d_{name}_n", d_final, self.dtype)
                check_shape(f"d_{name}_n", d_final, shape, meaning=f"the forward's {name}_n shape")
                d_final = d_final if c.batched else d_final[:, None]
            checked.append(d_final)
        batch = np.arange(B)
        features = self._state_features

        d_states0 = tuple(np.empty((L * dirs, B, n), dtype=self.dtype) for n in features)
        for layer in reversed(range(L)):
            lc = c.layers[layer]
            if lc.dropout_mask is not None:
                d_out *= lc.dropout_mask
            d_in = None
            for d in range(dirs):
                k = layer * dirs + d
                dh = d_out[..., d * S : (d + 1) * S]
                # Contiguous; for one direction d_out itself, which is ours to change.
                dh = np.ascontiguousarray(dh) if d == 0 else _reverse_time(dh, c.rev)
                # An LSTM's c: only its final value has a gradient from outside.
                d_states: list[np.ndarray | None] = [dh] + [None] * (len(features) - 1)
                for i, d_final in enumerate(checked):
                    if d_final is None:
                        continue
                    if d_states[i] is None:
                        d_states[i] = np.zeros((T_run, B, features[i]), dtype=self.dtype)
                    d_states[i][c.last, batch] += d_final[k]
                states0 = tuple(None if s0 is None else s0[k] for s0 in c.states0)
                dx, d0, grads = self._run_backward(
                    k, tuple(d_states), lc.inputs[d], states0, lc.states[d], lc.workspaces[d]
                )
                for name, g in grads.items():
                    self._grads[name] += g
                for out, g in zip(d_states0, d0, strict=True):
                    out[k] = g
                dx = dx if d == 0 else _reverse_time(dx, c.rev)
                d_in = dx if d_in is None else np.add(d_in, dx, out=d_in)
            d_out = d_in

        dx = d_out
        if T_run < c.T:
            dx = np.concatenate([dx, np.zeros((c.T - T_run, *dx.shape[1:]), self.dtype)])
        if not c.batched:
            return dx[:, 0], tuple(g[:, 0] for g in d_states0)
        return (dx.swapaxes(0, 1) if self.batch_first else dx), d_states0


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
        output, (h_n,) = self._forward(x, (_state_argument("h0", h0, hx),), lengths)
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
        dx, (dh0,) = self._backward(d_output, (d_h_n,))
        return dx, dh0

    def _run_forward(
        self, k: int, x: np.ndarray, states0: tuple[np.ndarray | None, ...]
    ) -> tuple[tuple[np.ndarray, ...], Any]:
        w_ih, w_hh, b = self.layer_weights(k)
        h = functional.rnn_forward(
            x, states0[0], w_ih, w_hh, b, nonlinearity=self.nonlinearity, backend=self.backend
        )
        return (h,), None

    def _run_backward(
        self,
        k: int,
        d_states: tuple[np.ndarray | None, ...],
        x: np.ndarray,
        states0: tuple[np.ndarray | None, ...],
        states: tuple[np.ndarray, ...],
        workspace: Any,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        w_ih, w_hh = self._step_layers[k][:2]  # (the biases' sum is not needed)
        g = functional.rnn_backward(
            d_states[0],
            x,
            states0[0],
            states[0],
            w_ih,
            w_hh,
            nonlinearity=self.nonlinearity,
            backend=self.backend,
        )
        return g.dx, (g.dh0,), _named_grads(self._names[k], g.dw_ih, g.dw_hh, g.db, g.db)

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


# --------------------------------------------------------------------------------------------
# The gated cells: LSTM, GRU and their one-step cells


def _lstm_hx(hx: Any) -> tuple[Any, Any]:
    """An LSTM's initial state: None, or PyTorch's tuple (h0, c0) of two arrays."""
    if type(hx) is tuple and len(hx) == 2 and hx[0] is not None and hx[1] is not None:
        return hx  # (the streaming step's case, first: it runs on every call)
    if hx is None:
        return None, None
    if not isinstance(hx, tuple | list):
        raise TypeError(f"hx must be a tuple (h0, c0) or None, got {type(hx).__name__}")
    if len(hx) != 2:
        raise ValueError(f"hx must be a tuple (h0, c0) of 2 arrays, got {len(hx)} items")
    if hx[0] is None or hx[1] is None:
        raise TypeError("hx must be a tuple (h0, c0) of two arrays (or None for zeros), got None")
    return hx[0], hx[1]


class LSTM(RNNBase):
    """A multi-layer LSTM: ``torch.nn.LSTM`` on NumPy arrays, with an explicit backward.

    Per layer and direction, with the gates i, f, g, o (PyTorch's order and layout)::

        i, f, g, o = split(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)          (with proj_size: h_t = W_hr (sigmoid(o) * tanh(c_t)))

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            :class:`RNN` (and ``torch.nn.LSTM``).
        proj_size: P > 0 adds ``weight_hr_l{k}`` (P, H) per layer and direction: h (and the
            outputs) have P features, ``weight_hh_l{k}`` is (4H, P). An int in [0, H).
        dtype, seed, backend: as :class:`RNN` (every parameter U(-1/sqrt(H), 1/sqrt(H))).

    Shapes (``L`` = num_layers, ``dirs`` = 2 if bidirectional else 1, ``S`` = proj_size or H):
        x: (T, B, input_size), (B, T, input_size) with batch_first, or unbatched (T, input_size).
        h0, h_n: (L * dirs, B, S); c0, c_n: (L * dirs, B, H) (unbatched: without B).
        output: (T, B, dirs * S) (batch-first or unbatched like x).

    Examples:
        >>> lstm = LSTM(10, 20, num_layers=2, seed=0)
        >>> x = np.ones((5, 3, 10), dtype=np.float32)
        >>> output, (h_n, c_n) = lstm(x)
        >>> output.shape, h_n.shape, c_n.shape
        ((5, 3, 20), (2, 3, 20), (2, 3, 20))
        >>> dx, (dh0, dc0) = lstm.backward(np.ones_like(output))
        >>> dx.shape, lstm.grads["weight_ih_l0"].shape
        ((5, 3, 10), (80, 10))
    """

    _GATES = 4
    _STATES = ("h", "c")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        dtype: Any = np.float32,
        seed: Seed = None,
        *,
        backend: str = "auto",
    ) -> None:
        hidden = check_int("hidden_size", hidden_size, 1)
        proj = check_int("proj_size", proj_size, 0)
        if proj >= hidden:
            raise ValueError(
                f"proj_size must be in [0, hidden_size) = [0, {hidden}), got {proj_size}"
            )
        self.proj_size = proj
        super().__init__(
            input_size, hidden, num_layers, "tanh", bias, batch_first, dropout, bidirectional,
            dtype, seed, backend=backend,
        )  # fmt: skip
        del self.nonlinearity  # (the Elman cell's option)

    def forward(
        self, x: Any, hx: Any | None = None, lengths: Any | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Run the whole stack over a sequence.

        Args:
            x: input, (T, B, input_size), (B, T, input_size) with batch_first, or (T, input_size).
            hx: (h0, c0): (L * dirs, B, S) and (L * dirs, B, H) (unbatched: without B), or
                None for zeros.
            lengths: as :meth:`RNN.forward` (PyTorch's packed sequences): ``h_n`` and ``c_n``
                hold each sequence's state at its own last step.

        Returns:
            (output, (h_n, c_n)).

        Raises:
            TypeError: an array of the wrong dtype, hx not a tuple of two arrays, float lengths.
            ValueError: a wrong shape or rank, hx of the wrong length, T = 0, lengths out of
                range.
        """
        output, (h_n, c_n) = self._forward(x, _lstm_hx(hx), lengths)
        return output, (h_n, c_n)

    def backward(
        self, d_output: Any, d_h_n: Any | None = None, d_c_n: Any | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Backpropagation through time through the last forward; adds every parameter's
        gradient into ``self.grads``.

        Args:
            d_output: dL/d(output), shaped like ``output`` (padded positions ignored).
            d_h_n, d_c_n: dL/d(h_n) and dL/d(c_n), shaped like them, or None; each enters a
                sequence at its own last valid step.

        Returns:
            (dx, (dh0, dc0)), shaped like x, h_n and c_n.
        """
        dx, (dh0, dc0) = self._backward(d_output, (d_h_n, d_c_n))
        return dx, (dh0, dc0)

    def _run_forward(
        self, k: int, x: np.ndarray, states0: tuple[np.ndarray | None, ...]
    ) -> tuple[tuple[np.ndarray, ...], Any]:
        w_ih, w_hh, b = self.layer_weights(k)
        w_hr = self._step_layers[k][4]
        # In eval mode nothing is kept: a backward then recomputes the workspace.
        h, c, ws = functional.lstm_forward(
            x, *states0, w_ih, w_hh, b, w_hr, training=self.training, backend=self.backend
        )
        return (h, c), ws

    def _run_backward(
        self,
        k: int,
        d_states: tuple[np.ndarray | None, ...],
        x: np.ndarray,
        states0: tuple[np.ndarray | None, ...],
        states: tuple[np.ndarray, ...],
        workspace: Any,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        w_ih, w_hh, _, _, w_hr = self._step_layers[k]
        if workspace is None:  # an eval-mode forward kept none
            b = self.layer_weights(k)[2]
            workspace = functional.lstm_forward(
                x, *states0, w_ih, w_hh, b, w_hr, training=True, backend=self.backend
            ).workspace
        g = functional.lstm_backward(
            *d_states, x, *states0, *states, workspace, w_ih, w_hh, w_hr, backend=self.backend
        )
        grads = _named_grads(self._names[k], g.dw_ih, g.dw_hh, g.db, g.db)
        if w_hr is not None:
            grads[self._hr_names[k]] = g.dw_hr
        return g.dx, (g.dh0, g.dc0), grads

    def step(
        self, x_t: Any, state: tuple[Any, Any] | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """One time step of the whole stack, the state (h, c) carried by the caller.

        ``output, state = lstm.step(x[t], state)`` for t = 0, 1, ... gives ``lstm(x)[0][t]``;
        the final state equals (h_n, c_n). Inference only (no dropout, nothing remembered);
        not for a bidirectional LSTM.

        Args:
            x_t: (B, input_size), or unbatched (input_size,).
            state: (h, c) with h (num_layers, B, S) and c (num_layers, B, H) (unbatched:
                without B), or None for zeros.

        Returns:
            (output_t, (h_new, c_new)): the last layer's new state (B, S) and all new states.

        Examples:
            >>> lstm = LSTM(3, 4, num_layers=2, seed=0)
            >>> x = np.ones((5, 2, 3), dtype=np.float32)
            >>> state = None
            >>> for t in range(5):
            ...     y, state = lstm.step(x[t], state)
            >>> bool(np.allclose(y, lstm(x)[0][-1], atol=1e-6))
            True
        """
        return functional.gated_step(  # (output, (h, c))
            "lstm", x_t, _lstm_hx(state), self._step_stack, self.backend, self._step_layer
        )


class GRU(RNNBase):
    """A multi-layer GRU: ``torch.nn.GRU`` on NumPy arrays, with an explicit backward.

    Per layer and direction, with the gates r, z, n (PyTorch's order, the reset applied after
    the recurrent product, ``b_hn`` inside it)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype,
            seed, backend: as :class:`RNN` (no nonlinearity).

    Shapes: as :class:`RNN`.

    Examples:
        >>> gru = GRU(10, 20, num_layers=2, seed=0)
        >>> x = np.ones((5, 3, 10), dtype=np.float32)
        >>> output, h_n = gru(x)
        >>> output.shape, h_n.shape
        ((5, 3, 20), (2, 3, 20))
        >>> dx, dh0 = gru.backward(np.ones_like(output))
        >>> dx.shape, gru.grads["weight_hh_l1"].shape
        ((5, 3, 10), (60, 20))
    """

    _GATES = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: Seed = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, "tanh", bias, batch_first, dropout,
            bidirectional, dtype, seed, backend=backend,
        )  # fmt: skip
        del self.nonlinearity  # (the Elman cell's option)

    def forward(
        self, x: Any, hx: Any | None = None, lengths: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the whole stack over a sequence: (output, h_n), arguments as :meth:`RNN.forward`
        (``hx`` the initial state h0)."""
        output, (h_n,) = self._forward(x, (hx,), lengths)
        return output, h_n

    def backward(self, d_output: Any, d_h_n: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagation through the last forward: (dx, dh0), as :meth:`RNN.backward`."""
        dx, (dh0,) = self._backward(d_output, (d_h_n,))
        return dx, dh0

    def _run_forward(
        self, k: int, x: np.ndarray, states0: tuple[np.ndarray | None, ...]
    ) -> tuple[tuple[np.ndarray, ...], Any]:
        w_ih, w_hh, b_ih, b_hh = self._step_layers[k]
        # In eval mode nothing is kept: a backward then recomputes the workspace.
        h, ws = functional.gru_forward(
            x, states0[0], w_ih, w_hh, b_ih, b_hh, training=self.training, backend=self.backend
        )
        return (h,), ws

    def _run_backward(
        self,
        k: int,
        d_states: tuple[np.ndarray | None, ...],
        x: np.ndarray,
        states0: tuple[np.ndarray | None, ...],
        states: tuple[np.ndarray, ...],
        workspace: Any,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        w_ih, w_hh, b_ih, b_hh = self._step_layers[k]
        if workspace is None:  # an eval-mode forward kept none
            workspace = functional.gru_forward(
                x, states0[0], w_ih, w_hh, b_ih, b_hh, training=True, backend=self.backend
            ).workspace
        g = functional.gru_backward(
            d_states[0], x, states0[0], states[0], workspace, w_ih, w_hh, b_hh,
            backend=self.backend,
        )  # fmt: skip
        return g.dx, (g.dh0,), _named_grads(self._names[k], g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)

    def step(self, x_t: Any, h: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One time step of the whole stack, the state carried by the caller: (output_t,
        h_new), as :meth:`RNN.step`.

        Examples:
            >>> gru = GRU(3, 4, num_layers=2, seed=0)
            >>> x = np.ones((5, 2, 3), dtype=np.float32)
            >>> h = None
            >>> for t in range(5):
            ...     y, h = gru.step(x[t], h)
            >>> bool(np.allclose(y, gru(x)[0][-1], atol=1e-6))
            True
        """
        output, (h_new,) = functional.gated_step(
            "gru", x_t, (h,), self._step_stack, self.backend, self._step_layer
        )
        return output, h_new


class _GatedCell(Module):
    """One step of a gated cell (LSTMCell, GRUCell): parameters ``weight_ih`` (G*H, D),
    ``weight_hh`` (G*H, H), ``bias_ih``, ``bias_hh``; a forward is a length-1 sequence
    through :mod:`rnnfast.functional`'s training forward, so its backward has what it needs."""

    _GATES: ClassVar[int]
    _CELL: ClassVar[str]
    _STATES: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: Seed = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _set_options(self, input_size, hidden_size, bias, "tanh", dtype, backend)
        del self.nonlinearity
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.hidden_size)
        G, H, D = self._GATES * self.hidden_size, self.hidden_size, self.input_size
        shapes = {"weight_ih": (G, D), "weight_hh": (G, H)}
        if self.bias:
            shapes |= {"bias_ih": (G,), "bias_hh": (G,)}
        for name, shape in shapes.items():
            self._add_parameter(name, _uniform(rng, shape, bound, self.dtype))
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else (None, None))
        self._names = [names]
        self._step_layers = _step_params(
            self._parameters, self._names, [None] if self._CELL == "lstm" else None
        )
        self._step_layer = StepLayer(
            self.input_size, self.hidden_size, self.dtype, (), None, (H,) * len(self._STATES)
        )
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += "" if self.bias else ", bias=False"
        return s + ("" if self.dtype == np.float32 else f", dtype={self.dtype.name}")

    def _cell_forward(self, x: Any, states: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
        x2, s3, _, batched = _validation.gated_step_args(
            x, states, self._step_layers, self._step_layer, self._CELL
        )
        s2 = tuple(None if s is None else s[0] for s in s3)
        w_ih, w_hh, b_ih, b_hh = self._step_layers[0][:4]
        if self._CELL == "lstm":
            b = None if b_ih is None else b_ih + b_hh
            h, c, ws = functional.lstm_forward(
                x2[None], *s2, w_ih, w_hh, b, training=True, backend=self.backend
            )
            out = (h, c)
        else:
            h, ws = functional.gru_forward(
                x2[None], *s2, w_ih, w_hh, b_ih, b_hh, training=True, backend=self.backend
            )
            out = (h,)
        self._cache = (x2, s2, out, ws, batched)
        return tuple(s[0] if batched else s[0, 0] for s in out)

    def _cell_backward(self, d_new: tuple[Any, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first")
        x2, s2, out, ws, batched = self._cache
        shape = out[0].shape[1:] if batched else out[0].shape[2:]
        d3 = []
        for name, d in zip(self._STATES, d_new, strict=True):
            if d is None:
                d3.append(None)
                continue
            d = as_float_array(f"d_{name}1", d, self.dtype)
            check_shape(f"d_{name}1", d, shape, meaning=f"{name}1's shape")
            d3.append(d.reshape(out[0].shape))
        if d3[0] is None:
            d3[0] = np.zeros(out[0].shape, dtype=self.dtype)
        w_ih, w_hh, _, b_hh = self._step_layers[0][:4]
        if self._CELL == "lstm":
            g = functional.lstm_backward(
                *d3, x2[None], *s2, *out, ws, w_ih, w_hh, backend=self.backend
            )
            grads = _named_grads(self._names[0], g.dw_ih, g.dw_hh, g.db, g.db)
            d0 = (g.dh0, g.dc0)
        else:
            g = functional.gru_backward(
                d3[0], x2[None], s2[0], out[0], ws, w_ih, w_hh, b_hh, backend=self.backend
            )
            grads = _named_grads(self._names[0], g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)
            d0 = (g.dh0,)
        for name, grad in grads.items():
            self._grads[name] += grad
        dx = g.dx[0]
        if not batched:
            return dx[0], tuple(d[0] for d in d0)
        return dx, d0


class LSTMCell(_GatedCell):
    """One LSTM step: ``torch.nn.LSTMCell`` on NumPy arrays (its signature, parameter names
    and gate order i, f, g, o).

    Args:
        input_size, hidden_size, bias: as ``torch.nn.LSTMCell``.
        dtype, seed, backend: as :class:`RNN`.

    ``h1, c1 = cell(x, (h, c))`` with x (B, input_size) or unbatched (input_size,), h and c
    (B, H) (or (H,)) or None for zeros; ``dx, (dh, dc) = cell.backward(d_h1, d_c1)``
    backpropagates through the most recent call.

    Examples:
        >>> cell = LSTMCell(3, 4, seed=0)
        >>> h, c = cell(np.ones((2, 3), np.float32))
        >>> h, c = cell(np.ones((2, 3), np.float32), (h, c))
        >>> dx, (dh, dc) = cell.backward(np.ones_like(h), np.zeros_like(c))
        >>> dx.shape, dh.shape, dc.shape
        ((2, 3), (2, 4), (2, 4))
    """

    _GATES = 4
    _CELL = "lstm"
    _STATES = ("h", "c")

    def forward(self, x: Any, hx: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(h1, c1) from x and the state ``hx = (h, c)`` (None: zeros)."""
        h1, c1 = self._cell_forward(x, _lstm_hx(hx))
        return h1, c1

    def backward(
        self, d_h1: Any, d_c1: Any | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """(dx, (dh, dc)) from dL/dh1 and dL/dc1 (None: zeros); adds the parameters'
        gradients into ``self.grads``."""
        dx, (dh, dc) = self._cell_backward((d_h1, d_c1))
        return dx, (dh, dc)


class GRUCell(_GatedCell):
    """One GRU step: ``torch.nn.GRUCell`` on NumPy arrays (its signature, parameter names and
    gate order r, z, n).

    Args:
        input_size, hidden_size, bias: as ``torch.nn.GRUCell``.
        dtype, seed, backend: as :class:`RNN`.

    ``h1 = cell(x, h)`` with h (B, H) (or (H,)) or None; ``dx, dh = cell.backward(d_h1)``.

    Examples:
        >>> cell = GRUCell(3, 4, seed=0)
        >>> h = cell(np.ones((2, 3), np.float32))
        >>> dx, dh = cell.backward(np.ones_like(h))
        >>> dx.shape, dh.shape
        ((2, 3), (2, 4))
    """

    _GATES = 3
    _CELL = "gru"
    _STATES = ("h",)

    def forward(self, x: Any, hx: Any | None = None) -> np.ndarray:
        """h1 from x and the state ``hx`` (None: zeros)."""
        (h1,) = self._cell_forward(x, (hx,))
        return h1

    def backward(self, d_h1: Any) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dh) from dL/dh1; adds the parameters' gradients into ``self.grads``."""
        dx, (dh,) = self._cell_backward((d_h1,))
        return dx, dh
