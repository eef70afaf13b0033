"""The recurrent cells as functions on arrays (the Elman RNN, the LSTM, the GRU): the only door
to the kernels.

Every call is checked once (by :mod:`rnnfast._validation`: dtype, rank, every dimension against
the others) and its arrays made C-contiguous, aligned and native-endian before a kernel sees
them, because the kernels run without bounds checks; :mod:`rnnfast._backend` picks the
kernels. A bad argument is a ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape
or value) naming the argument, the expected and the actual.

Backends: ``"cython"`` (compiled kernels), ``"numpy"`` (the reference in ``_reference.py``) and
``"auto"``: compiled if the extension imported, else the reference with one warning. The
environment variable ``RNNFAST_BACKEND`` (``auto``, ``cython`` or ``numpy``) sets what ``"auto"``
means, so ``RNNFAST_BACKEND=numpy`` runs a whole program on the reference.

Fast path: operands that are already exactly what a kernel needs (C-contiguous arrays of one
float dtype with matching shapes) are checked in C, in about a microsecond, and anything else
takes the validating path, which converts or raises; the results are the same.

Input policy: array-likes (lists, other array types) are converted with ``np.asarray``; the
result must then be float32 or float64 like ``x``. Anything ``np.asarray`` cannot turn into such
an array (None, ragged lists, strings, arbitrary objects, an object whose ``__array__`` raises)
is a ``TypeError`` naming the argument; masked arrays are refused rather than silently unmasked.
Non-contiguous, Fortran-ordered, zero-strided (``np.broadcast_to``), unaligned, byte-swapped and
read-only arrays are accepted (copied once where needed); inputs are never written to.

Sizes: a GEMM operand of more than ``BLAS_INT_MAX`` elements is a ``ValueError`` before any
kernel runs (the BLAS integer would wrap around). An allocation the system refuses (an output,
a workspace, or the contiguous copy of a huge broadcast input) is NumPy's ``MemoryError``, raised
before any compiled code runs.

NaN and Inf: by default they are not checked and propagate as in NumPy (a NaN or Inf input makes
the affected states and gradients NaN or Inf; ReLU can overflow to Inf). ``check_finite=True``
scans every input once and raises a ``ValueError`` naming the first argument holding a NaN or an
Inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from rnnfast import _reference, _validation
from rnnfast._backend import AUTO, BACKENDS, BLAS_INT_MAX, ENV_KEY, ENVIRON, HAVE_COMPILED, compiled
from rnnfast._backend import kernels as _kernels
from rnnfast._validation import FLOAT_DTYPES, NONLINEARITIES, StepLayer, check_choice, check_flag

__all__ = [
    "BACKENDS",
    "BLAS_INT_MAX",
    "FLOAT_DTYPES",
    "HAVE_COMPILED",
    "NONLINEARITIES",
    "DecoderGrads",
    "GRUGrads",
    "GRUOutput",
    "GatheredBuffers",
    "GatheredGrads",
    "GatheredOutput",
    "LSTMGrads",
    "LSTMOutput",
    "RNNGrads",
    "Workspace",
    "adam_update",
    "gathered_backward",
    "gathered_forward",
    "gru_backward",
    "gru_forward",
    "gru_step",
    "linear_cross_entropy",
    "lstm_backward",
    "lstm_forward",
    "lstm_step",
    "rnn_backward",
    "rnn_forward",
    "rnn_step",
    "step",
]


class RNNGrads(NamedTuple):
    """Gradients of the loss, summed over all time steps, in the dtype of ``x``."""

    dx: np.ndarray
    """(T, B, D): gradient with respect to the input."""
    dh0: np.ndarray
    """(B, H): gradient with respect to the initial state (also when h0 was None)."""
    dw_ih: np.ndarray
    """(H, D): gradient with respect to ``w_ih``."""
    dw_hh: np.ndarray
    """(H, H): gradient with respect to ``w_hh``."""
    db: np.ndarray
    """(H,): gradient with respect to the bias (PyTorch's b_ih and b_hh each receive it)."""


def _sequence_call(
    named: dict[str, Any],
    layout: dict[str, tuple[str, ...]],
    nonlinearity: str,
    backend: str,
    check_finite: Any,
) -> tuple[dict[str, np.ndarray | None], Any]:
    """The door of rnn_forward/rnn_backward: the fast path's answer, or the arrays validated
    and kernel-ready with the implementation to run them.

    Returns ``({}, result)`` when the kernels' plain-array entry point took the call (it checks
    the operands in C and declines anything needing a conversion or a message), else
    ``(arrays, impl)``. Order of checks: options (``check_finite``, nonlinearity, backend),
    then the arrays (see :func:`rnnfast._validation.sequence_arrays`).
    """
    check_finite = check_flag("check_finite", check_finite)
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    kernels = compiled(backend)
    if kernels is not None and not check_finite:
        plain = kernels.rnn_forward_plain if "b" in named else kernels.rnn_backward_plain
        result = plain(*named.values(), nonlinearity, BLAS_INT_MAX)
        if result is not None:
            return {}, result
    arrays, sizes = _validation.sequence_arrays(
        named, layout, check_finite, None if kernels is None else BLAS_INT_MAX
    )
    # Empty sizes involve no arithmetic worth compiling, and would hand BLAS zero leading
    # dimensions: the reference computes them.
    impl = kernels if kernels is not None and min(sizes.values()) > 0 else _reference
    return arrays, impl


# The dimensions of every argument, in the order they are checked: x and the weights fix
# T, B, D, H before the arrays that must agree with them.
_FORWARD_LAYOUT = {
    "x": ("T", "B", "D"),
    "w_ih": ("H", "D"),
    "w_hh": ("H", "H"),
    "h0": ("B", "H"),
    "b": ("H",),
}
_BACKWARD_LAYOUT = {**_FORWARD_LAYOUT, "h": ("T", "B", "H"), "dh": ("T", "B", "H")}
del _BACKWARD_LAYOUT["b"]


def rnn_forward(
    x: Any,
    h0: Any | None,
    w_ih: Any,
    w_hh: Any,
    b: Any | None = None,
    *,
    nonlinearity: str = "tanh",
    backend: str = "auto",
    check_finite: bool = False,
) -> np.ndarray:
    """Run an Elman RNN over a whole sequence.

    ``h[t] = act(x[t] @ w_ih.T + h[t-1] @ w_hh.T + b)``, with ``h[-1] = h0``.

    Args:
        x: (T, B, D) inputs, time-major, float32 or float64.
        h0: (B, H) initial state, or None for zeros.
        w_ih: (H, D) input-to-hidden weights (PyTorch's ``weight_ih_l0``).
        w_hh: (H, H) hidden-to-hidden weights (PyTorch's ``weight_hh_l0``).
        b: (H,) bias, or None. For PyTorch weights pass ``bias_ih_l0 + bias_hh_l0``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        backend: ``"auto"``, ``"cython"`` or ``"numpy"`` (see the module docstring).
        check_finite: if True, raise a ``ValueError`` naming the first input that holds a NaN
            or an Inf (one extra pass over each input). If False (the default), NaN and Inf
            propagate as in NumPy: a NaN reaches every later state of its sequence, a huge ReLU
            pre-activation overflows to Inf, and tanh saturates to exactly +-1.

    Returns:
        h: (T, B, H), the state after every step, in the dtype of ``x``; ``h[-1]`` is the final
        state.

    Raises:
        TypeError: an argument is not a float32/float64 array (or array-like), dtypes differ,
            or ``check_finite`` is not a bool.
        ValueError: a shape disagrees with the others, an unknown nonlinearity or backend, a
            size beyond the BLAS integer, or (``check_finite=True``) a NaN or Inf input.
        MemoryError: an output, workspace or contiguous copy cannot be allocated.

    Examples:
        >>> x = np.ones((3, 1, 2))  # T=3 steps, a batch of 1, 2 features
        >>> w_ih, w_hh = np.full((2, 2), 0.5), np.eye(2) * 0.5
        >>> h = rnn_forward(x, None, w_ih, w_hh)
        >>> h.shape
        (3, 1, 2)
        >>> np.round(h[:, 0, 0], 4)
        array([0.7616, 0.8811, 0.8938])
        >>> grads = rnn_backward(np.ones_like(h), x, None, h, w_ih, w_hh)
        >>> grads.dw_hh.shape
        (2, 2)
    """
    arrays, impl = _sequence_call(
        {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b": b},
        _FORWARD_LAYOUT,
        nonlinearity,
        backend,
        check_finite,
    )
    if not arrays:
        return impl
    return impl.rnn_forward(*arrays.values(), nonlinearity)


def rnn_backward(
    dh: Any,
    x: Any,
    h0: Any | None,
    h: Any,
    w_ih: Any,
    w_hh: Any,
    *,
    nonlinearity: str = "tanh",
    backend: str = "auto",
    check_finite: bool = False,
) -> RNNGrads:
    """Backpropagation through time for :func:`rnn_forward`.

    Args:
        dh: (T, B, H), dL/dh[t] for every step from outside the recurrence (a per-step loss;
            a gradient on the final state is added into ``dh[-1]``).
        x, h0, w_ih, w_hh: the forward pass's arguments (h0 may be None).
        h: (T, B, H), the forward pass's output.
        nonlinearity, backend, check_finite: as in :func:`rnn_forward` (``check_finite``
            also covers ``dh`` and ``h``).

    Returns:
        RNNGrads(dx, dh0, dw_ih, dw_hh, db): each summed over all time steps, in the dtype of
        ``x``. ``db`` is the gradient of a single bias; PyTorch's ``bias_ih`` and ``bias_hh``
        each receive it whole.

    Raises:
        TypeError, ValueError, MemoryError: as in :func:`rnn_forward`.
    """
    arrays, impl = _sequence_call(
        {"dh": dh, "x": x, "h0": h0, "h": h, "w_ih": w_ih, "w_hh": w_hh},
        _BACKWARD_LAYOUT,
        nonlinearity,
        backend,
        check_finite,
    )
    grads = impl if not arrays else impl.rnn_backward(*arrays.values(), nonlinearity)
    return RNNGrads(*grads)


StepParams = Sequence[tuple[Any, Any, Any | None, Any | None]]


def rnn_step(
    x: Any,
    h: Any | None,
    params: StepParams,
    *,
    nonlinearity: str = "tanh",
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """One time step of a stack of RNN layers, for streaming inference.

    Layer k computes ``h_new[k] = act(inp @ w_ih.T + b_ih + h[k] @ w_hh.T + b_hh)``, its input
    being ``x`` for the first layer and ``h_new[k-1]`` after.

    Args:
        x: (B, D) input of this step.
        h: (L, B, H) state of every layer, or None for zeros.
        params: L tuples ``(w_ih, w_hh, b_ih, b_hh)`` with PyTorch's shapes (w_ih of the first
            layer (H, D), later (H, H)); both biases None for a layer without bias.
        nonlinearity, backend: as in :func:`rnn_forward`.

    Returns:
        ``(output, h_new)``: the last layer's new state (B, H), equal to ``h_new[-1]``, and
        the new states (L, B, H), in the dtype of ``x``.

    Operands that are already C-contiguous arrays of one float dtype with matching shapes go
    straight to a compiled loop with C-level checks (about a microsecond per call); anything
    else takes the validating path, which converts or raises like :func:`rnn_forward`.

    Examples:
        >>> w_ih, w_hh = np.eye(2), np.zeros((2, 2))
        >>> output, h = rnn_step(np.array([[0.5, -0.5]]), None, [(w_ih, w_hh, None, None)])
        >>> np.round(output, 4)
        array([[ 0.4621, -0.4621]])
        >>> h.shape
        (1, 1, 2)
    """
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    return step(x, h, params if type(params) is tuple else tuple(params), nonlinearity, backend)


def step(
    x: Any,
    h: Any | None,
    params: StepParams,
    nonlinearity: str,
    backend: str,
    layer: StepLayer | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The one door of the streaming step: :func:`rnn_step`, ``RNN.step`` and ``RNNCell``.

    ``nonlinearity`` must be valid (the callers check it once, at construction for the
    layers). ``layer`` None: arguments as :func:`rnn_step`; else a layer's own parameters (a
    tuple, trusted) and its input rules (:class:`rnnfast._validation.StepLayer`: unbatched x,
    the state without the layers axis for a cell), and the result unbatched like x.
    """
    # The common case of _backend.compiled, inline: its call costs the streaming step 6%.
    if backend is AUTO and ENV_KEY not in ENVIRON and _kernels is not None:
        kernels = _kernels
    else:
        kernels = compiled(backend)
    if kernels is not None:
        # Operands already exactly right: one C call, its checks in C (None: they are not).
        if layer is None or layer.lead:
            result = kernels.rnn_step(x, h, params, nonlinearity)
        elif h is None or type(h) is np.ndarray:  # a cell's (B, H) state: a view with L = 1
            result = kernels.rnn_step(x, None if h is None else h[None], params, nonlinearity)
        else:
            result = None
        if result is not None:
            return result
    x2, h3, layers, batched = _validation.step_args(x, h, params, layer)
    result = None
    if kernels is not None:  # (the backend was decided above, once)
        result = kernels.rnn_step(x2, h3, layers, nonlinearity)  # None: an empty size
    if result is None:
        result = _reference.rnn_step(x2, h3, layers, nonlinearity)
    if batched:
        return result
    output, h_new = result
    return output[0], h_new[:, 0]


# --------------------------------------------------------------------------------------------
# The gated cells: LSTM and GRU (PyTorch's math, gate orders and parameter layouts)


@dataclass(frozen=True, slots=True, eq=False)
class Workspace:
    """What a training forward keeps for its backward: pass it back unchanged.

    Opaque: its ``data`` belongs to the implementation that made it (the gate activations,
    e.g.). A backward on another backend recomputes it from the forward's arguments, so any
    forward/backward pair of backends gives the same gradients; so does a second backward
    from a workspace whose memory the first used for its gradients (the compiled LSTM's and
    GRU's).
    """

    cell: str
    impl: ModuleType
    sizes: tuple[int, ...]  # (T, B, D, H, S) of the forward
    dtype: np.dtype
    bias: np.ndarray | None  # the forward's b (LSTM) or b_ih (GRU), for a recomputation
    data: Any


class LSTMOutput(NamedTuple):
    """What :func:`lstm_forward` returns."""

    h: np.ndarray
    """(T, B, S): the state after every step (S = P with a projection, else H)."""
    c: np.ndarray
    """(T, B, H): the cell after every step."""
    workspace: Workspace | None
    """What :func:`lstm_backward` needs (``training=True``), else None."""


class LSTMGrads(NamedTuple):
    """Gradients of the loss through :func:`lstm_forward`, summed over all time steps."""

    dx: np.ndarray
    """(T, B, D)."""
    dh0: np.ndarray
    """(B, S), also when h0 was None."""
    dc0: np.ndarray
    """(B, H), also when c0 was None."""
    dw_ih: np.ndarray
    """(4H, D)."""
    dw_hh: np.ndarray
    """(4H, S)."""
    db: np.ndarray
    """(4H,): of the folded bias (PyTorch's b_ih and b_hh each receive it)."""
    dw_hr: np.ndarray | None
    """(P, H), None without a projection."""


class GRUOutput(NamedTuple):
    """What :func:`gru_forward` returns."""

    h: np.ndarray
    """(T, B, H): the state after every step."""
    workspace: Workspace | None
    """What :func:`gru_backward` needs (``training=True``), else None."""


class GRUGrads(NamedTuple):
    """Gradients of the loss through :func:`gru_forward`, summed over all time steps."""

    dx: np.ndarray
    """(T, B, D)."""
    dh0: np.ndarray
    """(B, H), also when h0 was None."""
    dw_ih: np.ndarray
    """(3H, D)."""
    dw_hh: np.ndarray
    """(3H, H)."""
    db_ih: np.ndarray | None
    """(3H,), None without biases."""
    db_hh: np.ndarray | None
    """(3H,), None without biases."""


_LSTM_FORWARD_LAYOUT = {
    "x": ("T", "B", "D"),
    "w_ih": ("G", "D"),
    "w_hr": ("S", "H"),
    "w_hh": ("G", "S"),
    "h0": ("B", "S"),
    "c0": ("B", "H"),
    "b": ("G",),
}
_LSTM_BACKWARD_LAYOUT = {
    **{k: v for k, v in _LSTM_FORWARD_LAYOUT.items() if k != "b"},
    "h": ("T", "B", "S"),
    "c": ("T", "B", "H"),
    "dh": ("T", "B", "S"),
    "dc": ("T", "B", "H"),
}
_GRU_FORWARD_LAYOUT = {
    "x": ("T", "B", "D"),
    "w_ih": ("G", "D"),
    "w_hr": (),  # (none: the state is h)
    "w_hh": ("G", "H"),
    "h0": ("B", "H"),
    "b_ih": ("G",),
    "b_hh": ("G",),
}
_GRU_BACKWARD_LAYOUT = {
    **{k: v for k, v in _GRU_FORWARD_LAYOUT.items() if k != "b_ih"},
    "h": ("T", "B", "H"),
    "dh": ("T", "B", "H"),
}


# Per layout, what gated_admit takes: the labels and whether each array may be None.
_ADMIT_LAYOUTS = {
    id(layout): (
        tuple(layout.values()),
        tuple(k in _validation.GATED_OPTIONAL for k in layout),
    )
    for layout in (
        _LSTM_FORWARD_LAYOUT, _LSTM_BACKWARD_LAYOUT, _GRU_FORWARD_LAYOUT, _GRU_BACKWARD_LAYOUT
    )
}  # fmt: skip


def _gated_call(
    cell: str,
    named: dict[str, Any],
    layout: dict[str, tuple[str, ...]],
    backend: str,
    check_finite: Any,
) -> tuple[dict[str, np.ndarray | None], dict[str, int], ModuleType, ModuleType | None]:
    """The door of the gated calls: the arrays validated and kernel-ready (in the order of
    ``named``), the sizes, the implementation to run them, and the compiled kernels selected by
    ``backend`` (None: the reference). Options first, then the arrays."""
    check_finite = check_flag("check_finite", check_finite)
    kernels = compiled(backend)
    named = {"w_hr": None, **named} if "w_hr" not in named else named
    gates = 4 if cell == "lstm" else 3
    sizes = None
    if kernels is not None and not check_finite and hasattr(kernels, "gated_admit"):
        # Arrays already exactly right: checked in C in a few microseconds (None: they are
        # not, and the validating path below says why or converts them).
        labels, optional = _ADMIT_LAYOUTS[id(layout)]
        values = tuple([named[k] for k in layout])
        sizes = kernels.gated_admit(values, labels, optional, gates, BLAS_INT_MAX)
    if sizes is not None:
        arrays: dict[str, np.ndarray | None] = dict(named)
    else:
        arrays, sizes = _validation.gated_arrays(
            named, layout, gates, check_finite, None if kernels is None else BLAS_INT_MAX
        )
    if cell == "gru":
        del arrays["w_hr"]
    name = f"{cell}_forward"
    # Empty sizes involve no arithmetic worth compiling: the reference computes them. A
    # kernel not built yet (its branch not merged) is the reference too.
    use = kernels is not None and min(sizes.values()) > 0 and hasattr(kernels, name)
    return arrays, sizes, (kernels if use else _reference), kernels


def _size_key(sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[k] for k in ("T", "B", "D", "H", "S"))


def _workspace(workspace: Any, cell: str, sizes: dict[str, int], dtype: np.dtype) -> Workspace:
    """``workspace`` checked against the backward's arrays: the forward's, of these sizes."""
    function = f"{cell}_forward"
    if not isinstance(workspace, Workspace) or workspace.cell != cell:
        hint = " (the forward ran with training=False)" if workspace is None else ""
        raise TypeError(
            f"workspace must be what {function}(..., training=True) returned, got "
            f"{type(workspace).__name__}{hint}"
        )
    key = _size_key(sizes)
    if workspace.sizes != key or workspace.dtype != dtype:
        raise ValueError(
            f"workspace is from a {function} of sizes (T, B, D, H, S) = {workspace.sizes} and "
            f"dtype {workspace.dtype}, but the arrays have {key} and {dtype}"
        )
    return workspace


def lstm_forward(
    x: Any,
    h0: Any | None,
    c0: Any | None,
    w_ih: Any,
    w_hh: Any,
    b: Any | None = None,
    w_hr: Any | None = None,
    *,
    training: bool = False,
    backend: str = "auto",
    check_finite: bool = False,
) -> LSTMOutput:
    """Run an LSTM over a whole sequence (``torch.nn.LSTM``'s math and gate order i, f, g, o).

    ``a = x[t] @ w_ih.T + h[t-1] @ w_hh.T + b`` split into i, f, g, o (H columns each);
    ``c[t] = sigmoid(f) * c[t-1] + sigmoid(i) * tanh(g)``; ``h[t] = sigmoid(o) * tanh(c[t])``,
    or with a projection ``h[t] = (sigmoid(o) * tanh(c[t])) @ w_hr.T``.

    Args:
        x: (T, B, D) inputs, time-major, float32 or float64.
        h0: (B, S) initial state, or None for zeros (S = P with ``w_hr``, else H).
        c0: (B, H) initial cell, or None for zeros.
        w_ih: (4H, D) (PyTorch's ``weight_ih_l0``).
        w_hh: (4H, S) (``weight_hh_l0``).
        b: (4H,) bias, or None. For PyTorch weights pass ``bias_ih_l0 + bias_hh_l0``.
        w_hr: (P, H) projection (``weight_hr_l0``, ``proj_size=P``), or None.
        training: keep what :func:`lstm_backward` needs (a :class:`Workspace`); False (the
            default, inference) keeps nothing.
        backend: ``"auto"``, ``"cython"`` or ``"numpy"`` (see the module docstring).
        check_finite: as in :func:`rnn_forward`.

    Returns:
        LSTMOutput(h, c, workspace): h (T, B, S), c (T, B, H) in the dtype of ``x``, and the
        workspace (None unless ``training``).

    Raises:
        TypeError: a non-float array, dtypes that differ, a non-bool flag.
        ValueError: a shape that disagrees with the others (w_ih's rows not 4H), an unknown
            backend, a size beyond the BLAS integer, or (``check_finite``) a NaN or Inf.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((5, 2, 3))  # T=5, B=2, D=3
        >>> w_ih, w_hh = rng.standard_normal((16, 3)), rng.standard_normal((16, 4))  # H=4
        >>> h, c, ws = lstm_forward(x, None, None, w_ih, w_hh, training=True)
        >>> h.shape, c.shape
        ((5, 2, 4), (5, 2, 4))
        >>> g = lstm_backward(np.ones_like(h), None, x, None, None, h, c, ws, w_ih, w_hh)
        >>> g.dw_ih.shape, g.dc0.shape
        ((16, 3), (2, 4))
    """
    training = check_flag("training", training)
    named = {"x": x, "h0": h0, "c0": c0, "w_ih": w_ih, "w_hh": w_hh, "b": b, "w_hr": w_hr}
    arrays, sizes, impl, _ = _gated_call("lstm", named, _LSTM_FORWARD_LAYOUT, backend, check_finite)
    h, c, data = impl.lstm_forward(*arrays.values(), training)
    ws = None
    if training:
        ws = Workspace("lstm", impl, _size_key(sizes), h.dtype, arrays["b"], data)
    return LSTMOutput(h, c, ws)


def lstm_backward(
    dh: Any,
    dc: Any | None,
    x: Any,
    h0: Any | None,
    c0: Any | None,
    h: Any,
    c: Any,
    workspace: Workspace,
    w_ih: Any,
    w_hh: Any,
    w_hr: Any | None = None,
    *,
    backend: str = "auto",
    check_finite: bool = False,
) -> LSTMGrads:
    """Backpropagation through time for :func:`lstm_forward`.

    Args:
        dh: (T, B, S), dL/dh[t] from outside the recurrence (a gradient on the final state
            is added into ``dh[-1]``).
        dc: (T, B, H), dL/dc[t] from outside (a gradient on the final cell goes into
            ``dc[-1]``), or None (zeros).
        x, h0, c0, w_ih, w_hh, w_hr: the forward's arguments.
        h, c, workspace: the forward's results (``training=True``).
        backend, check_finite: as in :func:`lstm_forward` (``check_finite`` covers ``dh``,
            ``dc``, ``h`` and ``c`` too).

    Returns:
        LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr).

    Raises:
        TypeError: as :func:`lstm_forward`, or ``workspace`` not an LSTM forward's.
        ValueError: as :func:`lstm_forward`, or ``workspace`` from a call of other sizes.

    Examples:
        >>> x, w_ih, w_hh = np.ones((2, 1, 1)), np.full((4, 1), 0.5), np.zeros((4, 1))
        >>> out = lstm_forward(x, None, None, w_ih, w_hh, training=True)
        >>> np.round(out.h[:, 0, 0], 4)
        array([0.1743, 0.2711])
        >>> g = lstm_backward(np.ones_like(out.h), None, x, None, None, *out, w_ih, w_hh)
        >>> np.round(g.dx[:, 0, 0], 4)
        array([0.2984, 0.2191])
    """
    named = {
        "dh": dh, "dc": dc, "x": x, "h0": h0, "c0": c0, "h": h, "c": c,
        "w_ih": w_ih, "w_hh": w_hh, "w_hr": w_hr,
    }  # fmt: skip
    arrays, sizes, impl, _ = _gated_call(
        "lstm", named, _LSTM_BACKWARD_LAYOUT, backend, check_finite
    )
    a = arrays
    ws = _workspace(workspace, "lstm", sizes, a["x"].dtype)

    data = ws.data
    if ws.impl is not impl or data is None:  # another backend's, or used up: recompute it
        args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], ws.bias, a["w_hr"], True)
        data = impl.lstm_forward(*args)[2]
    elif impl is not _reference:
        # The compiled backward writes its gradients over the activations (one workspace for
        # forward and backward): a second backward from this workspace recomputes them.
        object.__setattr__(ws, "data", None)
    grads = impl.lstm_backward(
        a["dh"], a["dc"], a["x"], a["h0"], a["c0"], a["h"], a["c"], data,
        a["w_ih"], a["w_hh"], a["w_hr"],
    )  # fmt: skip
    return LSTMGrads(*grads)


def gru_forward(
    x: Any,
    h0: Any | None,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any | None = None,
    b_hh: Any | None = None,
    *,
    training: bool = False,
    backend: str = "auto",
    check_finite: bool = False,
) -> GRUOutput:
    """Run a GRU over a whole sequence (``torch.nn.GRU``'s math and gate order r, z, n).

    ``gi = x[t] @ w_ih.T + b_ih`` and ``gh = h[t-1] @ w_hh.T + b_hh``, split into r, z, n
    (H columns each): ``r = sigmoid(gi_r + gh_r)``, ``z = sigmoid(gi_z + gh_z)``,
    ``n = tanh(gi_n + r * gh_n)`` (the reset after the product: ``b_hn`` stays inside),
    ``h[t] = (1 - z) * n + z * h[t-1]``.

    Args:
        x: (T, B, D) inputs, time-major, float32 or float64.
        h0: (B, H) initial state, or None for zeros.
        w_ih: (3H, D) (PyTorch's ``weight_ih_l0``).
        w_hh: (3H, H) (``weight_hh_l0``).
        b_ih, b_hh: (3H,) each (``bias_ih_l0``, ``bias_hh_l0``: they cannot be folded), or
            both None.
        training: keep what :func:`gru_backward` needs (a :class:`Workspace`); False (the
            default, inference) keeps nothing.
        backend, check_finite: as in :func:`lstm_forward`.

    Returns:
        GRUOutput(h, workspace): h (T, B, H) in the dtype of ``x``, and the workspace (None
        unless ``training``).

    Raises:
        TypeError, ValueError: as :func:`lstm_forward` (w_ih's rows not 3H, one bias None).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((5, 2, 3))
        >>> w_ih, w_hh = rng.standard_normal((12, 3)), rng.standard_normal((12, 4))  # H=4
        >>> h, ws = gru_forward(x, None, w_ih, w_hh, training=True)
        >>> h.shape
        (5, 2, 4)
        >>> g = gru_backward(np.ones_like(h), x, None, h, ws, w_ih, w_hh)
        >>> g.dw_hh.shape, g.db_ih is None
        ((12, 4), True)
    """
    training = check_flag("training", training)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both None")
    named = {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    arrays, sizes, impl, _ = _gated_call("gru", named, _GRU_FORWARD_LAYOUT, backend, check_finite)
    h, data = impl.gru_forward(*arrays.values(), training)
    ws = None
    if training:
        ws = Workspace("gru", impl, _size_key(sizes), h.dtype, arrays["b_ih"], data)
    return GRUOutput(h, ws)


def gru_backward(
    dh: Any,
    x: Any,
    h0: Any | None,
    h: Any,
    workspace: Workspace,
    w_ih: Any,
    w_hh: Any,
    b_hh: Any | None = None,
    *,
    backend: str = "auto",
    check_finite: bool = False,
) -> GRUGrads:
    """Backpropagation through time for :func:`gru_forward`.

    Args:
        dh: (T, B, H), dL/dh[t] from outside the recurrence (a gradient on the final state
            is added into ``dh[-1]``).
        x, h0, w_ih, w_hh, b_hh: the forward's arguments (``b_hh`` None: no biases).
        h, workspace: the forward's results (``training=True``).
        backend, check_finite: as in :func:`gru_forward`.

    Returns:
        GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh), the biases' None without biases.

    Raises:
        TypeError: as :func:`gru_forward`, or ``workspace`` not a GRU forward's.
        ValueError: as :func:`gru_forward`, or ``workspace`` from a call of other sizes.

    Examples:
        >>> x, w_ih, w_hh = np.ones((2, 1, 1)), np.full((3, 1), 0.5), np.zeros((3, 1))
        >>> out = gru_forward(x, None, w_ih, w_hh, training=True)
        >>> np.round(out.h[:, 0, 0], 4)
        array([0.1745, 0.2831])
        >>> g = gru_backward(np.ones_like(out.h), x, None, *out, w_ih, w_hh)
        >>> g.dh0.shape
        (1, 1)
    """
    named = {"dh": dh, "x": x, "h0": h0, "h": h, "w_ih": w_ih, "w_hh": w_hh, "b_hh": b_hh}
    a, sizes, impl, _ = _gated_call("gru", named, _GRU_BACKWARD_LAYOUT, backend, check_finite)
    ws = _workspace(workspace, "gru", sizes, a["x"].dtype)
    data = ws.data
    if ws.impl is not impl or data is None:  # another backend's, or used up: recompute it
        if (ws.bias is None) != (a["b_hh"] is None):
            raise ValueError("b_hh must be None exactly when the forward had no biases")
        data = impl.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], ws.bias, a["b_hh"], True)[1]
    elif impl is not _reference:
        # The compiled backward writes its gradients over the workspace (as the LSTM's): a
        # second backward from it recomputes it.
        object.__setattr__(ws, "data", None)
    grads = impl.gru_backward(
        a["dh"], a["x"], a["h0"], a["h"], data, a["w_ih"], a["w_hh"], a["b_hh"]
    )
    return GRUGrads(*grads)


LSTMStepParams = Sequence[tuple[Any, Any, Any | None, Any | None, Any | None]]
GRUStepParams = Sequence[tuple[Any, Any, Any | None, Any | None]]


def lstm_step(
    x: Any, h: Any | None, c: Any | None, params: LSTMStepParams, *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One time step of a stack of LSTM layers, for streaming inference.

    Args:
        x: (B, D) input of this step.
        h: (L, B, S) state of every layer, or None for zeros.
        c: (L, B, H) cell of every layer, or None for zeros.
        params: L tuples ``(w_ih, w_hh, b_ih, b_hh, w_hr)`` with PyTorch's shapes (w_ih of
            the first layer (4H, D), later (4H, S)); both biases None for a layer without
            bias; ``w_hr`` (P, H) or None (then S = H).
        backend: as in :func:`lstm_forward`.

    Returns:
        ``(output, h_new, c_new)``: the last layer's new state (B, S), equal to
        ``h_new[-1]``, the new states (L, B, S) and cells (L, B, H).

    Examples:
        >>> w_ih, w_hh = np.ones((4, 2)), np.zeros((4, 1))  # H=1
        >>> output, h, c = lstm_step(np.array([[0.5, -0.5]]), None, None,
        ...                          [(w_ih, w_hh, None, None, None)])
        >>> np.round(output, 4), h.shape, c.shape
        (array([[0.]]), (1, 1, 1), (1, 1, 1))
    """
    output, (h_new, c_new) = gated_step(
        "lstm", x, (h, c), params if type(params) is tuple else tuple(params), backend
    )
    return output, h_new, c_new


def gru_step(
    x: Any, h: Any | None, params: GRUStepParams, *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """One time step of a stack of GRU layers, for streaming inference.

    Args:
        x: (B, D) input of this step.
        h: (L, B, H) state of every layer, or None for zeros.
        params: L tuples ``(w_ih, w_hh, b_ih, b_hh)`` with PyTorch's shapes (w_ih of the
            first layer (3H, D), later (3H, H)); both biases None for a layer without bias.
        backend: as in :func:`gru_forward`.

    Returns:
        ``(output, h_new)``: the last layer's new state (B, H), equal to ``h_new[-1]``, and
        the new states (L, B, H).

    Examples:
        >>> w_ih, w_hh = np.ones((3, 2)), np.zeros((3, 1))  # H=1
        >>> output, h = gru_step(np.array([[1.0, 0.0]]), None, [(w_ih, w_hh, None, None)])
        >>> np.round(output, 4)
        array([[0.2048]])
    """
    output, (h_new,) = gated_step(
        "gru", x, (h,), params if type(params) is tuple else tuple(params), backend
    )
    return output, h_new


# The compiled gated step, either cell (None without the extension).
_GATED_STEP = None if _kernels is None else _kernels.gated_step


def gated_step(
    cell: str,
    x: Any,
    states: tuple[Any, ...],
    params: tuple,
    backend: str,
    layer: StepLayer | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The one door of the gated streaming steps: :func:`lstm_step`, :func:`gru_step`, the
    layers' ``step`` and the cells. ``states``: (h, c) for the LSTM, (h,) for the GRU.
    ``layer`` as in :func:`step`; returns (output, new states), unbatched like x."""
    # The common case of _backend.compiled inline, and the kernel looked up once (a call,
    # an f-string and two attribute lookups cost the step about 0.3 us).
    if backend is AUTO and ENV_KEY not in ENVIRON and _GATED_STEP is not None:
        kernel = _GATED_STEP
    else:
        kernels = compiled(backend)
        kernel = None if kernels is None else kernels.gated_step
    if layer is not None and layer.refusal is not None:
        raise ValueError(layer.refusal)
    if kernel is not None and (layer is None or layer.lead):
        # Operands already exactly right: one C call, its checks in C (None: they are not),
        # taking the states as given and returning (output, new states) as this door does.
        result = kernel(x, states, params)
        if result is not None:
            return result
    x2, s3, layers, batched = _validation.gated_step_args(x, states, params, layer, cell)
    result = None
    if kernel is not None:
        result = kernel(x2, s3, layers)  # None: an empty size
    if result is None:
        flat = getattr(_reference, f"{cell}_step")(x2, *s3, layers)
        result = flat[0], flat[1:]
    output, new = result
    if batched:
        return output, new
    return output[0], tuple(s[:, 0] for s in new)


# --------------------------------------------------------------------------------------------
# A first layer fed token ids: the input projection gathered from a table


class GatheredOutput(NamedTuple):
    """What :func:`gathered_forward` returns."""

    states: tuple[np.ndarray, ...]
    """Every step's states, each (T, B, H); (h,), or an LSTM's (h, c)."""
    workspace: Workspace
    """What :func:`gathered_backward` needs."""


class GatheredGrads(NamedTuple):
    """Gradients of the loss through :func:`gathered_forward`, summed over all time steps."""

    d_table: np.ndarray
    """(V, G*H): of the table's rows (one-hot input: ``dw_ih.T``)."""
    d_states0: tuple[np.ndarray, ...]
    """(dh0,) (B, H), an LSTM's (dh0, dc0), also when they were None."""
    dw_hh: np.ndarray
    """(G*H, H)."""
    db_ih: np.ndarray | None
    """(G*H,), None without biases (the Elman cell's and the LSTM's equal ``db_hh``)."""
    db_hh: np.ndarray | None
    """(G*H,), None without biases."""


class GatheredBuffers:
    """Arrays kept across :func:`gathered_forward` and :func:`gathered_backward` calls, so
    that a training loop allocates nothing per step: pass one object to every call of a loop.
    A call's results are then views into it, valid until the next call with it (a forward's
    until its backward has run). It adapts to the calls' cell, sizes and dtype (a change
    starts it afresh); the reference backend ignores it."""

    __slots__ = ("_arrays", "_key")

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._arrays: dict[str, np.ndarray] = {}

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return GatheredBuffers, ()  # (scratch: a copy starts empty)

    def _for(self, key: tuple[Any, ...]) -> dict[str, np.ndarray]:
        """The arrays of calls of ``key`` = (cell, T, B, V, H, dtype)."""
        if key != self._key:
            self._key, self._arrays = key, {}
        return self._arrays


def _kept(
    buffers: GatheredBuffers | None, cell: str, sizes: dict[str, int], dtype: Any
) -> dict[str, np.ndarray] | None:
    """The kernels' kept arrays for a call of these checked sizes (None: none kept). The key
    fixes every shape the kernels keep, so they may trust what they find."""
    if buffers is None:
        return None
    if not isinstance(buffers, GatheredBuffers):
        raise TypeError(f"buffers must be a GatheredBuffers or None, got {type(buffers).__name__}")
    key = (cell, sizes["T"], sizes["B"], sizes["V"], sizes["H"], np.dtype(dtype))
    return buffers._for(key)


_GATHERED_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_GATHERED_FORWARD_LAYOUT = {
    "table": ("V", "G"),
    "ids": ("T", "B"),
    "w_hh": ("G", "H"),
    "h0": ("B", "H"),
    "c0": ("B", "H"),
    "b_ih": ("G",),
    "b_hh": ("G",),
}
_GATHERED_BACKWARD_LAYOUT = {
    "table": ("V", "G"),  # (only its dtype and sizes: the workspace's table)
    "ids": ("T", "B"),
    "w_hh": ("G", "H"),
    "h0": ("B", "H"),
    "c0": ("B", "H"),
    "b_hh": ("G",),
    "dh": ("T", "B", "H"),
    "dc": ("T", "B", "H"),
    "h": ("T", "B", "H"),
    "c": ("T", "B", "H"),
}


def _gathered_call(
    cell: str, named: dict[str, Any], layout: dict[str, tuple[str, ...]], nonlinearity: str,
    backend: str,
) -> tuple[dict[str, Any], dict[str, int], ModuleType]:  # fmt: skip
    """The door of the gathered calls: options, then the arrays; the implementation (the
    reference for empty sizes, or a build without the gathered kernels)."""
    check_choice("cell", cell, tuple(_GATHERED_GATES))
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    kernels = compiled(backend)
    if cell != "lstm" and (named.get("c0") is not None or named.get("dc") is not None):
        raise ValueError(f"c0 and dc are an LSTM's: pass None for cell={cell!r}")
    arrays, sizes = _validation.gathered_arrays(
        named, layout, _GATHERED_GATES[cell], None if kernels is None else BLAS_INT_MAX
    )
    name = f"{cell}_forward_gathered"
    use = kernels is not None and min(sizes.values()) > 0 and hasattr(kernels, name)
    return arrays, sizes, (kernels if use else _reference)


def _one_hot_input(ids: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, w_ih) of the plain call equal to a gathered one: x one-hot (T, B, V), w_ih =
    table.T, so that x @ w_ih.T is table[ids] exactly (the reference's way)."""
    x = np.zeros((*ids.shape, table.shape[0]), dtype=table.dtype)
    np.put_along_axis(x, ids[..., None], 1, axis=-1)
    return x, np.ascontiguousarray(table.T)


def _gathered_run(
    cell: str,
    impl: ModuleType,
    a: dict[str, Any],
    b: np.ndarray | None,
    nonlinearity: str,
    kept: dict[str, np.ndarray] | None = None,
) -> tuple[tuple[np.ndarray, ...], Any]:
    """The forward's (states, the backward's data) on ``impl``."""
    ids, table, w_hh, h0 = a["ids"], a["table"], a["w_hh"], a["h0"]
    if impl is not _reference:
        if cell == "rnn":
            h = impl.rnn_forward_gathered(ids, table, h0, w_hh, b, nonlinearity, kept)
            return (h,), None
        if cell == "lstm":
            h, c, data = impl.lstm_forward_gathered(ids, table, h0, a["c0"], w_hh, b, True, kept)
            return (h, c), data
        h, data = impl.gru_forward_gathered(ids, table, h0, w_hh, b, a["b_hh"], True, kept)
        return (h,), data
    x, w_ih = _one_hot_input(ids, table)
    if cell == "rnn":
        return (impl.rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity),), None
    if cell == "lstm":
        h, c, data = impl.lstm_forward(x, h0, a["c0"], w_ih, w_hh, b, None, True)
        return (h, c), data
    h, data = impl.gru_forward(x, h0, w_ih, w_hh, b, a["b_hh"], True)
    return (h,), data


def gathered_forward(
    cell: str,
    ids: Any,
    table: Any,
    h0: Any | None,
    c0: Any | None,
    w_hh: Any,
    b_ih: Any | None = None,
    b_hh: Any | None = None,
    *,
    nonlinearity: str = "tanh",
    backend: str = "auto",
    buffers: GatheredBuffers | None = None,
) -> GatheredOutput:
    """A layer's training forward over token ids whose input projection is a row of ``table``
    per id: the same as the cell's forward (:func:`rnn_forward`, :func:`lstm_forward`,
    :func:`gru_forward`) on inputs x with ``x[t, b] @ w_ih.T == table[ids[t, b]]``, without
    the (T*B, D) x (D, G*H) product.

    For one-hot input ``table`` is ``w_ih.T``; for an embedding E (V, D), ``E @ w_ih.T``.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"`` (G = 1, 4, 3 gate rows per unit).
        ids: (T, B) integers in [0, V).
        table: (V, G*H), float32 or float64 (it fixes the dtype).
        h0: (B, H) or None (zeros); c0: an LSTM's (B, H) or None.
        w_hh: (G*H, H).
        b_ih, b_hh: (G*H,) each (PyTorch's ``bias_ih_l0``, ``bias_hh_l0``), or both None.
        nonlinearity: the Elman cell's (``"tanh"`` or ``"relu"``).
        backend: as in :func:`rnn_forward`.
        buffers: a :class:`GatheredBuffers` to compute in (the results are then views into
            it), or None (new arrays).

    Returns:
        GatheredOutput(states, workspace): (h,) or an LSTM's (h, c), each (T, B, H), and what
        :func:`gathered_backward` needs.

    Raises:
        TypeError: a non-float table, ids not integers, dtypes that differ.
        ValueError: an unknown cell, nonlinearity or backend; an id out of range; a shape that
            disagrees with the others; one bias None; c0 for another cell than the LSTM.

    Examples:
        >>> w_ih, w_hh = np.full((3, 2), 0.5), np.zeros((3, 1))  # GRU, H=1, V=2
        >>> out = gathered_forward("gru", [[0], [1]], w_ih.T, None, None, w_hh)
        >>> bool(np.allclose(out.states[0], gru_forward(np.eye(2)[[[0], [1]]], None, w_ih,
        ...                                              w_hh).h))
        True
    """
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both None")
    named = {"table": table, "ids": ids, "w_hh": w_hh, "h0": h0, "c0": c0,
             "b_ih": b_ih, "b_hh": b_hh}  # fmt: skip
    a, sizes, impl = _gathered_call(cell, named, _GATHERED_FORWARD_LAYOUT, nonlinearity, backend)
    # The Elman cell and the LSTM take one bias (b_ih + b_hh), the GRU both.
    b = a["b_ih"] if b_ih is None or cell == "gru" else a["b_ih"] + a["b_hh"]
    kept = _kept(buffers, cell, sizes, a["table"].dtype)
    states, data = _gathered_run(cell, impl, a, b, nonlinearity, kept)
    key = (sizes["T"], sizes["B"], sizes["V"], sizes["H"], sizes["H"])
    ws = Workspace(f"{cell}-gathered", impl, key, states[0].dtype, b, (data, a["table"]))
    return GatheredOutput(states, ws)


def gathered_backward(
    cell: str,
    dh: Any,
    dc: Any | None,
    ids: Any,
    h0: Any | None,
    c0: Any | None,
    states: tuple[Any, ...],
    workspace: Workspace,
    w_hh: Any,
    b_hh: Any | None = None,
    *,
    nonlinearity: str = "tanh",
    backend: str = "auto",
    buffers: GatheredBuffers | None = None,
) -> GatheredGrads:
    """Backpropagation through time for :func:`gathered_forward`, without the input's
    gradient: the table's gradient is the gate gradients summed by id (no (T*B)-row product).

    Args:
        cell: as in the forward.
        dh: (T, B, H), dL/dh[t] from outside the recurrence; dc: an LSTM's (T, B, H) dL/dc[t]
            or None.
        ids, h0, c0, w_hh, b_hh, nonlinearity: the forward's (``b_hh`` None: no biases).
        states, workspace: the forward's results.
        backend: as in :func:`rnn_forward`.
        buffers: as in the forward (the forward's own: its results stay valid).

    Returns:
        GatheredGrads(d_table, d_states0, dw_hh, db_ih, db_hh).

    Raises:
        TypeError: as the forward, or ``workspace`` not a gathered forward's of this cell.
        ValueError: as the forward, or ``workspace`` from a call of other sizes or dtype.
    """
    ws = workspace
    if not isinstance(ws, Workspace) or ws.cell != f"{cell}-gathered":
        raise TypeError(
            f"workspace must be what gathered_forward({cell!r}, ...) returned, got "
            f"{type(ws).__name__}" + ("" if not isinstance(ws, Workspace) else f" of {ws.cell}")
        )
    states = tuple(states)
    if len(states) != (2 if cell == "lstm" else 1):
        raise ValueError(
            f"states must be the forward's: (h,), an LSTM's (h, c); got {len(states)} arrays"
        )
    named = {"table": ws.data[1], "ids": ids, "w_hh": w_hh, "h0": h0, "c0": c0, "b_hh": b_hh,
             "dh": dh, "dc": dc, "h": states[0]}  # fmt: skip
    if cell == "lstm":
        named["c"] = states[1]
    layout = _GATHERED_BACKWARD_LAYOUT
    if cell != "lstm":
        layout = {k: v for k, v in layout.items() if k != "c"}
    a, sizes, impl = _gathered_call(cell, named, layout, nonlinearity, backend)
    key = (sizes["T"], sizes["B"], sizes["V"], sizes["H"], sizes["H"])
    if ws.sizes != key or ws.dtype != a["table"].dtype:
        raise ValueError(
            f"workspace is from a gathered_forward of sizes (T, B, V, H, H) = {ws.sizes} and "
            f"dtype {ws.dtype}, but the arrays have {key} and {a['table'].dtype}"
        )
    if (ws.bias is None) != (a["b_hh"] is None):
        raise ValueError("b_hh must be None exactly when the forward had no biases")
    data = ws.data[0]
    if cell != "rnn" and (ws.impl is not impl or data is None):
        # another backend's, or used up (the compiled LSTM's or GRU's): recompute it
        data = _gathered_run(cell, impl, {**a, "table": ws.data[1]}, ws.bias, nonlinearity)[1]
    elif impl is not _reference and cell != "rnn":
        object.__setattr__(ws, "data", (None, ws.data[1]))  # the backward writes over it
    kept = _kept(buffers, cell, sizes, a["table"].dtype)
    grads = _gathered_grads(cell, impl, a, data, ws, nonlinearity, sizes["V"], kept)
    if ws.bias is None:  # (the Elman and LSTM kernels sum a db all the same)
        return grads._replace(db_ih=None, db_hh=None)
    return grads


def _gathered_grads(
    cell: str, impl: ModuleType, a: dict[str, Any], data: Any, ws: Workspace,
    nonlinearity: str, V: int, kept: dict[str, np.ndarray] | None,
) -> GatheredGrads:  # fmt: skip
    """The backward's gradients on ``impl``, from the checked arrays ``a``."""
    ids, h0, c0, w_hh, b_hh, dh, h = (
        a["ids"],
        a["h0"],
        a["c0"],
        a["w_hh"],
        a["b_hh"],
        a["dh"],
        a["h"],
    )
    if impl is not _reference:
        if cell == "rnn":
            d_table, dh0, dw_hh, db = impl.rnn_backward_gathered(
                dh, ids, h0, h, w_hh, nonlinearity, V, kept
            )
            return GatheredGrads(d_table, (dh0,), dw_hh, db, db)
        if cell == "lstm":
            d_table, dh0, dc0, dw_hh, db = impl.lstm_backward_gathered(
                dh, a["dc"], ids, h0, c0, h, a["c"], data, w_hh, V, kept
            )
            return GatheredGrads(d_table, (dh0, dc0), dw_hh, db, db)
        d_table, dh0, dw_hh, db_ih, db_hh = impl.gru_backward_gathered(
            dh, ids, h0, h, data, w_hh, b_hh, V, kept
        )
        return GatheredGrads(d_table, (dh0,), dw_hh, db_ih, db_hh)
    x, w_ih = _one_hot_input(ids, ws.data[1])
    if cell == "rnn":
        _, dh0, dw_ih, dw_hh, db = impl.rnn_backward(dh, x, h0, h, w_ih, w_hh, nonlinearity)
        return GatheredGrads(dw_ih.T, (dh0,), dw_hh, db, db)
    if cell == "lstm":
        g = impl.lstm_backward(dh, a["dc"], x, h0, c0, h, a["c"], data, w_ih, w_hh, None)
        return GatheredGrads(g[3].T, (g[1], g[2]), g[4], g[5], g[5])
    g = impl.gru_backward(dh, x, h0, h, data, w_ih, w_hh, b_hh)
    return GatheredGrads(g[2].T, (g[1],), g[3], g[4], g[5])


# ----------------------------------------------------------------------------------------------
# A decoder and its softmax cross-entropy, forward and backward in one call


class DecoderGrads(NamedTuple):
    """What :func:`linear_cross_entropy` returns."""

    loss: float
    """The mean cross-entropy over the N examples."""
    d_logits_t: np.ndarray
    """(V, N): the gradient of the loss with respect to the logits, transposed."""
    dx: np.ndarray
    """(N, H)."""
    dweight: np.ndarray
    """(V, H)."""
    dbias: np.ndarray | None
    """(V,), None without a bias."""


def linear_cross_entropy(
    x: Any,
    weight: Any,
    bias: Any | None,
    targets: Any,
    *,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    backend: str = "auto",
) -> DecoderGrads:
    """The mean softmax cross-entropy of the logits ``x @ weight.T + bias`` against
    ``targets``, and its gradients: a linear decoder and its loss, forward and backward in one
    call (:func:`rnnfast.softmax_cross_entropy` of :class:`rnnfast.nn.Linear`'s output, and
    their backward), the logits written once.

    Args:
        x: (N, H), float32 or float64 (it fixes the dtype).
        weight: (V, H); bias: (V,) or None.
        targets: (N,) integer classes in [0, V).
        out: None (new arrays), or the arrays to write the results into: (d_logits_t (V, N),
            dx (N, H), dweight (V, H), dbias (V,) or None exactly when ``bias`` is), each a
            writeable C-contiguous array of x's dtype, none overlapping another or an input.
        backend: as in :func:`rnn_forward`.

    Returns:
        DecoderGrads(loss, d_logits_t, dx, dweight, dbias) (the arrays ``out``'s if given).

    Raises:
        TypeError: non-float x, dtypes that differ, targets not integers, ``out`` not arrays of
            x's dtype.
        ValueError: a shape that disagrees with the others, N or V zero, a target out of range,
            ``out`` arrays not writeable, not C-contiguous or overlapping.

    Examples:
        >>> g = linear_cross_entropy(np.zeros((2, 3)), np.zeros((4, 3)), None, [1, 3])
        >>> round(g.loss, 4)  # log(4): a uniform guess over 4 classes
        1.3863
        >>> g.dx.shape, g.dweight.shape
        ((2, 3), (4, 3))
    """
    kernels = compiled(backend)
    limit = None if kernels is None else BLAS_INT_MAX
    arrays, sizes = _validation.decoder_arrays(x, weight, bias, targets, out, limit)
    x, weight, bias, t, z, dx, dweight, dbias = arrays
    dtype, N, H, V = x.dtype, sizes["N"], sizes["H"], sizes["V"]
    if out is None:
        z, dx, dweight = np.empty((V, N), dtype), np.empty((N, H), dtype), np.empty((V, H), dtype)
        dbias = None if bias is None else np.empty(V, dtype)
    use = kernels is not None and H > 0 and hasattr(kernels, "linear_cross_entropy")
    impl = kernels if use else _reference
    loss = impl.linear_cross_entropy(x, weight, bias, t, z, dx, dweight, dbias)
    return DecoderGrads(loss, z, dx, dweight, dbias)


# ----------------------------------------------------------------------------------------------
# An optimizer's update of a flat parameter buffer


def adam_update(
    params: np.ndarray,
    grads: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    step: int,
    backend: str = "auto",
) -> None:
    """Adam's update (PyTorch's, without weight decay) of 1-D ``params`` in place from
    ``grads``, after ``step`` steps, its moments ``exp_avg`` and ``exp_avg_sq`` updated in place:
    elementwise the operations of :class:`rnnfast.Adam`'s update in the same order, so the same
    numbers, in one pass over the arrays.

    Args:
        params, exp_avg, exp_avg_sq: writeable C-contiguous 1-D float arrays of one dtype and
            length, none overlapping another or ``grads``.
        grads: a C-contiguous array like them (read only).
        lr, betas, eps: the optimizer's (betas in [0, 1)).
        step: the step count, from 1 at the first update.
        backend: as in :func:`rnn_forward`.

    Raises:
        TypeError: not NumPy float arrays of one dtype.
        ValueError: other shapes, read-only or non-contiguous arrays, overlapping arrays, betas
            out of range, a step below 1.
    """
    kernels = compiled(backend)
    arrays = {"params": params, "grads": grads, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    _validation.flat_update_arrays(arrays, written=("params", "exp_avg", "exp_avg_sq"))
    beta1, beta2 = (float(b) for b in betas)
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"betas must be in [0, 1), got {betas}")
    step = _validation.check_int("step", step, 1)
    constants = _reference.adam_constants(params.dtype, lr, beta1, beta2, eps, step)
    impl = _reference if kernels is None else kernels
    impl.adam_update(params, grads, exp_avg, exp_avg_sq, *constants)
