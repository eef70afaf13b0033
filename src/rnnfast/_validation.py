"""Every check of user input, in one place: the functional API, the layers, the models, the
losses, the optimizers, the datasets, the diagnostics and the command line all use these.

A bad argument is a ``TypeError`` (wrong kind or dtype) or a ``ValueError`` (wrong shape or
value) whose message starts with the argument's name and gives the expected and the actual.

Array policy: array-likes are converted with ``np.asarray`` (torch tensors through
``.detach().cpu().numpy()``); anything NumPy cannot convert is a ``TypeError`` naming the
argument, and masked arrays are refused rather than silently unmasked. Inputs are never written
to: :func:`kernel_ready` copies what is not C-contiguous, aligned and native-endian.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Seed = int | np.random.Generator | None
"""What every ``seed=`` argument takes: an int, a ``np.random.Generator`` or None (fresh)."""

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
NONLINEARITIES = ("tanh", "relu")

_FLOAT32, _FLOAT64 = FLOAT_DTYPES


# --------------------------------------------------------------------------------------------
# Scalars and options


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``choices``, else a ValueError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """A keyword that must be a bool (``np.bool_`` too): not a truthy string or a number."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= minimum; booleans and floats are a TypeError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative(
    name: str, value: Any, below: float | None = None, *, finite: bool = False
) -> float:
    """``value`` as a float >= 0 (and < ``below`` if given; finite if ``finite``). Booleans and
    non-numbers are a TypeError; NaN is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if not value >= 0 or (below is not None and value >= below):  # NaN fails too
        bound = "" if below is None else f" and < {below}"
        raise ValueError(f"{name} must be >= 0{bound}, got {value}")
    return value


def check_finite_nonnegative(name: str, value: Any) -> float:
    """``value`` as a float, finite and >= 0."""
    return check_nonnegative(name, value, finite=True)


def float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` as np.float32 or np.float64, else a TypeError naming the argument.

    ``None`` is refused rather than read as NumPy's default (``np.dtype(None)`` is float64, and
    ``np.dtype("float64") == None`` is True: a membership test alone lets None through).
    Anything ``np.dtype()`` refuses, whatever it raises, is the same TypeError.
    """
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except Exception:  # np.dtype raises TypeError, ValueError or whatever a __dtype__ raises
        dt = None
    if dt is None or not any(dt == f for f in FLOAT_DTYPES):
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}")
    return dt


# --------------------------------------------------------------------------------------------
# Arrays


def to_numpy(value: Any) -> Any:
    """A torch tensor (anything with ``.detach()``) as a NumPy array; anything else unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def asarray(name: str, value: Any, dtype: Any = None) -> np.ndarray:
    """``np.asarray`` (torch tensors through :func:`to_numpy`); any failure to convert, whatever
    the object raised, is a TypeError naming the argument."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain array, got a masked array: its mask would be ignored; "
            f"pass {name}.filled(...) or {name}.data explicitly"
        )
    try:
        return np.asarray(to_numpy(value), dtype=dtype)
    except MemoryError:
        raise
    except Exception as exc:  # ragged lists, objects whose __array__ raises anything at all
        raise TypeError(
            f"{name} must be an array of numbers, got {type(value).__name__} that NumPy cannot "
            f"convert ({type(exc).__name__}: {exc})"
        ) from exc


def as_float_array(
    name: str, value: Any, dtype: np.dtype | None = None, *, dtype_of: str = "the layer"
) -> np.ndarray:
    """``value`` as a float array.

    Args:
        name: the argument's name, for messages.
        value: an ndarray, torch tensor or array-like.
        dtype: the dtype the array must have, or None for float32 or float64.
        dtype_of: what fixed ``dtype``: a layer (``"the layer"``: Python sequences of numbers
            are converted to ``dtype``; arrays must already have it) or ``"x"`` (the functional
            API: every array, lists included, must convert to x's dtype by itself).
    """
    if type(value) is np.ndarray:  # the common case, decided without conversions
        dt = value.dtype
        if (dt == _FLOAT64 or dt == _FLOAT32) if dtype is None else dt == dtype:
            return value
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if (
        dtype is not None
        and dtype_of != "x"
        and not (isinstance(value, np.ndarray) or hasattr(value, "__array__"))
        and not hasattr(value, "detach")
    ):
        return asarray(name, value, dtype)  # a list of numbers, in the layer's dtype
    arr = asarray(name, value)
    if dtype is None:
        if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    elif arr.dtype.kind != "f" and dtype_of != "x":
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    elif arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but {dtype_of} has dtype {dtype}; convert it with "
            f"{name}.astype(np.{dtype.name})"
        )
    return arr


