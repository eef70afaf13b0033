"""Layers on NumPy arrays with PyTorch's names, shapes and initialization.

``RNN`` (a drop-in for ``torch.nn.RNN``), ``RNNCell``, ``Linear``, ``Embedding`` and
``one_hot``. The recurrences run through :mod:`rnnfast.functional`, one call per layer and
direction, so a layer is as fast as the kernels.

There is no autograd: every layer has an explicit backward, and follows one protocol.

- ``layer(...)`` (``forward``) computes the outputs and remembers what its backward needs; only
  the most recent call is remembered.
- ``layer.backward(d_output, ...)`` returns the gradients of the inputs of that call and *adds*
  the gradients of the parameters into ``layer.grads``, which accumulate until ``zero_grad()``
  (as ``.grad`` does in PyTorch). Parameters must not be changed between the two.
- ``parameters()`` and ``grads`` are dicts of the live arrays, keyed like ``state_dict()``;
  optimizers (:mod:`rnnfast.optim`) update the parameters in place. ``state_dict()`` returns
  copies; ``load_state_dict()`` copies into the existing arrays, so both dicts stay valid.

Arrays must have the layer's dtype (float32 by default, or float64): a float array of the other
dtype is a ``TypeError`` rather than a silent copy. Python lists are converted, and torch
tensors are accepted wherever an array is (converted with ``.detach().cpu().numpy()``).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rnnfast import functional
from rnnfast.functional import _check_choice

__all__ = ["RNN", "Embedding", "IncompatibleKeys", "Linear", "Module", "RNNCell", "one_hot"]

Seed = int | np.random.Generator | None
_M = TypeVar("_M", bound="Module")


# --------------------------------------------------------------------------------------------
# Argument checking shared by the layers (and the losses)


def _to_numpy(value: Any) -> Any:
    """A torch tensor (anything with ``.detach()``) as a NumPy array; anything else unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def _float_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as np.float32 or np.float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in functional.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _asarray(name: str, value: Any, dtype: Any = None) -> np.ndarray:
    """``np.asarray`` (torch tensors through ``.detach().cpu().numpy()``); any failure to
    convert, whatever the object raised, is a TypeError naming the argument."""
    try:
        return np.asarray(_to_numpy(value), dtype=dtype)
    except MemoryError:
        raise
    except Exception as exc:
        raise TypeError(
            f"{name} must be an array of numbers, got {type(value).__name__} that NumPy cannot "
            f"convert ({type(exc).__name__}: {exc})"
        ) from exc


def _as_float_array(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of ``dtype``: lists are converted, arrays must already have it."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") or hasattr(value, "detach"):
        arr = _asarray(name, value)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
        if arr.dtype.newbyteorder("=") != dtype:
            raise TypeError(
                f"{name} has dtype {arr.dtype} but the layer has dtype {dtype}; convert it with "
                f"{name}.astype(np.{dtype.name}) or build the layer with dtype=np.{arr.dtype.name}"
            )
        return arr
    return _asarray(name, value, dtype)


