"""Validation and backend dispatch: the only door to the kernels.

Every array is checked here (dtype, rank, every dimension against the others) and made
C-contiguous, aligned and native-endian before a kernel sees it, because the kernels run without
bounds checks. A bad argument is a ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong
shape or value) naming the argument, the expected and the actual.

Backends: ``"cython"`` (compiled kernels), ``"numpy"`` (the reference in ``_reference.py``) and
``"auto"``: compiled if the extension imported, else the reference with one warning. The
environment variable ``RNNFAST_BACKEND`` (``auto``, ``cython`` or ``numpy``) sets what ``"auto"``
means, so ``RNNFAST_BACKEND=numpy`` runs a whole program on the reference.

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

import os
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from rnnfast import _reference

try:
    from rnnfast._core import blas as _blas
    from rnnfast._core import kernels as _kernels
except ImportError as _exc:  # a source checkout without a build, or a broken wheel
    _kernels = None
    _COMPILED_IMPORT_ERROR: ImportError | None = _exc
    BLAS_INT_MAX = np.iinfo(np.int32).max
else:
    _COMPILED_IMPORT_ERROR = None
    BLAS_INT_MAX = int(_blas.BLAS_INT_MAX)
    if os.environ.get("RNNFAST_SIMD"):  # the kernels start at the widest level the CPU has
        _kernels.set_simd_level(os.environ["RNNFAST_SIMD"])

HAVE_COMPILED: bool = _kernels is not None
"""True when the compiled kernels imported."""

BACKENDS = ("auto", "cython", "numpy")
NONLINEARITIES = ("tanh", "relu")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT32, _FLOAT64 = FLOAT_DTYPES

_warned_fallback = False


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


_COMPILED = ("cython", _kernels)
_ENV_KEY = os.environ.encodekey("RNNFAST_BACKEND") if hasattr(os.environ, "encodekey") else None
# The dict behind os.environ, which it keeps current (assignments, putenv, monkeypatch.setenv):
# a lookup in it costs a twentieth of os.environ.get's microsecond, which matters to the
# streaming step. None where os.environ has no such dict.
_ENV_DATA = getattr(os.environ, "_data", None) if _ENV_KEY is not None else None
if not isinstance(_ENV_DATA, dict):
    _ENV_DATA = None


def _environment_backend() -> str:
    """RNNFAST_BACKEND, read at every call (programs and tests change it), from _ENV_DATA."""
    if _ENV_DATA is None:
        return os.environ.get("RNNFAST_BACKEND", "auto")
    raw = _ENV_DATA.get(_ENV_KEY)
    return "auto" if raw is None else os.environ.decodevalue(raw)


def _compiled_by_default(backend: Any) -> bool:
    """The common case: ``backend`` is "auto", RNNFAST_BACKEND is unset and the compiled
    extension is there. False says nothing: :func:`_resolve_backend` decides."""
    return (
        _kernels is not None
        and _ENV_DATA is not None
        and type(backend) is str
        and backend == "auto"
        and _ENV_KEY not in _ENV_DATA
    )


def _no_default_step(*args: Any) -> None:
    """_rnn_step_default without the compiled extension (or os.environ's dict): always None."""
    return None


def _rnn_step_default(x: Any, h: Any, layers: Any, nonlinearity: str, backend: Any) -> Any:
    """The compiled step if _compiled_by_default(backend) and every operand is plain (as
    _rnn_step_plain), else None: the layers' streaming step (RNN.step, RNNCell)."""
    if (
        type(layers) is tuple
        and type(backend) is str
        and backend == "auto"
        and _ENV_DATA is not None
        and _ENV_KEY not in _ENV_DATA
        and _kernels is not None
    ):
        return _kernels.rnn_step(x, h, layers, nonlinearity)
    return None


def _resolve_backend(backend: str) -> tuple[str, ModuleType]:
    """Turn a backend name into ("cython" | "numpy", implementing module)."""
    global _warned_fallback
    if _compiled_by_default(backend):
        return _COMPILED
    _check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        backend = _environment_backend().strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(
                f"environment variable RNNFAST_BACKEND must be one of {BACKENDS}, "
                f"got {os.environ['RNNFAST_BACKEND']!r}"
            )
    if backend == "numpy":
        return "numpy", _reference
    if _kernels is not None:
        return "cython", _kernels
    if backend == "cython":
        raise RuntimeError(
            "backend='cython' was requested but rnnfast's compiled extension did not import "
            f"({_COMPILED_IMPORT_ERROR}); reinstall with `pip install .` or use backend='numpy'"
        )
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            "rnnfast's compiled extension did not import "
            f"({_COMPILED_IMPORT_ERROR}); using the NumPy reference, which is slower",
            RuntimeWarning,
            stacklevel=3,
        )
    return "numpy", _reference


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``choices``, else a ValueError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_nonlinearity(nonlinearity: str) -> None:
    _check_choice("nonlinearity", nonlinearity, NONLINEARITIES)


