"""The Elman RNN as functions on arrays: the only door to the kernels.

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
from typing import Any, NamedTuple

import numpy as np

from rnnfast import _reference, _validation
from rnnfast._backend import BACKENDS, BLAS_INT_MAX, HAVE_COMPILED, compiled
from rnnfast._validation import FLOAT_DTYPES, NONLINEARITIES, StepLayer, check_choice, check_flag

__all__ = [
    "BACKENDS",
    "BLAS_INT_MAX",
    "FLOAT_DTYPES",
    "HAVE_COMPILED",
    "NONLINEARITIES",
    "RNNGrads",
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