def as_int_array(name: str, value: Any) -> np.ndarray:
    """``value`` as an int64 array; floats and booleans are a TypeError."""
    if value is None:
        raise TypeError(f"{name} must be an array of integers, got None")
    arr = asarray(name, value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def as_ids(name: str, value: Any, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Token ids or class labels: integers in [0, num_classes), or ``ignore_index``."""
    ids = as_int_array(name, value)
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


def as_lengths(lengths: Any, B: int, T: int) -> np.ndarray:
    """Per-sequence valid lengths of a padded batch: (B,) integers in [1, T]."""
    lens = as_int_array("lengths", lengths)
    check_shape("lengths", lens, (B,), meaning="(batch,)")
    bad = (lens < 1) | (lens > T)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"lengths must be in [1, T] = [1, {T}] (the input's number of steps), "
            f"got lengths[{i}] = {lens[i]}"
        )
    return lens


def check_shape(
    name: str,
    arr: np.ndarray,
    dims: Sequence[int | str],
    sizes: dict[str, int] | None = None,
    meaning: str | None = None,
) -> None:
    """Check ``arr.shape`` against ``dims``: ints are fixed sizes, strings name dimensions that
    must agree across arguments (learned into ``sizes`` from the first array that has them).

    ``meaning`` words the expected shape in the message (e.g. ``"(batch, hidden_size)"``);
    without it the message spells the dimensions' names and the sizes known so far.
    """
    if sizes is None:
        sizes = {}
    if arr.ndim == len(dims):  # the common case: no message to build
        for dim, actual in zip(dims, arr.shape, strict=True):
            want = dim if type(dim) is int else sizes.setdefault(dim, actual)
            if want != actual:
                break
        else:
            return
    if meaning is not None:
        expected = tuple(d if type(d) is int else sizes.get(d, "?") for d in dims)
        raise ValueError(f"{name} must have shape {meaning} = {expected}, got {arr.shape}")
    expected_text = "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"
    if arr.ndim != len(dims):
        raise ValueError(
            f"{name} must have {len(dims)} dimensions {expected_text}, "
            f"got {arr.ndim} with shape {arr.shape}"
        )
    expected = tuple(d if type(d) is int else sizes[d] for d in dims)
    known = ", ".join(f"{d}={sizes[d]}" for d in dict.fromkeys(dims) if type(d) is str)
    raise ValueError(
        f"{name} must have shape {expected_text} = {expected} ({known}), got {arr.shape}"
    )


def kernel_ready(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous, aligned, native-endian: copies only when ``arr`` is not already."""
    flags = arr.flags
    if flags.c_contiguous and flags.aligned and arr.dtype == dtype:
        return arr
    return np.require(arr, dtype=dtype, requirements=("C", "A"))


def check_blas_sizes(sizes: dict[str, int], limit: int) -> None:
    """Refuse sizes whose GEMM operands would overflow the BLAS integer (``limit`` elements)."""
    rows = sizes["T"] * sizes["B"]
    if max(rows, sizes["H"]) * max(sizes["D"], sizes["H"]) <= limit:
        return
    for label, count in (
        ("T * B * D (the input x)", rows * sizes["D"]),
        ("T * B * H (the states h)", rows * sizes["H"]),
        ("H * D (w_ih)", sizes["H"] * sizes["D"]),
        ("H * H (w_hh)", sizes["H"] * sizes["H"]),
    ):
        if count > limit:
            raise ValueError(
                f"{label} = {count} elements exceeds the BLAS limit of {limit} "
                "elements per matrix; split the sequence or the batch"
            )


def _all_finite(arr: np.ndarray) -> bool:
    """True when ``arr`` holds no NaN and no Inf.

    min and max propagate NaN and reach any infinity, and unlike ``np.isfinite(arr).all()`` they
    allocate no temporary the size of ``arr``.
    """
    return arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


def check_all_finite(arrays: dict[str, np.ndarray | None]) -> None:
    """Raise a ValueError naming the first array (in argument order) with a NaN or an Inf."""
    for name, arr in arrays.items():
        if arr is not None and not _all_finite(arr):
            raise ValueError(
                f"{name} contains NaN or Inf (check_finite=True); pass check_finite=False to let "
                "non-finite values propagate as in NumPy"
            )


# --------------------------------------------------------------------------------------------
# The arguments of a whole kernel call (functional.rnn_forward / rnn_backward)


def sequence_arrays(
    named: dict[str, Any],
    layout: dict[str, tuple[str, ...]],
    check_finite: bool,
    blas_limit: int | None,
) -> tuple[dict[str, np.ndarray | None], dict[str, int]]:
    """Validate all arrays of a sequence call; return them kernel-ready (in the order of
    ``named``, the kernels' argument order) and the sizes.

    ``layout`` gives each argument's named dimensions in checking order (``x`` first: it fixes
    the dtype); ``h0`` and ``b`` may be None. Order: each array's conversion, dtype and shape,
    then the sizes against the BLAS integer (``blas_limit``, None: not checked; empty sizes run
    no BLAS), then the copies that make arrays kernel-ready (where a huge zero-strided input
    hits ``MemoryError``), then, if asked, finiteness on those copies.
    """
    x = as_float_array("x", named["x"])
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {}
    arrays: dict[str, np.ndarray | None] = {}
    for name, labels in layout.items():
        value = named[name]
        if value is None and name in ("h0", "b"):
            arrays[name] = None
            continue
        arr = x if name == "x" else as_float_array(name, value, dtype, dtype_of="x")
        check_shape(name, arr, labels, sizes)
        arrays[name] = arr
    if blas_limit is not None and min(sizes.values()) > 0:
        check_blas_sizes(sizes, blas_limit)
    ready = {k: (None if arrays[k] is None else kernel_ready(arrays[k], dtype)) for k in named}
    if check_finite:
        check_all_finite(ready)  # in argument order
    return ready, sizes


# --------------------------------------------------------------------------------------------
# The arguments of one streaming step (functional.rnn_step, RNN.step, RNNCell)


@dataclass(frozen=True, slots=True)
class StepLayer:
    """What a layer's step expects: its sizes and dtype, and the state's leading axes
    (``(num_layers,)`` for RNN, ``()`` for RNNCell). The layer's own parameters need no check.

    (A slotted class, not a NamedTuple: the streaming step reads ``lead`` on every call, and a
    slot is read in a few nanoseconds.)
    """

    input_size: int
    hidden_size: int
    dtype: np.dtype
    lead: tuple[int, ...]
    refusal: str | None = None
    """Why this layer cannot step (a ValueError's message), or None."""
    state_sizes: tuple[int, ...] = ()
    """A gated layer's state arrays' features (LSTM: (h's, c's)); () for the Elman layers."""


StepLayers = tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], ...]