def _as_array(name: str, value: Any, dtype: np.dtype | None) -> np.ndarray:
    """``value`` as an ndarray of a native float dtype: ``dtype``, or float32/64 if None."""
    if type(value) is np.ndarray:  # the common case, decided without conversions
        dt = value.dtype
        if (dt == _FLOAT64 or dt == _FLOAT32) if dtype is None else dt == dtype:
            return value
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain array, got a masked array: its mask would be ignored; "
            f"pass {name}.filled(...) or {name}.data explicitly"
        )
    try:
        arr = np.asarray(value)
    except MemoryError:
        raise
    except Exception as exc:  # ragged lists, objects whose __array__ raises anything at all
        raise TypeError(
            f"{name} must be an array of float32 or float64, got {type(value).__name__} "
            f"that NumPy cannot convert ({type(exc).__name__}: {exc})"
        ) from exc
    if dtype is None:
        if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    elif arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but x has dtype {dtype}; "
            "all arrays must share one dtype, float32 or float64"
        )
    return arr


def _check_shape(name: str, arr: np.ndarray, labels: Sequence[str], sizes: dict[str, int]) -> None:
    """Check ``arr.shape`` against the named dimensions, learning unknown ones from it."""
    if arr.ndim == len(labels):  # the common case: no message to build
        for label, actual in zip(labels, arr.shape, strict=True):
            if sizes.setdefault(label, actual) != actual:
                break
        else:
            return
    expected_text = "(" + ", ".join(labels) + ("," if len(labels) == 1 else "") + ")"
    if arr.ndim != len(labels):
        raise ValueError(
            f"{name} must have {len(labels)} dimensions {expected_text}, "
            f"got {arr.ndim} with shape {arr.shape}"
        )
    for label, actual in zip(labels, arr.shape, strict=True):
        sizes.setdefault(label, actual)
    expected = tuple(sizes[label] for label in labels)
    if arr.shape != expected:
        known = ", ".join(f"{label}={sizes[label]}" for label in dict.fromkeys(labels))
        raise ValueError(
            f"{name} must have shape {expected_text} = {expected} ({known}), got {arr.shape}"
        )