def _as_int_array(name: str, value: Any) -> np.ndarray:
    """``value`` as an int64 array; floats and booleans are a TypeError."""
    if value is None:
        raise TypeError(f"{name} must be an array of integers, got None")
    arr = _asarray(name, value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _as_ids(name: str, value: Any, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Token ids or class labels: integers in [0, num_classes), or ``ignore_index``."""
    ids = _as_int_array(name, value)
    bad = (ids < 0) | (ids >= num_classes)
    if ignore_index is not None:
        bad &= ids != ignore_index
    if bad.any():
        first = ids[bad].flat[0]
        raise ValueError(
            f"{name} must be in [0, {num_classes})"
            + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
            + f", got {first} at index {tuple(int(i) for i in np.argwhere(bad)[0])}"
        )
    return ids


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= minimum; booleans and floats are a TypeError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_finite_nonnegative(name: str, value: Any) -> float:
    """``value`` as a float, finite and >= 0; booleans and non-numbers are a TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _check_shape(name: str, arr: np.ndarray, expected: tuple[int, ...], meaning: str) -> None:
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape {meaning} = {expected}, got {arr.shape}")


# Parameters start on a cache line: the streaming step's vector loads of a weight row then
# never straddle two lines. NumPy's own allocations are only 16-byte aligned; the step
# realigns the loads of rows of two or more whole lines itself but not the rest
# (bench/experiments/step_dot.c, D=32 H=128, six alternating runs: 0.70-0.82 us a step
# aligned, 0.82-0.92 us at 16 bytes past a line, one run 1.26).
PARAMETER_ALIGNMENT = 64


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts at a PARAMETER_ALIGNMENT boundary."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(nbytes + PARAMETER_ALIGNMENT, dtype=np.uint8)
    start = -buffer.ctypes.data % PARAMETER_ALIGNMENT
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: np.dtype):
    """U(-bound, bound) drawn in float64 and cast, so both dtypes start from the same numbers."""
    return rng.uniform(-bound, bound, shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# Module: parameters, gradients, state dicts, train/eval


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` did not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base of the layers: named parameters with gradients, sub-modules, train/eval mode.

    Parameter names are PyTorch's, and those of sub-modules are prefixed with the sub-module's
    name and a dot (``"rnn.weight_ih_l0"``), so a state dict of a composite model is flat.
    """

    def __init__(self) -> None:
        self.training = True
        self._parameters: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._modules: dict[str, Module] = {}

    def _add_parameter(self, name: str, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        param = _aligned_empty(value.shape, value.dtype)
        param[...] = value
        grad = _aligned_empty(value.shape, value.dtype)
        grad.fill(0)
        self._parameters[name] = param
        self._grads[name] = grad
        return param

    def _add_module(self, name: str, module: _M) -> _M:
        self._modules[name] = module
        return module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _named(self, which: str, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        yield from ((prefix + k, v) for k, v in getattr(self, which).items())
        for name, module in self._modules.items():
            yield from module._named(which, f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) of every parameter, sub-modules' included; the arrays are live."""
        return self._named("_parameters")

    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter by name: the live arrays (what an optimizer updates in place)."""
        return dict(self._named("_parameters"))

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The gradient of every parameter, same keys and shapes as ``parameters()``: live
        arrays that ``backward`` adds into and ``zero_grad`` clears."""
        return dict(self._named("_grads"))

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place)."""
        for _, g in self._named("_grads"):
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter by name (PyTorch's names, shapes and layout)."""
        return {k: v.copy() for k, v in self._named("_parameters")}

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy parameters in from ``state_dict`` (NumPy arrays, torch tensors, array-likes).

        Every key and shape is checked before anything is copied, so a failed load changes
        nothing. Values are cast to the layer's dtype (a float64 state dict loads into a float32
        layer). With ``strict=False`` missing and unexpected keys are allowed and returned.

        Raises:
            ValueError: ``strict`` and a key is missing or unexpected (all of them are named),
                or a value has the wrong shape or is not numeric.
        """
        params = self.parameters()
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            raise ValueError(
                f"Error(s) loading state_dict for {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        staged = {}
        for key, param in params.items():
            if key not in state_dict:
                continue
            value = np.asarray(_to_numpy(state_dict[key]))
            if value.dtype.kind not in "fiu":
                raise ValueError(f"state_dict[{key!r}] must be numeric, got dtype {value.dtype}")
            if value.shape != param.shape:
                raise ValueError(
                    f"state_dict[{key!r}] has shape {value.shape}, "
                    f"but the parameter has shape {param.shape}"
                )
            staged[key] = value
        for key, value in staged.items():
            np.copyto(params[key], value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode (dropout on) for this module and its sub-modules; returns self."""
        self.training = bool(mode)
        for module in self._modules.values():
            module.train(mode)
        return self

    def eval(self: _M) -> _M:
        """Set evaluation mode (dropout off); returns self."""
        return self.train(False)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Evaluation mode inside the block, the previous mode restored after it."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        """PyTorch's layout: ``Name(extra_repr)``, sub-modules indented one per line."""
        lines = [
            f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()
        ]
        body = "\n".join([self.extra_repr(), *lines, ""]) if lines else self.extra_repr()
        return f"{type(self).__name__}({body})"


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


def _step_args(
    x: Any, h: Any, input_size: int, hidden_size: int, lead: tuple[int, ...], dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Check a single step's input x (B, D) or unbatched (D,) and state h ``(*lead, B, H)``
    or unbatched ``(*lead, H)``; return x as (B, D), h as ``(*lead, B, H)`` and ``batched``."""
    x = _as_float_array("x", x, dtype)
    if x.ndim not in (1, 2) or x.shape[-1] != input_size:
        raise ValueError(
            f"x must have shape (batch, input_size) or (input_size,) with "
            f"input_size={input_size}, got {x.shape}"
        )
    batched = x.ndim == 2
    x2 = x if batched else x[None]
    if h is None:
        return x2, None, batched
    h = _as_float_array("h", h, dtype)
    if batched:
        _check_shape("h", h, (*lead, x.shape[0], hidden_size), "(..., batch, hidden_size)")
        return x2, h, batched
    _check_shape("h", h, (*lead, hidden_size), "(..., hidden_size) for an unbatched x")
    return x2, np.expand_dims(h, -2), batched


# --------------------------------------------------------------------------------------------
# RNN


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


class RNN(Module):
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

    Example:
        >>> rnn = RNN(10, 20, num_layers=2, seed=0)
        >>> x = np.ones((5, 3, 10), dtype=np.float32)
        >>> output, h_n = rnn(x)
        >>> output.shape, h_n.shape
        ((5, 3, 20), (2, 3, 20))
        >>> dx, dh0 = rnn.backward(np.ones_like(output))
    """

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
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.nonlinearity = _check_choice("nonlinearity", nonlinearity, functional.NONLINEARITIES)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
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
        self.dtype = _float_dtype(dtype)
        self.backend = _check_choice("backend", backend, functional.BACKENDS)
        self._rng = np.random.default_rng(seed)

        dirs = self._num_directions
        bound = 1.0 / math.sqrt(self.hidden_size)
        # Per (layer, direction) k = layer * dirs + d: the names of w_ih, w_hh, b_ih, b_hh.
        self._names: list[tuple[str, str, str | None, str | None]] = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else dirs * self.hidden_size
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes = {
                    f"weight_ih{sfx}": (self.hidden_size, layer_input),
                    f"weight_hh{sfx}": (self.hidden_size, self.hidden_size),
                }
                if self.bias:
                    shapes[f"bias_ih{sfx}"] = (self.hidden_size,)
                    shapes[f"bias_hh{sfx}"] = (self.hidden_size,)
                for name, shape in shapes.items():
                    self._add_parameter(name, _uniform(self._rng, shape, bound, self.dtype))
                names = list(shapes) + ([] if self.bias else [None, None])
                self._names.append(tuple(names))
        self._cache: _ForwardCache | None = None
        # step()'s per-layer (w_ih, w_hh, b_ih, b_hh): the live arrays, as parameters are never
        # replaced after construction (loads and optimizers write into them).
        self._step_layers = _step_params(self._parameters, self._names)

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

    def _weights(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(w_ih, w_hh, b_ih + b_hh or None) of layer-direction k."""
        p = self._parameters
        w_ih, w_hh, b_ih, b_hh = self._names[k]
        return p[w_ih], p[w_hh], None if b_ih is None else p[b_ih] + p[b_hh]

    def _check_lengths(self, lengths: Any, B: int, T: int) -> np.ndarray:
        lens = _as_int_array("lengths", lengths)
        _check_shape("lengths", lens, (B,), "(batch,)")
        bad = (lens < 1) | (lens > T)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"lengths must be in [1, T] = [1, {T}] (the input's number of steps), "
                f"got lengths[{i}] = {lens[i]}"
            )
        return lens

    def _dropout_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        keep = 1.0 - self.dropout
        mask = self._rng.random(shape) < keep
        return mask.astype(self.dtype) * self.dtype.type(1.0 / keep if keep > 0 else 0.0)

    def forward(
        self, x: Any, h0: Any | None = None, lengths: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the whole stack over a sequence.

        Args:
            x: input, (T, B, input_size), (B, T, input_size) with batch_first, or (T, input_size).
            h0: initial states (num_layers * dirs, B, H), or (num_layers * dirs, H) for an
                unbatched x; None for zeros.
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
        x = _as_float_array("x", x, self.dtype)
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
            h0 = _as_float_array("h0", h0, self.dtype)
            _check_shape("h0", h0, h_n_shape, "(num_layers * num_directions, batch, hidden)")
            h0 = np.array(h0 if batched else h0[:, None], dtype=self.dtype, order="C")

        if lengths is None:
            T_run, last, valid, rev = T, np.full(B, T - 1), None, None
        else:
            lens = self._check_lengths(lengths, B, T)
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
                w_ih, w_hh, b = self._weights(k)
                seq = inp if d == 0 else _reverse_time(inp, rev)
                h = functional.rnn_forward(
                    seq,
                    None if h0 is None else h0[k],
                    w_ih,
                    w_hh,
                    b,
                    nonlinearity=self.nonlinearity,
                    backend=self.backend,
                )
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
        d_out = _as_float_array("d_output", d_output, self.dtype)
        _check_shape("d_output", d_out, c.output_shape, "the forward's output shape")
        if not c.batched:
            d_out = d_out[:, None]
        elif self.batch_first:
            d_out = d_out.swapaxes(0, 1)
        T_run, B = c.layers[0].states[0].shape[:2]
        d_out = np.array(d_out[:T_run], dtype=self.dtype, order="C")
        if c.valid is not None:
            d_out[~c.valid] = 0
        if d_h_n is not None:
            d_h_n = _as_float_array("d_h_n", d_h_n, self.dtype)
            _check_shape("d_h_n", d_h_n, c.h_n_shape, "the forward's h_n shape")
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
                w_ih, w_hh = self._step_layers[k][:2]  # (the biases' sum is not needed)
                dh = d_out[..., d * H : (d + 1) * H]
                # Contiguous; for one direction d_out itself, which is ours to change.
                dh = np.ascontiguousarray(dh) if d == 0 else _reverse_time(dh, c.rev)
                if d_h_n is not None:
                    dh[c.last, batch] += d_h_n[k]
                g = functional.rnn_backward(
                    dh,
                    lc.inputs[d],
                    None if c.h0 is None else c.h0[k],
                    lc.states[d],
                    w_ih,
                    w_hh,
                    nonlinearity=self.nonlinearity,
                    backend=self.backend,
                )
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
        """
        if self.bidirectional:
            raise ValueError(
                "step() runs forward in time, but a bidirectional RNN's reverse direction "
                "needs the whole sequence: call rnn(x) instead"
            )
        params, nl, backend = self._step_layers, self.nonlinearity, self.backend
        # Arrays already of the layer's dtype and shapes go straight to the kernel, which
        # checks them in C (anything else, e.g. an unbatched x, gets None and is converted).
        result = functional._rnn_step_default(x_t, h, params, nl, backend)
        if result is None:  # not the default backend, or not plain operands
            result = functional._rnn_step_plain(x_t, h, params, nl, backend)
        if result is not None:
            return result
        L = self.num_layers
        x2, h3, batched = _step_args(x_t, h, self.input_size, self.hidden_size, (L,), self.dtype)
        output, h_new = functional.rnn_step(x2, h3, params, nonlinearity=nl, backend=backend)
        return (output, h_new) if batched else (output[0], h_new[:, 0])


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
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.bias = bool(bias)
        self.nonlinearity = _check_choice("nonlinearity", nonlinearity, functional.NONLINEARITIES)
        self.dtype = _float_dtype(dtype)
        self.backend = _check_choice("backend", backend, functional.BACKENDS)
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

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += "" if self.bias else ", bias=False"
        return s + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")

    def forward(self, x: Any, h: Any | None = None) -> np.ndarray:
        """h' (B, H), or (H,) for an unbatched x."""
        params, nl, backend = self._step_layers, self.nonlinearity, self.backend
        result = None
        if type(x) is np.ndarray and x.ndim == 2 and (h is None or type(h) is np.ndarray):
            # Arrays already of the cell's dtype and shapes: checked in C (as in RNN.step, one
            # call under the default backend).
            h3 = None if h is None else h[None]
            result = functional._rnn_step_default(x, h3, params, nl, backend)
            if result is None:
                result = functional._rnn_step_plain(x, h3, params, nl, backend)
            x2, h2, batched = x, h, True
        if result is None:
            x2, h2, batched = _step_args(x, h, self.input_size, self.hidden_size, (), self.dtype)
            h3 = None if h2 is None else h2[None]
            result = functional.rnn_step(x2, h3, params, nonlinearity=nl, backend=backend)
        h_new, h_stack = result
        # Copies for backward, safe from changes the caller makes to its arrays; h_stack[0]
        # already is one (the same values as h_new, which the caller gets).
        self._cache = (x2.copy(), None if h2 is None else h2.copy(), h_stack[0], batched)
        return h_new if batched else h_new[0]

    def backward(self, d_h_new: Any) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagate dL/dh' through the most recent call: returns (dx, dh), shaped like
        that call's x and h' (dh also when h was None), and adds the parameters' gradients
        into ``self.grads``."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first")
        x2, h2, h_new, batched = self._cache
        d = _as_float_array("d_h_new", d_h_new, self.dtype)
        _check_shape("d_h_new", d, h_new.shape if batched else h_new.shape[1:], "h' shape")
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
# Linear, Embedding, one_hot


class Linear(Module):
    """``y = x @ weight.T + bias``: ``torch.nn.Linear`` on NumPy arrays.

    weight (out_features, in_features) and bias (out_features,) start U(-1/sqrt(in_features),
    1/sqrt(in_features)), PyTorch's default. x is (..., in_features); y (..., out_features).
    ``backward(d_y)`` returns dL/dx and adds into ``grads``; it reads the x of the last call,
    which must not be changed in place in between.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_int("in_features", in_features, 1)
        self.out_features = _check_int("out_features", out_features, 1)
        self.bias = bool(bias)
        self.dtype = _float_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self._add_parameter("weight", _uniform(rng, shape, bound, self.dtype))
        if self.bias:
            self._add_parameter("bias", _uniform(rng, (self.out_features,), bound, self.dtype))
        self._x: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            "" if self.bias else ", bias=False"
        )

    def forward(self, x: Any) -> np.ndarray:
        """y (..., out_features) for x (..., in_features)."""
        x = _as_float_array("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., in_features) with in_features={self.in_features}, "
                f"got {x.shape}"
            )
        self._x = x
        y = x @ self._parameters["weight"].T
        if self.bias:
            y += self._parameters["bias"]
        return y

    def backward(self, d_y: Any) -> np.ndarray:
        """dL/dx from dL/dy (shaped like the last output)."""
        if self._x is None:
            raise RuntimeError("backward() needs a forward() first")
        x = self._x
        d_y = _as_float_array("d_y", d_y, self.dtype)
        _check_shape("d_y", d_y, (*x.shape[:-1], self.out_features), "the output's shape")
        d2 = d_y.reshape(-1, self.out_features)
        self._grads["weight"] += d2.T @ x.reshape(-1, self.in_features)
        if self.bias:
            self._grads["bias"] += d2.sum(axis=0)
        return d_y @ self._parameters["weight"]


class Embedding(Module):
    """A lookup table ``weight[ids]``: ``torch.nn.Embedding`` on NumPy arrays.

    weight (num_embeddings, embedding_dim) starts N(0, 1) (PyTorch's default); the row of
    ``padding_idx``, if given, starts at zero and never receives a gradient. ids are integers in
    [0, num_embeddings) of any shape; the output is (*ids.shape, embedding_dim).
    ``backward(d_out)`` adds into ``grads`` (ids have no gradient) and returns None.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: Any = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = _check_int("num_embeddings", num_embeddings, 1)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        if padding_idx is not None:
            padding_idx = _check_int("padding_idx", padding_idx, -self.num_embeddings)
            if padding_idx >= self.num_embeddings:
                raise ValueError(
                    f"padding_idx must be in [-{num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx}"
                )
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.dtype = _float_dtype(dtype)
        rng = np.random.default_rng(seed)
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self._add_parameter("weight", weight)
        self._ids: np.ndarray | None = None

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + ("" if self.padding_idx is None else f", padding_idx={self.padding_idx}")

    def forward(self, ids: Any) -> np.ndarray:
        """The rows of ``weight`` for integer ``ids`` of any shape: (*ids.shape, dim)."""
        ids = _as_ids("ids", ids, self.num_embeddings)
        self._ids = ids
        return self._parameters["weight"][ids]

    def backward(self, d_out: Any) -> None:
        """Add dL/dweight for dL/d(output) ``d_out`` into ``grads`` (each id's rows summed)."""
        if self._ids is None:
            raise RuntimeError("backward() needs a forward() first")
        ids = self._ids
        d_out = _as_float_array("d_out", d_out, self.dtype)
        _check_shape("d_out", d_out, (*ids.shape, self.embedding_dim), "the output's shape")
        flat_ids = ids.reshape(-1)
        flat_d = d_out.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat_ids != self.padding_idx
            flat_ids, flat_d = flat_ids[keep], flat_d[keep]
        np.add.at(self._grads["weight"], flat_ids, flat_d)


def one_hot(ids: Any, num_classes: int, dtype: Any = np.float32) -> np.ndarray:
    """(*ids.shape, num_classes) with a 1 at each id: the RNN input for token ids.

    Unlike ``torch.nn.functional.one_hot`` the result is float (float32 by default), ready for an
    RNN, and ``num_classes`` is required.

    Raises:
        TypeError: ids are not integers.
        ValueError: an id outside [0, num_classes).
    """
    num_classes = _check_int("num_classes", num_classes, 1)
    ids = _as_ids("ids", ids, num_classes)
    out = np.zeros((*ids.shape, num_classes), dtype=_float_dtype(dtype))
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out