def step_args(
    x: Any, h: Any, params: Any, layer: StepLayer | None
) -> tuple[np.ndarray, np.ndarray | None, StepLayers, bool]:
    """Validate a step's arguments; return x (B, D), h (L, B, H) or None, the layers' arrays
    and whether x was batched, all kernel-ready.

    ``layer`` None: the functional API (x (B, D), h (L, B, H), ``params`` checked, the dtype
    x's); else a layer's step (x also unbatched (D,), h ``(*lead, B, H)`` or ``(*lead, H)``, the
    layer's dtype, its own parameters trusted).
    """
    if layer is None:
        return (*_step_params_args(x, h, params), True)
    if layer.refusal is not None:
        raise ValueError(layer.refusal)
    dtype, lead = layer.dtype, layer.lead
    x = as_float_array("x", x, dtype)
    if x.ndim not in (1, 2) or x.shape[-1] != layer.input_size:
        raise ValueError(
            f"x must have shape (batch, input_size) or (input_size,) with "
            f"input_size={layer.input_size}, got {x.shape}"
        )
    batched = x.ndim == 2
    x2 = kernel_ready(x if batched else x[None], dtype)
    if h is not None:
        h = as_float_array("h", h, dtype)
        if batched:
            shape = (*lead, x.shape[0], layer.hidden_size)
            check_shape("h", h, shape, meaning="(..., batch, hidden_size)")
        else:
            shape = (*lead, layer.hidden_size)
            check_shape("h", h, shape, meaning="(..., hidden_size) for an unbatched x")
            h = np.expand_dims(h, -2)
        h = kernel_ready(h if lead else h[None], dtype)
    return x2, h, params, batched