def _kernel_ready(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous, aligned, native-endian: copies only when ``arr`` is not already."""
    flags = arr.flags
    if flags.c_contiguous and flags.aligned and arr.dtype == dtype:
        return arr
    return np.require(arr, dtype=dtype, requirements=("C", "A"))


def _check_blas_sizes(sizes: dict[str, int]) -> None:
    """Refuse sizes whose GEMM operands would overflow the BLAS integer."""
    rows = sizes["T"] * sizes["B"]
    if max(rows, sizes["H"]) * max(sizes["D"], sizes["H"]) <= BLAS_INT_MAX:
        return
    for label, count in (
        ("T * B * D (the input x)", rows * sizes["D"]),
        ("T * B * H (the states h)", rows * sizes["H"]),
        ("H * D (w_ih)", sizes["H"] * sizes["D"]),
        ("H * H (w_hh)", sizes["H"] * sizes["H"]),
    ):
        if count > BLAS_INT_MAX:
            raise ValueError(
                f"{label} = {count} elements exceeds the BLAS limit of {BLAS_INT_MAX} "
                "elements per matrix; split the sequence or the batch"
            )


def _check_flag(name: str, value: Any) -> bool:
    """A keyword that must be a bool (``np.bool_`` too): not a truthy string or a number."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _all_finite(arr: np.ndarray) -> bool:
    """True when ``arr`` holds no NaN and no Inf.

    min and max propagate NaN and reach any infinity, and unlike ``np.isfinite(arr).all()`` they
    allocate no temporary the size of ``arr``.
    """
    return arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


def _check_all_finite(arrays: dict[str, np.ndarray | None]) -> None:
    """Raise a ValueError naming the first array (in argument order) with a NaN or an Inf."""
    for name, arr in arrays.items():
        if arr is not None and not _all_finite(arr):
            raise ValueError(
                f"{name} contains NaN or Inf (check_finite=True); pass check_finite=False to let "
                "non-finite values propagate as in NumPy"
            )


def _plain_path(nonlinearity: str, backend: str, check_finite: Any) -> bool:
    """Whether to try the kernels' plain-array entry points (which check the arrays in C and
    decline anything needing conversion or an error message). The options are checked here
    first, in _prepare's order, so errors are the same either way."""
    if check_finite is not False:
        return False  # _prepare checks the flag and the finiteness
    _check_nonlinearity(nonlinearity)
    return _resolve_backend(backend)[1] is _kernels


def _prepare(
    named: dict[str, Any],
    layout: dict[str, tuple[str, ...]],
    nonlinearity: str,
    backend: str,
    check_finite: bool = False,
) -> tuple[dict[str, np.ndarray | None], dict[str, int], ModuleType]:
    """Validate all arrays of a call; return them kernel-ready, the sizes and the backend.

    Order: options, then each array's conversion, dtype and shape, then sizes against the BLAS
    integer, then the copies that make arrays kernel-ready (where a huge zero-strided input would
    hit ``MemoryError``), then, if asked, finiteness on those copies.
    """
    check_finite = _check_flag("check_finite", check_finite)
    _check_nonlinearity(nonlinearity)
    backend_name, impl = _resolve_backend(backend)
    x = _as_array("x", named["x"], None)
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {}
    arrays: dict[str, np.ndarray | None] = {}
    for name, labels in layout.items():
        value = named[name]
        if value is None and name in ("h0", "b"):
            arrays[name] = None
            continue
        arr = x if name == "x" else _as_array(name, value, dtype)
        _check_shape(name, arr, labels, sizes)
        arrays[name] = arr
    if backend_name == "cython" and min(sizes.values()) == 0:
        # Empty sizes involve no arithmetic worth compiling, and would hand BLAS zero leading
        # dimensions: the reference computes them.
        impl = _reference
    if impl is _kernels:
        _check_blas_sizes(sizes)
    ready = {k: (None if v is None else _kernel_ready(v, dtype)) for k, v in arrays.items()}
    if check_finite:
        _check_all_finite({name: ready[name] for name in named})  # in argument order
    return ready, sizes, impl


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
    """
    if _plain_path(nonlinearity, backend, check_finite):
        h = _kernels.rnn_forward_plain(x, h0, w_ih, w_hh, b, nonlinearity, BLAS_INT_MAX)
        if h is not None:
            return h
    arrays, _, impl = _prepare(
        {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b": b},
        _FORWARD_LAYOUT,
        nonlinearity,
        backend,
        check_finite,
    )
    return impl.rnn_forward(
        arrays["x"], arrays["h0"], arrays["w_ih"], arrays["w_hh"], arrays["b"], nonlinearity
    )


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
    if _plain_path(nonlinearity, backend, check_finite):
        grads = _kernels.rnn_backward_plain(dh, x, h0, h, w_ih, w_hh, nonlinearity, BLAS_INT_MAX)
        if grads is not None:
            return RNNGrads(*grads)
    arrays, _, impl = _prepare(
        {"dh": dh, "x": x, "h0": h0, "h": h, "w_ih": w_ih, "w_hh": w_hh},
        _BACKWARD_LAYOUT,
        nonlinearity,
        backend,
        check_finite,
    )
    grads = impl.rnn_backward(
        arrays["dh"],
        arrays["x"],
        arrays["h0"],
        arrays["h"],
        arrays["w_ih"],
        arrays["w_hh"],
        nonlinearity,
    )
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
    """
    _check_nonlinearity(nonlinearity)
    layers = params if type(params) is tuple else tuple(params)
    result = _rnn_step_plain(x, h, layers, nonlinearity, backend)
    if result is not None:
        return result
    return _rnn_step_checked(x, h, layers, nonlinearity, backend)


def _rnn_step_plain(
    x: Any, h: Any | None, layers: tuple, nonlinearity: str, backend: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The compiled step when that backend is in use and every operand is already exactly
    what it needs (checked in C: dtype, contiguity, shapes); else None.

    rnn_step's fast half, and the layers' streaming path: they then convert their arguments
    their own way (to the layer's dtype) and call :func:`rnn_step`. ``layers`` must be a tuple
    and ``nonlinearity`` valid (rnn_step and the layers' constructors check it).
    """
    if not _compiled_by_default(backend) and _resolve_backend(backend)[1] is not _kernels:
        return None
    return _kernels.rnn_step(x, h, layers, nonlinearity)


def _rnn_step_checked(
    x: Any, h: Any | None, layers: tuple, nonlinearity: str, backend: str
) -> tuple[np.ndarray, np.ndarray]:
    """rnn_step through rnn_forward (length-1 sequences), with every argument validated."""
    if not layers:
        raise ValueError("params must hold at least one layer's (w_ih, w_hh, b_ih, b_hh)")
    x = _as_array("x", x, None)
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {}
    _check_shape("x", x, ("B", "D"), sizes)
    first = layers[0]
    if not isinstance(first, Sequence) or len(first) != 4:
        raise ValueError("params[0] must be a tuple (w_ih, w_hh, b_ih, b_hh)")
    w_hh0 = _as_array("params[0] w_hh", first[1], dtype)
    _check_shape("params[0] w_hh", w_hh0, ("H", "H"), sizes)
    sizes["L"] = len(layers)
    if h is not None:
        h = _as_array("h", h, dtype)
        _check_shape("h", h, ("L", "B", "H"), sizes)
    h_new = np.empty((sizes["L"], sizes["B"], sizes["H"]), dtype=dtype)
    inp = x
    for k, layer in enumerate(layers):
        if not isinstance(layer, Sequence) or len(layer) != 4:
            raise ValueError(f"params[{k}] must be a tuple (w_ih, w_hh, b_ih, b_hh)")
        w_ih, w_hh, b_ih, b_hh = layer
        if (b_ih is None) != (b_hh is None):
            raise ValueError(f"params[{k}]: b_ih and b_hh must both be arrays or both None")
        b = None
        if b_ih is not None:
            b_ih = _as_array(f"params[{k}] b_ih", b_ih, dtype)
            b_hh = _as_array(f"params[{k}] b_hh", b_hh, dtype)
            _check_shape(f"params[{k}] b_ih", b_ih, ("H",), sizes)
            _check_shape(f"params[{k}] b_hh", b_hh, ("H",), sizes)
            b = b_ih + b_hh
        h_new[k] = rnn_forward(
            inp[None],
            None if h is None else h[k],
            w_ih,
            w_hh,
            b,
            nonlinearity=nonlinearity,
            backend=backend,
        )[0]
        inp = h_new[k]
    return h_new[-1].copy(), h_new