def _step_params_args(
    x: Any, h: Any, params: Any
) -> tuple[np.ndarray, np.ndarray | None, StepLayers]:
    """step_args for the functional API: every layer's (w_ih, w_hh, b_ih, b_hh) checked."""
    layers = tuple(params) if isinstance(params, Sequence) else ()
    if not layers:
        raise ValueError("params must hold at least one layer's (w_ih, w_hh, b_ih, b_hh)")
    x = as_float_array("x", x)
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {"L": len(layers)}
    check_shape("x", x, ("B", "D"), sizes)
    first = layers[0]
    if not isinstance(first, Sequence) or len(first) != 4:
        raise ValueError("params[0] must be a tuple (w_ih, w_hh, b_ih, b_hh)")
    w_hh0 = as_float_array("params[0] w_hh", first[1], dtype, dtype_of="x")
    check_shape("params[0] w_hh", w_hh0, ("H", "H"), sizes)
    if h is not None:
        h = kernel_ready(as_float_array("h", h, dtype, dtype_of="x"), dtype)
        check_shape("h", h, ("L", "B", "H"), sizes)
    checked = []
    for k, layer in enumerate(layers):
        if not isinstance(layer, Sequence) or len(layer) != 4:
            raise ValueError(f"params[{k}] must be a tuple (w_ih, w_hh, b_ih, b_hh)")
        w_ih, w_hh, b_ih, b_hh = layer
        if (b_ih is None) != (b_hh is None):
            raise ValueError(f"params[{k}]: b_ih and b_hh must both be arrays or both None")
        dims = {
            "w_ih": (w_ih, ("H", "D") if k == 0 else ("H", "H")),
            "w_hh": (w_hh, ("H", "H")),
            "b_ih": (b_ih, ("H",)),
            "b_hh": (b_hh, ("H",)),
        }
        arrays = []
        for name, (value, shape) in dims.items():
            if value is None and name.startswith("b_"):
                arrays.append(None)
                continue
            arr = as_float_array(f"params[{k}] {name}", value, dtype, dtype_of="x")
            check_shape(f"params[{k}] {name}", arr, shape, sizes)
            arrays.append(kernel_ready(arr, dtype))
        checked.append(tuple(arrays))
    return kernel_ready(x, dtype), h, tuple(checked)


# --------------------------------------------------------------------------------------------
# The gated cells' calls (functional.lstm_* / gru_*)

GATED_OPTIONAL = ("h0", "c0", "b", "b_ih", "b_hh", "w_hr", "dc")
"""The arguments of a gated call that may be None."""


def check_blas_elements(counts: dict[str, int], limit: int) -> None:
    """Refuse a GEMM operand (label -> elements) beyond the BLAS integer (``limit``)."""
    for label, count in counts.items():
        if count > limit:
            raise ValueError(
                f"{label} = {count} elements exceeds the BLAS limit of {limit} "
                "elements per matrix; split the sequence or the batch"
            )


def gated_arrays(
    named: dict[str, Any],
    layout: dict[str, tuple[str, ...]],
    gates: int,
    check_finite: bool,
    blas_limit: int | None,
) -> tuple[dict[str, np.ndarray | None], dict[str, int]]:
    """:func:`sequence_arrays` for a gated cell: ``w_ih`` (G, D) has ``gates`` blocks of H
    rows (LSTM 4, GRU 3), and the state has S features (H, or P with an LSTM's ``w_hr``).

    ``layout`` in checking order, x then w_ih first; the names of :data:`GATED_OPTIONAL` may
    be None. Returns the arrays kernel-ready in the order of ``named`` and the sizes
    (T, B, D, G, H, S).
    """
    x = as_float_array("x", named["x"])
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {}
    arrays: dict[str, np.ndarray | None] = {}
    for name, labels in layout.items():
        value = named[name]
        if value is None and name in GATED_OPTIONAL:
            arrays[name] = None
            if name == "w_hr":  # no projection: the state is h itself
                sizes["S"] = sizes["H"]
            continue
        arr = x if name == "x" else as_float_array(name, value, dtype, dtype_of="x")
        check_shape(name, arr, labels, sizes)
        arrays[name] = arr
        if name == "w_ih":
            if sizes["G"] % gates:
                raise ValueError(
                    f"w_ih must have {gates} * hidden_size rows (the gates' blocks), got "
                    f"shape {arr.shape}"
                )
            sizes["H"] = sizes["G"] // gates
    if blas_limit is not None and min(sizes.values()) > 0:
        rows = sizes["T"] * sizes["B"]
        check_blas_elements(
            {
                "T * B * D (the input x)": rows * sizes["D"],
                "T * B * gates * H (the gates)": rows * sizes["G"],
                "T * B * state (the states)": rows * max(sizes["S"], sizes["H"]),
                "gates * H * D (w_ih)": sizes["G"] * sizes["D"],
                "gates * H * state (w_hh)": sizes["G"] * sizes["S"],
            },
            blas_limit,
        )
    ready = {k: (None if arrays[k] is None else kernel_ready(arrays[k], dtype)) for k in named}
    if check_finite:
        check_all_finite(ready)
    return ready, sizes


def gated_step_args(
    x: Any, states: tuple[Any, ...], params: Any, layer: StepLayer | None, cell: str
) -> tuple[np.ndarray, tuple[np.ndarray | None, ...], tuple, bool]:
    """Validate a gated step's arguments (``cell`` "lstm": states (h, c), params per layer
    (w_ih, w_hh, b_ih, b_hh, w_hr); "gru": states (h,), params (w_ih, w_hh, b_ih, b_hh)).

    Returns x (B, D), the states (L, B, ·) or None, the layers' arrays and whether x was
    batched, all kernel-ready. ``layer`` as in :func:`step_args` (its ``state_sizes`` give each
    state's features).
    """
    names = ("h", "c")[: len(states)]
    if layer is None:
        return (*_gated_step_params_args(x, states, params, names, cell), True)
    if layer.refusal is not None:
        raise ValueError(layer.refusal)
    dtype, lead = layer.dtype, layer.lead
    x = as_float_array("x", x, dtype)
    if x.ndim not in (1, 2) or x.shape[-1] != layer.input_size:
        raise ValueError(
            f"x must have shape (batch, input_size) or (input_size,) with "
            f"input_size={layer.input_size}, got {x.shape}"
        )
    batched = x.ndim == 2
    out = []
    for name, size, s in zip(names, layer.state_sizes, states, strict=True):
        if s is not None:
            s = as_float_array(name, s, dtype)
            if batched:
                check_shape(name, s, (*lead, x.shape[0], size), meaning="(..., batch, features)")
            else:
                check_shape(name, s, (*lead, size), meaning="(..., features) for an unbatched x")
                s = np.expand_dims(s, -2)
            s = kernel_ready(s if lead else s[None], dtype)
        out.append(s)
    return kernel_ready(x if batched else x[None], dtype), tuple(out), params, batched


def _gated_step_params_args(
    x: Any, states: tuple[Any, ...], params: Any, names: tuple[str, ...], cell: str
) -> tuple[np.ndarray, tuple[np.ndarray | None, ...], tuple]:
    """gated_step_args for the functional API: every layer's arrays checked."""
    fields = ("w_ih", "w_hh", "b_ih", "b_hh") + (("w_hr",) if cell == "lstm" else ())
    gates = 4 if cell == "lstm" else 3
    spelled = "(" + ", ".join(fields) + ")"
    layers = tuple(params) if isinstance(params, Sequence) else ()
    if not layers:
        raise ValueError(f"params must hold at least one layer's {spelled}")
    x = as_float_array("x", x)
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {"L": len(layers)}
    check_shape("x", x, ("B", "D"), sizes)
    checked = []
    for k, layer in enumerate(layers):
        if not isinstance(layer, Sequence) or len(layer) != len(fields):
            raise ValueError(f"params[{k}] must be a tuple {spelled}")
        values = dict(zip(fields, layer, strict=True))
        if (values["b_ih"] is None) != (values["b_hh"] is None):
            raise ValueError(f"params[{k}]: b_ih and b_hh must both be arrays or both None")
        w_ih = as_float_array(f"params[{k}] w_ih", values["w_ih"], dtype, dtype_of="x")
        check_shape(f"params[{k}] w_ih", w_ih, ("G", "D" if k == 0 else "S"), sizes)
        if sizes["G"] % gates:
            raise ValueError(
                f"params[{k}] w_ih must have {gates} * hidden_size rows, got shape {w_ih.shape}"
            )
        sizes["H"] = sizes["G"] // gates
        if values.get("w_hr") is None and sizes.setdefault("S", sizes["H"]) != sizes["H"]:
            raise ValueError(
                f"params[{k}] w_hr is None, so the state has hidden_size = {sizes['H']} "
                f"features, but the other layers' state has {sizes['S']}"
            )
        dims = {"w_hr": ("S", "H"), "w_hh": ("G", "S"), "b_ih": ("G",), "b_hh": ("G",)}
        arrays = {"w_ih": kernel_ready(w_ih, dtype)}
        for name in fields[1:] if cell == "gru" else ("w_hr", "w_hh", "b_ih", "b_hh"):
            value = values[name]
            if value is None and name != "w_hh":
                arrays[name] = None
                continue
            arr = as_float_array(f"params[{k}] {name}", value, dtype, dtype_of="x")
            check_shape(f"params[{k}] {name}", arr, dims[name], sizes)
            arrays[name] = kernel_ready(arr, dtype)
        checked.append(tuple(arrays[f] for f in fields))
    out = []
    for name, s in zip(names, states, strict=True):
        if s is not None:
            s = kernel_ready(as_float_array(name, s, dtype, dtype_of="x"), dtype)
            check_shape(name, s, ("L", "B", "S" if name == "h" else "H"), sizes)
        out.append(s)
    return kernel_ready(x, dtype), tuple(out), tuple(checked)


# --------------------------------------------------------------------------------------------
# The arguments of a layer fed token ids (functional.gathered_forward / gathered_backward)

GATHERED_OPTIONAL = ("h0", "c0", "b_ih", "b_hh", "dc")
"""The arguments of a gathered call that may be None."""


def gathered_arrays(
    named: dict[str, Any],
    layout: dict[str, tuple[str, ...]],
    gates: int,
    blas_limit: int | None,
) -> tuple[dict[str, np.ndarray | None], dict[str, int]]:
    """Validate a gathered call's arrays: ``table`` (V, G) first (it fixes the dtype), then
    ``ids`` (T, B) integers in [0, V), then the rest in ``layout`` order, ``w_hh`` (G, H)
    having ``gates`` blocks of H rows. Returns them kernel-ready (ids int64) in the order of
    ``named``, and the sizes (T, B, V, G, H)."""
    table = as_float_array("table", named["table"])
    dtype = table.dtype.newbyteorder("=")
    sizes: dict[str, int] = {}
    check_shape("table", table, layout["table"], sizes)
    ids = as_ids("ids", named["ids"], sizes["V"])
    check_shape("ids", ids, layout["ids"], sizes)
    arrays: dict[str, np.ndarray | None] = {"table": table, "ids": ids}
    for name, labels in layout.items():
        if name in arrays:
            continue
        value = named[name]
        if value is None and name in GATHERED_OPTIONAL:
            arrays[name] = None
            continue
        arr = as_float_array(name, value, dtype, dtype_of="table")
        if name == "w_hh":
            meaning = "(gates * hidden_size, hidden_size)"
            check_shape(name, arr, ("G", "H"), sizes, meaning=meaning)
            if sizes["G"] != gates * sizes["H"]:
                raise ValueError(
                    f"w_hh must have shape ({gates} * hidden_size, hidden_size) (the gates' "
                    f"blocks), got {arr.shape}"
                )
        else:
            check_shape(name, arr, labels, sizes)
        arrays[name] = arr
    if blas_limit is not None:
        rows = sizes["T"] * sizes["B"]
        check_blas_elements(
            {
                "T * B * gates * H (the gates)": rows * sizes["G"],
                "gates * H * H (w_hh)": sizes["G"] * sizes["H"],
            },
            blas_limit,
        )
    ready = {
        k: (None if arrays[k] is None else kernel_ready(arrays[k], dtype))
        for k in named
        if k != "ids"
    }
    ready["ids"] = np.ascontiguousarray(ids, dtype=np.int64)
    return {k: ready[k] for k in named}, sizes


# --------------------------------------------------------------------------------------------
# The decoder's softmax cross-entropy (functional.linear_cross_entropy)


def decoder_arrays(
    x: Any, weight: Any, bias: Any, targets: Any, out: Any, blas_limit: int | None
) -> tuple[list[np.ndarray | None], dict[str, int]]:
    """Validate x (N, H) (it fixes the dtype), weight (V, H), bias (V,) or None, targets (N,)
    integers in [0, V), and ``out``: None or the 4 arrays (d_logits_t (V, N), dx (N, H),
    dweight (V, H), dbias (V,) or None exactly when bias is), each a writeable C-contiguous
    array of the dtype, written in place. Returns [x, weight, bias, targets, *out] kernel-ready
    (None for an ``out`` of None: the caller allocates) and the sizes N, H, V."""
    x = as_float_array("x", x)
    dtype = x.dtype.newbyteorder("=")
    sizes: dict[str, int] = {}
    check_shape("x", x, ("N", "H"), sizes)
    weight = as_float_array("weight", weight, dtype, dtype_of="x")
    check_shape("weight", weight, ("V", "H"), sizes)
    if bias is not None:
        bias = as_float_array("bias", bias, dtype, dtype_of="x")
        check_shape("bias", bias, ("V",), sizes)
    if sizes["N"] == 0 or sizes["V"] == 0:
        raise ValueError(f"x and weight need N >= 1 examples and V >= 1 classes, got {sizes}")
    t = as_ids("targets", targets, sizes["V"])
    check_shape("targets", t, ("N",), sizes)
    if blas_limit is not None:
        N, H, V = sizes["N"], sizes["H"], sizes["V"]
        check_blas_elements({"N * H (x)": N * H, "V * N (the logits)": V * N}, blas_limit)
    arrays: list[np.ndarray | None] = [
        kernel_ready(x, dtype),
        kernel_ready(weight, dtype),
        None if bias is None else kernel_ready(bias, dtype),
        np.ascontiguousarray(t, dtype=np.int64),
    ]
    if out is None:
        return [*arrays, None, None, None, None], sizes
    if not isinstance(out, tuple | list) or len(out) != 4:
        raise TypeError("out must be None or a tuple (d_logits_t, dx, dweight, dbias)")
    shapes = {"d_logits_t": ("V", "N"), "dx": ("N", "H"), "dweight": ("V", "H"), "dbias": ("V",)}
    for (name, dims), arr in zip(shapes.items(), out, strict=True):
        if name == "dbias" and (arr is None) != (bias is None):
            raise ValueError("out's dbias must be None exactly when bias is None")
        if arr is None and name == "dbias":
            arrays.append(None)
            continue
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
            got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise TypeError(f"out's {name} must be a NumPy array of dtype {dtype}, got {got}")
        check_shape(f"out's {name}", arr, dims, sizes)
        if not (arr.flags.c_contiguous and arr.flags.aligned and arr.flags.writeable):
            raise ValueError(f"out's {name} must be a writeable C-contiguous array")
        arrays.append(arr)
    written = [a for a in arrays[4:] if a is not None]
    inputs = [a for a in arrays[:3] if a is not None]
    if any(
        np.may_share_memory(a, b) for i, a in enumerate(written) for b in written[i + 1 :] + inputs
    ):
        raise ValueError("out's arrays must not overlap each other or the inputs")
    return arrays, sizes


def flat_update_arrays(arrays: dict[str, Any], written: tuple[str, ...]) -> None:
    """An optimizer's flat buffers (functional.adam_update): NumPy float arrays of one dtype,
    1-D, one length, C-contiguous and aligned; those ``written`` writeable and apart from every
    other."""
    first = next(iter(arrays))
    shape = dtype = None
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or not arr.dtype.isnative:
            got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise TypeError(f"{name} must be a float32 or float64 NumPy array, got {got}")
        if dtype is None:
            shape, dtype = arr.shape, arr.dtype
        if arr.dtype != dtype or arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {arr.dtype} but {first} has dtype {dtype}")
        if arr.ndim != 1 or arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (1-D, as {first}), got {arr.shape}")
        if not (arr.flags.c_contiguous and arr.flags.aligned):
            raise ValueError(f"{name} must be a C-contiguous array")
        if name in written and not arr.flags.writeable:
            raise ValueError(f"{name} is read-only; it is updated in place")
    for name in written:
        for other, arr in arrays.items():
            if other != name and np.may_share_memory(arrays[name], arr):
                raise ValueError(f"{name} and {other} must not overlap")
