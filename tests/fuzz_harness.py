"""Fuzz harness: random valid and invalid calls of every public entry point, in a child process.

``test_fuzz.py`` runs this file as a script, one child process per entry point::

    python tests/fuzz_harness.py --entry rnn_forward --cases 1100 --seed 0 --last-case FILE

The child runs ``--cases`` Hypothesis examples with ``faulthandler`` on. Each example is a
:class:`Case`: a call plus what must come of it. The only outcomes allowed are

* for a valid case, a correct result: the reference computed on plain C-contiguous copies of
  the same values (NaN and Inf in the same places), in fresh arrays of the right dtype;
* for an invalid case, a ``ValueError`` or ``TypeError`` whose message starts with the name of
  an argument at fault;
* in both, the inputs unchanged.

Anything else (another exception, a wrong result, a crash) fails the child; a crash kills it, so
the parent sees a non-zero exit status. Before each call the child writes the case's description
to ``--last-case``, so the parent can say which case crashed it. At exit it prints one line
``FUZZ-RESULT {json}`` with the number of cases run by outcome.

Validity is decided here by a model of the documented input policy (``np.asarray``
conversion, float32/float64 alike, one consistent set of dimensions, option values), not by
asking rnnfast, so the fuzz also fails on a bad input that is silently accepted.

Adding an entry point: write a strategy that draws :class:`Case` objects (for functions of
arrays with named dimensions, an :class:`ArrayFunction` spec and :func:`array_function_cases`
do it all) and add one line to :data:`ENTRY_POINTS`.
"""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import functools
import inspect
import json
import pickle
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from conftest import RTOL, assert_close_nonfinite, make_problem
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from test_validation import LAYOUTS

import rnnfast
from rnnfast import _reference

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------------
# Cases and how one is judged


class Case:
    """One call of an entry point and what must come of it.

    A plain class, not a dataclass, so that Hypothesis reports a failing case by its
    description rather than by dumping every array.
    """

    def __init__(
        self,
        call: Callable[[], Any],
        expected: Callable[[], tuple[np.ndarray, ...]] | None,
        fault_names: frozenset[str] | None,
        inputs: tuple[np.ndarray, ...],
        description: str,
        rtol: float = 0.0,
        coverage: str | None = None,
        twin: Callable[[], Any] | None = None,
        check: Callable[[Any], None] | None = None,
    ) -> None:
        self.call = call
        """Makes the call under test."""
        self.expected = expected
        """For a valid case, computes the correct result's arrays; None if the call must raise."""
        self.fault_names = fault_names
        """For an invalid case: the words an error message may start with (the arguments at
        fault; for errors Python raises about the call itself, the function's name). None when
        validity is not modelled (see ``twin`` and ``check``)."""
        self.inputs = inputs
        """Every array passed in, to check it is unchanged afterwards."""
        self.description = description
        """Everything needed to recognise and rebuild the case."""
        self.rtol = rtol
        """Tolerance of the comparison with ``expected`` (see conftest.assert_close)."""
        self.coverage = coverage
        """For a case with exactly one fault, its tag (``"kind:argument"``), counted so the
        parent can check that every kind of fault was tried on every argument."""
        self.twin = twin
        """A differential oracle: the same call on the NumPy backend. If given, the call must
        end like it: the same exception type (ValueError or TypeError), or a close result."""
        self.check = check
        """For a case whose validity is not modelled (``fault_names`` None): checks a result;
        a ValueError or TypeError is then also an allowed outcome."""

    def __repr__(self) -> str:
        return f"Case({self.description})"


def result_arrays(result: Any) -> tuple[np.ndarray, ...]:
    """The arrays of a result: an ndarray, or a (nested) tuple of them."""
    if isinstance(result, np.ndarray):
        return (result,)
    assert isinstance(result, tuple), f"result is a {type(result).__name__}, not arrays"
    return tuple(a for part in result for a in result_arrays(part))


def snapshot(a: np.ndarray) -> np.ndarray:
    """An independent copy with the same values, strides aside."""
    return np.array(a, copy=True)


def outcome_of(call: Callable[[], Any]) -> tuple[str, Any]:
    """("error", the ValueError or TypeError raised) or ("result", the return value)."""
    try:
        return "result", call()
    except (ValueError, TypeError) as exc:
        return "error", exc


def run_case(case: Case, tally: Counter) -> None:
    """Make the call and check its outcome; count it in ``tally`` by outcome."""
    before = [snapshot(a) for a in case.inputs]
    if case.coverage is not None:
        tally[f"single-fault {case.coverage}"] += 1
    twin = None if case.twin is None else outcome_of(case.twin)
    try:
        result = case.call()
    except (ValueError, TypeError) as exc:
        if twin is not None:
            assert twin[0] == "error" and type(twin[1]) is type(exc), (
                f"raised {exc!r}, but the NumPy backend's twin gave {twin}: {case.description}"
            )
        elif case.expected is not None:
            raise AssertionError(f"a valid case raised {exc!r}: {case.description}") from exc
        elif case.fault_names is not None:
            first_word = re.match(r"\w*", str(exc)).group()
            assert first_word in case.fault_names, (
                f"{type(exc).__name__}({str(exc)!r}) does not start with one of "
                f"{sorted(case.fault_names)}: {case.description}"
            )
        tally["ValueError" if isinstance(exc, ValueError) else "TypeError"] += 1
    else:
        if twin is not None:
            assert twin[0] == "result", f"returned, but the twin raised {twin[1]!r}: {case}"
            compare_twins(result_arrays(result), result_arrays(twin[1]), case)
        elif case.check is not None:
            case.check(result)
        else:
            assert case.expected is not None, (
                f"an invalid case (faults: {sorted(case.fault_names or ())}) was accepted: "
                f"{case.description}"
            )
            check_result(result_arrays(result), case.expected(), case)
        tally["ok"] += 1
    for a, b in zip(case.inputs, before, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"an input was modified: {case.description}")


def compare_twins(actual: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...], case: Case):
    """The same arrays, dtypes and (within ``case.rtol``) values from both backends."""
    assert len(actual) == len(expected), f"{len(actual)} arrays, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        name = f"result[{i}] of {case.description}"
        assert isinstance(a, np.ndarray) and a.dtype == e.dtype, f"{name}: {a!r} vs {e!r}"
        assert_close_nonfinite(a, e, case.rtol, name)


def check_result(actual: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...], case: Case):
    """Fresh, C-contiguous, writeable arrays of the expected dtypes and values."""
    assert len(actual) == len(expected), f"{len(actual)} arrays, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        name = f"result[{i}] of {case.description}"
        assert isinstance(a, np.ndarray), f"{name} is a {type(a).__name__}"
        assert a.dtype == e.dtype, f"{name}: dtype {a.dtype} != {e.dtype}"
        assert a.flags.c_contiguous and a.flags.writeable, f"{name}: flags {a.flags}"
        assert not any(np.shares_memory(a, x) for x in case.inputs), f"{name} aliases an input"
        assert_close_nonfinite(a, e, case.rtol, name)


# ---------------------------------------------------------------------------------------------
# Argument values: valid ones in every layout, and every kind of bad one


class ArrayRaises:
    """An object whose ``__array__`` raises (as a PyTorch tensor that requires grad does)."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("this object refuses to become an array")

    def __repr__(self) -> str:
        return "ArrayRaises()"


def broadcast_along_first_axis(a: np.ndarray) -> np.ndarray:
    """A zero-stride view: the first entry along axis 0 repeated (np.broadcast_to)."""
    if a.shape[0] == 0:
        return a
    return np.broadcast_to(a[:1], a.shape)


def transform_names() -> list[str]:
    """Names of the value-preserving layouts (plus "broadcast", which repeats values)."""
    return ["plain", *LAYOUTS, "broadcast"]


def apply_transform(name: str, a: np.ndarray) -> np.ndarray:
    if name == "plain":
        return a
    if name == "broadcast":
        return broadcast_along_first_axis(a)
    return LAYOUTS[name](a)


GARBAGE: dict[str, Callable[[tuple[int, ...]], Any]] = {
    # Each makes a bad value, given the shape the argument should have.
    "object": lambda s: object(),
    "string": lambda s: "not an array",
    "bytes": lambda s: b"\x00\x01",
    "python_float": lambda s: 3.5,
    "python_int": lambda s: 7,
    "bool": lambda s: True,
    "empty_list": lambda s: [],
    "ragged_list": lambda s: [[1.0, 2.0], [3.0]],
    "dict": lambda s: {"a": 1.0},
    "set": lambda s: {1.0, 2.0},
    "function": lambda s: len,
    "complex": lambda s: 1 + 2j,
    "array_raises": lambda s: ArrayRaises(),
    "masked": lambda s: np.ma.masked_array(np.zeros(s), mask=np.zeros(s, bool)),
    "object_array": lambda s: np.full(s, 1.0, dtype=object),
    "string_array": lambda s: np.full(s, "a"),
    "structured": lambda s: np.zeros(s, dtype=[("a", "f8")]),
    "datetime": lambda s: np.zeros(s, dtype="datetime64[s]"),
    "memoryview": lambda s: memoryview(b"abcd"),
}

BAD_DTYPES = [
    np.float16,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.int8,
    np.int32,
    np.int64,
    np.uint64,
    np.bool_,
]


def break_array(
    draw: st.DrawFn, kind: str, valid: np.ndarray, seed_value: int, garbage_pool=None
) -> tuple[Any, str]:
    """A bad replacement for the valid array ``valid``, of one of ARRAY_FAULTS, and a note.

    "nonfinite" is not always bad: it is a copy with a NaN or an Inf in it (unless empty).
    """
    if kind == "shape":
        shape = wrong_shape(draw, valid.shape)
        rng = np.random.default_rng(seed_value)
        return rng.standard_normal(shape).astype(valid.dtype), f"shape {shape}"
    if kind == "dtype":
        bad = np.dtype(draw(st.sampled_from([*BAD_DTYPES, *FLOATS])))
        return valid.astype(bad), f"dtype {bad}"
    if kind == "garbage":
        garbage = draw(st.sampled_from(sorted(garbage_pool or GARBAGE)))
        return GARBAGE[garbage](valid.shape), f"garbage {garbage}"
    if kind == "none":
        return None, "None"
    assert kind == "nonfinite", kind
    arr = np.array(valid)
    if not arr.size:
        return arr, "empty, no room for NaN"
    bad_value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    arr.flat[draw(st.integers(0, arr.size - 1))] = bad_value
    return arr, f"holds {bad_value}"


def effective_array(value: Any) -> np.ndarray | str | None:
    """What the documented input policy makes of ``value``: None, "unconvertible", or the
    array ``np.asarray`` returns."""
    if value is None:
        return None
    if isinstance(value, np.ma.MaskedArray):
        return "unconvertible"
    try:
        return np.asarray(value)
    except Exception:
        return "unconvertible"


def is_float(arr: np.ndarray) -> bool:
    return arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in FLOATS


# ---------------------------------------------------------------------------------------------
# Entry points that are functions of arrays with named dimensions


@dataclass(frozen=True)
class ArrayFunction:
    """A function of arrays (all of x's dtype) with named dimensions, plus options."""

    name: str
    """The function's ``__name__``: Python's own TypeErrors about the call start with it."""
    function: Callable[..., Any]
    reference: Callable[[dict[str, np.ndarray | None], dict[str, Any]], tuple[np.ndarray, ...]]
    """The oracle: canonical arrays and valid options -> the result's arrays."""
    layout: dict[str, tuple[str, ...]]
    """Array arguments in call order, with their dimensions."""
    dtype_source: str
    """The argument whose dtype all others must share."""
    optional: frozenset[str]
    """Array arguments that may be None (or, if last, left out)."""
    valid_options: dict[str, Sequence[Any]]
    invalid_options: dict[str, Sequence[Any]]
    values: Callable[[np.random.Generator, dict[str, int], np.dtype], dict[str, np.ndarray]]
    """Valid arrays for given sizes and dtype."""
    size_classes: tuple[tuple[str, st.SearchStrategy[dict[str, int]]], ...] = ()
    """Named strategies for the sizes; a class listed twice is drawn twice as often."""


def consistent_shapes(
    layout: dict[str, tuple[str, ...]], arrays: dict[str, np.ndarray | None]
) -> bool:
    """True when every array has its rank and one value per dimension name fits them all."""
    sizes: dict[str, int] = {}
    for name, labels in layout.items():
        arr = arrays[name]
        if arr is None:
            continue
        if arr.ndim != len(labels):
            return False
        for label, n in zip(labels, arr.shape, strict=True):
            if sizes.setdefault(label, n) != n:
                return False
    return True


def wrong_shape(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A different shape: another rank (0-d and 1-d included), or one dimension changed."""
    kind = draw(st.sampled_from(["rank", "dimension", "reversed"]))
    if kind == "rank" or len(shape) == 0:
        ndim = draw(st.integers(0, 4).filter(lambda n: n != len(shape)))
        return tuple(draw(st.integers(0, 4)) for _ in range(ndim))
    if kind == "reversed" and shape != shape[::-1]:
        return shape[::-1]
    axis = draw(st.integers(0, len(shape) - 1))
    new = draw(st.integers(0, shape[axis] + 3).filter(lambda n: n != shape[axis]))
    return (*shape[:axis], new, *shape[axis + 1 :])


@st.composite
def array_function_cases(
    draw: st.DrawFn, spec: ArrayFunction, fault: tuple[str, str] | None = None
) -> Case:
    """A call of ``spec.function``: valid (about 40% of the time) or with one or two faults
    drawn from :func:`fault_targets`; or, if ``fault`` is given, with exactly that one."""
    size_class, size_strategy = draw(st.sampled_from(spec.size_classes))
    sizes = draw(size_strategy)
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    value_seed = draw(st.integers(0, 2**32 - 1))
    valid = spec.values(np.random.default_rng(value_seed), sizes, dtype)
    notes = [f"{spec.name} {size_class} sizes={sizes} dtype={dtype} values_seed={value_seed}"]

    # Valid options first, then faults on top.
    options = {k: draw(st.sampled_from(v)) for k, v in spec.valid_options.items()}
    values: dict[str, Any] = {}
    for name, arr in valid.items():
        if name in spec.optional and draw(st.integers(0, 3)) == 0:
            values[name] = None
            continue
        layouts = [draw(st.sampled_from(transform_names())) for _ in range(draw(st.integers(1, 2)))]
        for layout in layouts:
            arr = apply_transform(layout, arr)
        if arr.size <= 200 and draw(st.integers(0, 9)) == 0:
            layouts.append("tolist")
            values[name] = arr.tolist()
        else:
            values[name] = arr
        if layouts != ["plain"]:
            notes.append(f"{name}:{'+'.join(layouts)}")

    call_fault = None
    if fault is None:
        how_many = draw(st.sampled_from([1, 0, 1, 0, 2]))
        faults = [draw(st.sampled_from(fault_targets(spec))) for _ in range(how_many)]
    else:
        faults = [fault]
    tags = []
    for kind, name in faults:
        tags.append(f"{kind}:{name}")
        if kind in ARRAY_FAULTS:
            values[name], note = break_array(draw, kind, valid[name], value_seed)
            notes.append(f"FAULT {name}: {note}")
            if kind == "nonfinite":
                options["check_finite"] = draw(st.booleans())
        elif kind == "option":
            options[name] = draw(st.sampled_from(spec.invalid_options[name]))
            notes.append(f"FAULT option {name}={options[name]!r}")
        else:
            call_fault = name
            notes.append(f"FAULT call: {call_fault}")
    notes.append(f"options={options}")

    fault_names, canonical = judge(spec, values, options)
    if call_fault is not None:
        fault_names.add(spec.name)

    args = [values[name] for name in spec.layout]
    kwargs = dict(options)
    required = required_positional(spec.function)
    if call_fault == "extra_positional":
        args.append(valid[next(iter(spec.layout))])
    elif call_fault == "unknown_keyword":
        kwargs["unknown_option"] = True
    elif call_fault == "missing":
        args = args[: required - 1]
    elif len(args) > required and all(a is None for a in args[required:]) and draw(st.booleans()):
        args = args[:required]  # trailing optional arguments left out rather than passed as None

    def call() -> Any:
        return spec.function(*args, **kwargs)

    expected = None
    if not fault_names:

        def expected() -> tuple[np.ndarray, ...]:
            return spec.reference(canonical, options)

    inputs = tuple(v for v in values.values() if isinstance(v, np.ndarray))
    return Case(
        call=call,
        expected=expected,
        fault_names=frozenset(fault_names),
        inputs=inputs,
        description="; ".join(notes),
        rtol=RTOL[dtype],
        coverage=tags[0] if len(tags) == 1 else None,
    )


CALL_FAULTS = ("extra_positional", "unknown_keyword", "missing")
ARRAY_FAULTS = ("shape", "dtype", "garbage", "none", "nonfinite")


def fault_targets(spec: ArrayFunction) -> list[tuple[str, str]]:
    """Every (kind of fault, argument) the cases of ``spec`` may break, one as likely as
    another."""
    return (
        [(kind, name) for kind in ARRAY_FAULTS for name in spec.layout]
        + [("option", name) for name in sorted(spec.invalid_options)]
        + [("call", name) for name in CALL_FAULTS]
    )


def required_positional(function: Callable[..., Any]) -> int:
    """How many positional parameters of ``function`` have no default."""
    return sum(
        1
        for p in inspect.signature(function).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
    )


def is_valid_option(value: Any, valid: Sequence[Any]) -> bool:
    """``value`` equals one of ``valid`` and has its exact type (1 is not True)."""
    return any(type(value) is type(v) and value == v for v in valid)


def judge(
    spec: ArrayFunction, values: dict[str, Any], options: dict[str, Any]
) -> tuple[set[str], dict[str, np.ndarray | None]]:
    """The model of the input policy: the names of the arguments at fault (empty for a valid
    call), and for a valid call the canonical arrays (C-contiguous, native, of x's dtype).

    When several things are wrong, any of them may be the one reported, so all are named.
    """
    faults = {o for o, v in options.items() if not is_valid_option(v, spec.valid_options[o])}
    arrays = {name: effective_array(v) for name, v in values.items()}
    for name, arr in arrays.items():
        if isinstance(arr, str) or (arr is None and name not in spec.optional):
            faults.add(name)
    source = arrays[spec.dtype_source]
    if isinstance(source, np.ndarray) and not is_float(source):
        faults.add(spec.dtype_source)
    elif isinstance(source, np.ndarray):
        dtype = source.dtype.newbyteorder("=")
        faults.update(
            name
            for name, arr in arrays.items()
            if isinstance(arr, np.ndarray)
            and not (arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") == dtype)
        )
    readable = {n: a if isinstance(a, np.ndarray) else None for n, a in arrays.items()}
    if not consistent_shapes(spec.layout, readable):
        faults.update(spec.layout)  # a mismatch may be reported at any of the arguments involved
    if "check_finite" not in faults and options.get("check_finite"):
        faults.update(
            name
            for name, arr in readable.items()
            if arr is not None and arr.dtype.kind == "f" and not np.isfinite(arr).all()
        )
    if faults:
        return faults, {}
    dtype = arrays[spec.dtype_source].dtype.newbyteorder("=")
    canonical = {
        name: None if arr is None else np.ascontiguousarray(arr, dtype=dtype)
        for name, arr in arrays.items()
    }
    return faults, canonical


# ---------------------------------------------------------------------------------------------
# The RNN core


RNN_SIZE_CLASSES = (
    # Zero sizes included; below the compiled loop/BLAS switch (B * H * H <= 512).
    ("tiny", st.fixed_dictionaries({k: st.integers(0, 4) for k in "TBDH"})),
    # Above the switch: the recurrent product is a BLAS call.
    (
        "blas",
        st.fixed_dictionaries(
            {
                "T": st.integers(1, 4),
                "B": st.integers(2, 6),
                "D": st.integers(1, 8),
                "H": st.integers(17, 24),
            }
        ),
    ),
    # B * H >= 32768: wide steps.
    (
        "parallel",
        st.fixed_dictionaries(
            {"T": st.integers(1, 2), "B": st.just(128), "D": st.integers(1, 3), "H": st.just(256)}
        ),
    ),
)
RNN_SIZE_WEIGHTS = (6, 3, 1)
"""How often each of RNN_SIZE_CLASSES is drawn, relatively."""
RNN_WEIGHTED_SIZES = tuple(
    c for c, w in zip(RNN_SIZE_CLASSES, RNN_SIZE_WEIGHTS, strict=True) for _ in range(w)
)


def rnn_values(rng: np.random.Generator, s: dict[str, int], dtype: np.dtype) -> dict[str, Any]:
    p = make_problem(rng, s["T"], s["B"], s["D"], s["H"], dtype)
    return {"dh": p.dh, "x": p.x, "h0": p.h0, "w_ih": p.w_ih, "w_hh": p.w_hh, "b": p.b}


def rnn_backward_values(rng: np.random.Generator, s: dict[str, int], dtype: np.dtype):
    v = rnn_values(rng, s, dtype)
    # Any h is a valid input; a realistic one is the forward pass's.
    h = _reference.rnn_forward(v["x"], v["h0"], v["w_ih"], v["w_hh"], v["b"], "tanh")
    return {"dh": v["dh"], "x": v["x"], "h0": v["h0"], "h": h, "w_ih": v["w_ih"], "w_hh": v["w_hh"]}


def rnn_forward_values(rng: np.random.Generator, s: dict[str, int], dtype: np.dtype):
    v = rnn_values(rng, s, dtype)
    return {k: v[k] for k in ("x", "h0", "w_ih", "w_hh", "b")}


RNN_VALID_OPTIONS: dict[str, Sequence[Any]] = {
    "nonlinearity": ("tanh", "relu"),
    "backend": ("cython", "numpy", "auto") if rnnfast.HAVE_COMPILED else ("numpy",),
    "check_finite": (False, True, np.bool_(True)),
}
BACKENDS_IN_USE = RNN_VALID_OPTIONS["backend"]
RNN_INVALID_OPTIONS: dict[str, Sequence[Any]] = {
    "nonlinearity": ("sigmoid", "TANH", "", None, 1, b"tanh", ("tanh",)),
    "backend": ("torch", "Cython", "", None, 0, b"numpy"),
    "check_finite": ("yes", 1, 0.0, None, [True]),
}
RNN_LAYOUT = {"x": ("T", "B", "D"), "h0": ("B", "H"), "w_ih": ("H", "D"), "w_hh": ("H", "H")}


RNN_FORWARD = ArrayFunction(
    name="rnn_forward",
    function=rnnfast.rnn_forward,
    reference=lambda a, o: (
        _reference.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], o["nonlinearity"]),
    ),
    layout={**RNN_LAYOUT, "b": ("H",)},
    dtype_source="x",
    optional=frozenset({"h0", "b"}),
    valid_options=RNN_VALID_OPTIONS,
    invalid_options=RNN_INVALID_OPTIONS,
    values=rnn_forward_values,
    size_classes=RNN_WEIGHTED_SIZES,
)

RNN_BACKWARD = ArrayFunction(
    name="rnn_backward",
    function=rnnfast.rnn_backward,
    reference=lambda a, o: _reference.rnn_backward(
        a["dh"], a["x"], a["h0"], a["h"], a["w_ih"], a["w_hh"], o["nonlinearity"]
    ),
    layout={
        "dh": ("T", "B", "H"),
        "x": ("T", "B", "D"),
        "h0": ("B", "H"),
        "h": ("T", "B", "H"),
        "w_ih": ("H", "D"),
        "w_hh": ("H", "H"),
    },
    dtype_source="x",
    optional=frozenset({"h0"}),
    valid_options=RNN_VALID_OPTIONS,
    invalid_options=RNN_INVALID_OPTIONS,
    values=rnn_backward_values,
    size_classes=RNN_WEIGHTED_SIZES,
)


# ---------------------------------------------------------------------------------------------
# The layer stack: RNN (forward + backward, and the streaming step), RNNCell, the losses, the
# optimizers and model files. Their validity is not modelled: an RNN or RNNCell call must end
# like its twin on the NumPy backend (a differential oracle), the rest must return a sane
# result or raise a ValueError or TypeError.

LAYER_ARRAY_FAULTS = ("shape", "dtype", "garbage", "nonfinite")
KNOWN_LAYER_ISSUES: dict[str, str] = {}
"""Garbage kinds not yet thrown at the layer stack, each with the reason."""
LAYER_GARBAGE = {k: v for k, v in GARBAGE.items() if k not in KNOWN_LAYER_ISSUES}
BAD_INTS = (0, -1, 2.5, True, "3", None, np.float64(2.0), 10**30)
BAD_LENGTHS = {
    "zero": lambda lens, T: np.where(np.arange(lens.size) == 0, 0, lens),
    "too_long": lambda lens, T: lens + T,
    "negative": lambda lens, T: -lens,
    "float": lambda lens, T: lens.astype(np.float64),
    "bool": lambda lens, T: lens > 1,
    "wrong_shape": lambda lens, T: np.concatenate([lens, lens]),
    "scalar": lambda lens, T: np.int64(1),
    "huge": lambda lens, T: np.full_like(lens, 2**62),
}


BAD_TARGETS = {
    "negative": lambda t, C: t - C,
    "too_large": lambda t, C: t + C,
    "float": lambda t, C: t.astype(np.float64),
    "bool": lambda t, C: t > 0,
    "wrong_shape": lambda t, C: t[..., None],
    "scalar": lambda t, C: np.int64(0),
    "huge": lambda t, C: np.full_like(t, 2**62),
    "uint": lambda t, C: t.astype(np.uint64) + np.uint64(2**63),
}
"""Bad class targets for C classes, from valid ones."""


def layer_fault_targets(arrays: Sequence[str], config: Sequence[str]) -> list[tuple[str, str]]:
    return [(kind, name) for kind in LAYER_ARRAY_FAULTS for name in arrays] + [
        ("config", name) for name in config
    ]


RNN_LAYER_ARRAYS = ("x", "h0", "d_output", "d_h_n")
RNN_LAYER_CONFIG = ("input_size", "hidden_size", "num_layers", "dropout", "nonlinearity", "dtype")
RNN_LAYER_TARGETS = [
    *layer_fault_targets(RNN_LAYER_ARRAYS, RNN_LAYER_CONFIG),
    *(("lengths", name) for name in BAD_LENGTHS),
]
RNN_STEP_TARGETS = layer_fault_targets(("x", "h"), RNN_LAYER_CONFIG)
RNN_CELL_TARGETS = layer_fault_targets(
    ("x", "h", "d_h_new"), ("input_size", "hidden_size", "nonlinearity", "dtype")
)


def draw_faults(draw: st.DrawFn, targets: Sequence[tuple[str, str]], fault) -> list:
    if fault is not None:
        return [fault]
    return [draw(st.sampled_from(targets)) for _ in range(draw(st.sampled_from([1, 0, 1, 0, 2])))]


def apply_config_fault(draw: st.DrawFn, config: dict[str, Any], name: str) -> str:
    """Replace one constructor argument by a bad value; return a note."""
    if name in ("nonlinearity",):
        config[name] = draw(st.sampled_from(RNN_INVALID_OPTIONS["nonlinearity"]))
    elif name == "dtype":
        config[name] = draw(st.sampled_from([np.float16, np.int32, "float", None, complex]))
    elif name == "dropout":
        config[name] = draw(st.sampled_from([-0.1, 1.5, np.nan, "0.5", None, True]))
    elif name == "num_layers":  # 10**30 layers would be built one by one: a hang, not a bug
        config[name] = draw(st.sampled_from([b for b in BAD_INTS if b != 10**30]))
    else:
        config[name] = draw(st.sampled_from(BAD_INTS))
    return f"FAULT config {name}={config[name]!r}"


@st.composite
def rnn_layer_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """rnn = RNN(...); output, h_n = rnn(x, h0, lengths); rnn.backward(d_output, d_h_n)."""
    config = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([1, 3, 8, 24])),
        "num_layers": draw(st.integers(1, 2)),
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "dropout": draw(st.sampled_from([0.0, 0.0, 0.5])),
        "bidirectional": draw(st.booleans()),
        "dtype": np.dtype(draw(st.sampled_from(FLOATS))),
        "seed": draw(st.integers(0, 2**16)),
    }
    D, H, L = config["input_size"], config["hidden_size"], config["num_layers"]
    dirs = 2 if config["bidirectional"] else 1
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    batched = draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    dtype = config["dtype"]

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    seq = ((B, T) if config["batch_first"] else (T, B)) if batched else (T,)
    state = (L * dirs, B, H) if batched else (L * dirs, H)
    valid = {"x": arr(*seq, D), "h0": arr(*state), "d_output": arr(*seq, dirs * H)}
    valid["d_h_n"] = arr(*state)
    values: dict[str, Any] = dict(valid)
    for name in ("h0", "d_h_n"):
        if draw(st.booleans()):
            values[name] = None
    lengths = rng.integers(1, T + 1, B) if batched and draw(st.booleans()) else None
    notes = [f"RNN {config} T={T} B={B} batched={batched} values_seed={value_seed}"]
    faults = draw_faults(draw, RNN_LAYER_TARGETS, fault)
    for kind, name in faults:
        if kind == "lengths":
            base = lengths if lengths is not None else np.ones(B, np.int64)
            lengths = BAD_LENGTHS[name](base, T)
            notes.append(f"FAULT lengths {name}: {lengths!r}")
        else:
            notes.append(apply_layer_fault(draw, kind, name, config, values, valid, value_seed))
    notes.append(f"lengths={lengths!r}")

    def run(backend: str):
        rnn = rnnfast.RNN(**config, backend=backend)
        output, h_n = rnn(values["x"], values["h0"], lengths)
        dx, dh0 = rnn.backward(values["d_output"], values["d_h_n"])
        return output, h_n, dx, dh0, *(rnn.grads[k] for k in sorted(rnn.grads))

    return layer_case(run, values, notes, faults, dtype)


def apply_layer_fault(
    draw: st.DrawFn,
    kind: str,
    name: str,
    config: dict[str, Any],
    values: dict[str, Any],
    valid: dict[str, np.ndarray],
    value_seed: int,
) -> str:
    """Apply one constructor-argument or array fault of a layer case; return its note."""
    if kind == "config":
        return apply_config_fault(draw, config, name)
    values[name], note = break_array(draw, kind, valid[name], value_seed, LAYER_GARBAGE)
    return f"FAULT {name}: {note}"


def layer_case(
    run: Callable[[str], Any], values: dict[str, Any], notes: list[str], faults: list, dtype
) -> Case:
    """A differential case: ``run("cython")`` must end like ``run("numpy")``."""
    rtol = RTOL.get(np.dtype(dtype), 1e-5) if isinstance(dtype, np.dtype) else 1e-5
    return Case(
        call=lambda: run("cython" if rnnfast.HAVE_COMPILED else "numpy"),
        expected=None,
        fault_names=None,
        inputs=tuple(v for v in values.values() if isinstance(v, np.ndarray)),
        description="; ".join(notes),
        rtol=10 * rtol,  # several layers and directions of kernel-vs-reference differences
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        twin=lambda: run("numpy"),
    )


@st.composite
def rnn_step_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """The streaming step: output, h = rnn.step(x_t, h), three steps in a row."""
    config = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([1, 3, 8, 24])),
        "num_layers": draw(st.integers(1, 2)),
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
        "dropout": 0.0,
        "bidirectional": draw(st.sampled_from([False, False, False, True])),
        "dtype": np.dtype(draw(st.sampled_from(FLOATS))),
        "seed": draw(st.integers(0, 2**16)),
    }
    D, H, L = config["input_size"], config["hidden_size"], config["num_layers"]
    B, batched = draw(st.integers(1, 4)), draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    lead = (B,) if batched else ()
    valid = {
        "x": rng.standard_normal((*lead, D)).astype(config["dtype"]),
        "h": rng.standard_normal((L, *lead, H)).astype(config["dtype"]),
    }
    values: dict[str, Any] = {"x": valid["x"], "h": valid["h"] if draw(st.booleans()) else None}
    notes = [f"RNN.step {config} B={B} batched={batched} values_seed={value_seed}"]
    faults = draw_faults(draw, RNN_STEP_TARGETS, fault)
    for kind, name in faults:
        notes.append(apply_layer_fault(draw, kind, name, config, values, valid, value_seed))

    def run(backend: str):
        rnn = rnnfast.RNN(**config, backend=backend)
        outputs, h = [], values["h"]
        for _ in range(3):
            output, h = rnn.step(values["x"], h)
            outputs.append(output)
        return (*outputs, h)

    return layer_case(run, values, notes, faults, config["dtype"])


@st.composite
def rnn_cell_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """cell = RNNCell(...); h_new = cell(x, h); cell.backward(d_h_new)."""
    config = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([1, 3, 8, 24])),
        "bias": draw(st.booleans()),
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
        "dtype": np.dtype(draw(st.sampled_from(FLOATS))),
        "seed": draw(st.integers(0, 2**16)),
    }
    D, H = config["input_size"], config["hidden_size"]
    B, batched = draw(st.integers(1, 4)), draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    lead = (B,) if batched else ()
    valid = {
        name: rng.standard_normal((*lead, n)).astype(config["dtype"])
        for name, n in (("x", D), ("h", H), ("d_h_new", H))
    }
    values: dict[str, Any] = dict(valid)
    if draw(st.booleans()):
        values["h"] = None
    notes = [f"RNNCell {config} B={B} batched={batched} values_seed={value_seed}"]
    faults = draw_faults(draw, RNN_CELL_TARGETS, fault)
    for kind, name in faults:
        notes.append(apply_layer_fault(draw, kind, name, config, values, valid, value_seed))

    def run(backend: str):
        cell = rnnfast.RNNCell(**config, backend=backend)
        h_new = cell(values["x"], values["h"])
        dx, dh = cell.backward(values["d_h_new"])
        return h_new, dx, dh, *(cell.grads[k] for k in sorted(cell.grads))

    return layer_case(run, values, notes, faults, config["dtype"])


def check_loss(pred: Any, loss_shape: tuple[int, ...], reduction: str) -> Callable[[Any], None]:
    """A loss result: (a float, or per-element losses of ``loss_shape`` for reduction "none";
    a gradient shaped like the prediction ``pred``). 0-d results may be NumPy scalars."""

    def check(result: Any) -> None:
        loss, grad = result
        assert isinstance(grad, np.ndarray | np.floating), grad
        assert grad.shape == np.shape(pred), (grad.shape, np.shape(pred))
        if reduction == "none":
            assert np.shape(loss) == loss_shape, (np.shape(loss), loss_shape)
        else:
            assert isinstance(loss, float), type(loss)

    return check


LOSS_TARGETS = [
    *((kind, name) for kind in LAYER_ARRAY_FAULTS for name in ("logits", "pred", "target")),
    *(("targets", name) for name in BAD_TARGETS),
    ("config", "reduction"),
    ("config", "ignore_index"),
]


@st.composite
def loss_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """softmax_cross_entropy(logits, targets, reduction, ignore_index) or mse(pred, target)."""
    which = draw(st.sampled_from(["cross_entropy", "mse"]))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=2)))
    C = draw(st.integers(1, 5))
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    valid = {
        "logits": (rng.standard_normal((*shape, C)) * 10).astype(dtype),
        "pred": rng.standard_normal(shape).astype(dtype),
        "target": rng.standard_normal(shape).astype(dtype),
    }
    values: dict[str, Any] = dict(valid)
    targets: Any = rng.integers(0, C, shape)
    options: dict[str, Any] = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if which == "cross_entropy" and draw(st.booleans()):
        options["ignore_index"] = draw(st.sampled_from([-100, 0, C - 1]))
    notes = [f"{which} shape={shape} C={C} dtype={dtype} values_seed={value_seed}"]
    faults = draw_faults(draw, LOSS_TARGETS, fault)
    for kind, name in faults:
        if kind == "config":
            bad = [None, 1.5, "x", "mean ", 3] if name == "ignore_index" else ["avg", None, 0]
            options[name] = draw(st.sampled_from(bad))
            notes.append(f"FAULT {name}={options[name]!r}")
        elif kind == "targets":
            targets = BAD_TARGETS[name](np.asarray(targets), C)
            notes.append(f"FAULT targets {name}")
        else:
            values[name], note = break_array(draw, kind, valid[name], value_seed, LAYER_GARBAGE)
            notes.append(f"FAULT {name}: {note}")
    if which == "cross_entropy":

        def call():
            return rnnfast.softmax_cross_entropy(values["logits"], targets, **options)

        pred = "logits"
    else:
        options.pop("ignore_index", None)

        def call():
            return rnnfast.mse(values["pred"], values["target"], **options)

        pred = "pred"
    return Case(
        call=call,
        expected=None,
        fault_names=None,
        inputs=tuple(v for v in (*values.values(), targets) if isinstance(v, np.ndarray)),
        description="; ".join([*notes, f"options={options}"]),
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        check=check_loss(values[pred], shape, options.get("reduction")),
    )


OPTIMIZER_TARGETS = [
    *((kind, "grad") for kind in ("shape", "dtype", "garbage", "nonfinite")),
    *(("params", name) for name in ("int", "read_only", "list", "empty", "extra_key", "garbage")),
    *(("config", name) for name in ("lr", "momentum", "betas", "eps", "weight_decay")),
]


@st.composite
def optimizer_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """An optimizer over a dict of parameters and gradients, three steps, then clipping."""
    name = draw(st.sampled_from(["SGD", "Adam", "Adagrad"]))
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    shapes = {"w": (3, 2), "b": (draw(st.integers(0, 3)),)}
    params: Any = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads: Any = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    options: dict[str, Any] = {"lr": draw(st.sampled_from([0.0, 1e-3, 0.1]))}
    notes = [f"{name} dtype={dtype} shapes={shapes} values_seed={value_seed}"]
    faults = draw_faults(draw, OPTIMIZER_TARGETS, fault)
    for kind, target in faults:
        if kind == "params" and not (
            isinstance(params, dict) and isinstance(params.get("w"), np.ndarray)
        ):
            continue  # already broken beyond breaking again
        if kind == "params":
            if target == "int":
                params["w"] = params["w"].astype(np.int64)
            elif target == "read_only":
                params["w"].flags.writeable = False
            elif target == "list":
                params = list(params.values())
            elif target == "empty":
                params, grads = {}, {}
            elif target == "extra_key":
                grads = {**grads, "extra": np.zeros(1, dtype)}
            else:
                garbage = draw(st.sampled_from(sorted(LAYER_GARBAGE)))
                params = {"w": GARBAGE[garbage](shapes["w"]), "b": params["b"]}
        elif kind == "config":
            if (target == "momentum" and name != "SGD") or (target == "betas" and name != "Adam"):
                target = "lr"
            if target == "eps" and name == "SGD":
                target = "weight_decay"
            options[target] = draw(st.sampled_from([-1.0, np.nan, "0.1", None, True, (0.9, 1.5)]))
            notes.append(f"FAULT config {target}={options[target]!r}")
            continue
        else:
            grads = dict(grads)
            valid_w = rng.standard_normal(shapes["w"]).astype(dtype)
            grads["w"], note = break_array(draw, kind, valid_w, value_seed, LAYER_GARBAGE)
            notes.append(f"FAULT grads['w']: {note}")
            continue
        notes.append(f"FAULT params: {target}")

    inputs = tuple(
        v
        for d in (params, grads)
        if isinstance(d, dict)
        for v in d.values()
        if isinstance(v, np.ndarray)
    )

    def call():
        opt = getattr(rnnfast, name)(params, grads, **options)
        for _ in range(3):
            opt.step()
        rnnfast.clip_grad_norm(grads, 1.0)
        rnnfast.clip_grad_value(grads, 0.5)
        return tuple(np.array(p) for p in params.values())

    def check(result: Any) -> None:
        finite_in = all(
            np.asarray(g).dtype.kind == "f" and np.all(np.isfinite(g)) for g in grads.values()
        )
        if finite_in:
            for p in result:
                assert np.all(np.isfinite(p)), p

    return Case(
        call=call,
        expected=None,
        fault_names=None,
        inputs=(),  # an optimizer updates its parameters in place, and clipping its gradients
        description="; ".join([*notes, f"options={options}", f"inputs={len(inputs)} arrays"]),
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        check=check,
    )


# ---------------------------------------------------------------------------------------------
# The streaming step, functional.rnn_step: a compiled fast path with C-level checks for exactly
# C-contiguous operands, and a validating path for anything else. Judged against its twin on the
# NumPy backend, which always validates: the fast path must never accept what validation
# refuses, nor compute anything else.

STEP_WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh")
STEP_ARRAYS = ("x", "h", *(f"params[0] {w}" for w in STEP_WEIGHTS), "params[-1] w_ih")
STEP_STRUCTURE = (
    "no_layers",
    "short_layer",
    "one_bias",
    "layer_list",
    "params_list",
    "params_garbage",
    "mixed_dtype_layer",
    "h_layers",
)
STEP_TARGETS = [
    *((kind, name) for kind in ARRAY_FAULTS for name in STEP_ARRAYS),
    *(("structure", name) for name in STEP_STRUCTURE),
    ("option", "nonlinearity"),
    ("option", "backend"),
]


@st.composite
def rnn_step_function_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """output, h_new = rnn_step(x, h, params, nonlinearity=..., backend=...)."""
    L = draw(st.integers(1, 3))
    B, D = draw(st.integers(0, 4)), draw(st.integers(0, 5))
    H = draw(st.sampled_from([0, 1, 3, 8, 17, 24, 64]))
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    bias = draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    layers = [
        [arr(H, D if k == 0 else H), arr(H, H), *((arr(H), arr(H)) if bias else (None, None))]
        for k in range(L)
    ]
    x, h = arr(B, D), (arr(L, B, H) if draw(st.booleans()) else None)
    notes = [f"rnn_step L={L} B={B} D={D} H={H} dtype={dtype} bias={bias} seed={value_seed}"]
    # Layouts: mostly plain (the fast path), sometimes anything (the validating path).
    if draw(st.integers(0, 3)) == 0:
        layout = draw(st.sampled_from(transform_names()))
        x = apply_transform(layout, x)
        notes.append(f"x:{layout}")
    if h is not None and draw(st.integers(0, 3)) == 0:
        layout = draw(st.sampled_from(transform_names()))
        h = apply_transform(layout, h)
        notes.append(f"h:{layout}")
    options = {
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
        "backend": draw(st.sampled_from(RNN_VALID_OPTIONS["backend"])),
    }
    params: Any = None
    faults = draw_faults(draw, STEP_TARGETS, fault)
    for kind, name in faults:
        notes.append(f"FAULT {kind} {name}")
        if kind in ARRAY_FAULTS and name in ("x", "h"):
            valid = arr(B, D) if name == "x" else arr(L, B, H)
            value, note = break_array(draw, kind, valid, value_seed)
            if name == "x":
                x = value
            else:
                h = value
            notes.append(note)
        elif kind in ARRAY_FAULTS:
            k = 0 if name.startswith("params[0]") else L - 1
            w = STEP_WEIGHTS.index(name.split()[-1])
            if w >= len(layers[k]):
                continue  # the layer was shortened by an earlier fault
            shape = [(H, D if k == 0 else H), (H, H), (H,), (H,)][w]
            valid = arr(*shape)  # fresh: the slot may hold an earlier fault already
            layers[k][w], note = break_array(draw, kind, valid, value_seed)
            notes.append(note)
        elif kind == "option":
            options[name] = draw(st.sampled_from(RNN_INVALID_OPTIONS[name]))
            notes.append(repr(options[name]))
        elif name == "no_layers":
            params = ()
        elif name == "short_layer":
            layers[-1] = layers[-1][:3]
        elif name == "one_bias":
            layers[0][2] = None if bias else arr(H)
        elif name == "layer_list":
            params = [list(layer) for layer in layers]
        elif name == "params_list":
            params = [tuple(layer) for layer in layers]
        elif name == "params_garbage":
            params = draw(st.sampled_from([None, 3, "params", object(), (None,), ((),)]))
        elif name == "mixed_dtype_layer":
            other = FLOATS[1] if dtype == FLOATS[0] else FLOATS[0]
            layers[-1] = [a.astype(other) if isinstance(a, np.ndarray) else a for a in layers[-1]]
        else:  # h_layers: h for a different number of layers
            h = arr(L + 1, B, H)
    if params is None:
        params = tuple(tuple(layer) for layer in layers)
    notes.append(f"options={options}")

    def run(backend: str):
        kwargs = dict(options)
        if backend == "numpy" and is_valid_option(kwargs["backend"], BACKENDS_IN_USE):
            kwargs["backend"] = "numpy"  # an invalid backend stays, to be refused alike
        output, h_new = rnnfast.functional.rnn_step(x, h, params, **kwargs)
        return output, h_new

    arrays = [x, h, *(a for layer in layers for a in layer)]
    return Case(
        call=lambda: run("as drawn"),
        expected=None,
        fault_names=None,
        inputs=tuple(a for a in arrays if isinstance(a, np.ndarray)),
        description="; ".join(notes),
        rtol=RTOL[dtype] * 10,
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        twin=lambda: run("numpy"),
    )


# ---------------------------------------------------------------------------------------------
# Model files: CharRNN.load and SequenceRegressor.load on damaged, tampered and foreign files.
# The outcome must be a ValueError or a model; loading must never unpickle (a pickled payload
# records it if it ever runs).

UNPICKLED: list[str] = []


class Payload:
    """Unpickling this appends to UNPICKLED: proof that a loader ran code from a file."""

    def __reduce__(self):
        return (UNPICKLED.append, ("a model file ran code",))


MODEL_FILE_DIR = Path(tempfile.mkdtemp(prefix="rnnfast-fuzz-"))
atexit.register(shutil.rmtree, MODEL_FILE_DIR, True)


def make_model(kind: str) -> Any:
    """A small model of ``kind``, "CharRNN" or "SequenceRegressor" (with a normalization, as
    after fitting)."""
    if kind == "CharRNN":
        return rnnfast.CharRNN("abc\n", hidden_size=4, num_layers=2, seed=0)
    model = rnnfast.SequenceRegressor(2, hidden_size=4, seed=0)
    model.mean, model.std = np.zeros(2), np.ones(2)
    return model


@functools.cache
def model_file(kind: str) -> tuple[dict[str, np.ndarray], bytes]:
    """The entries and the bytes of a saved model of ``kind`` (made once per process)."""
    path = MODEL_FILE_DIR / f"good-{kind}.npz"
    make_model(kind).save(path)
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}, path.read_bytes()


MODEL_FILE_DAMAGE = ("truncate", "flip_bytes", "append", "empty", "random_bytes", "pickle_file")
MODEL_FILE_TAMPER = (
    "version",
    "format",
    "config_json",
    "config_keys",
    "weight_shape",
    "weight_dtype",
    "weight_nan",
    "object_entry",
    "missing_entry",
    "extra_entry",
)
MODEL_FILE_TARGETS = [
    *(("damage", n) for n in MODEL_FILE_DAMAGE),
    *(("tamper", n) for n in MODEL_FILE_TAMPER),
]


@st.composite
def model_file_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """CharRNN.load or SequenceRegressor.load of a saved model, damaged or tampered (or not)."""
    kind = draw(st.sampled_from(["CharRNN", "SequenceRegressor"]))
    loader = getattr(rnnfast, kind).load
    entries, raw = model_file(kind)
    entries = dict(entries)
    faults = draw_faults(draw, MODEL_FILE_TARGETS, fault)
    notes = [f"{kind}.load"]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weight = draw(st.sampled_from(sorted(k for k in entries if k.startswith("param/"))))
    data: bytes | None = None
    for kind, name in faults:
        notes.append(f"FAULT {kind} {name}")
        if name.startswith("weight") or name in ("object_entry", "missing_entry"):
            if weight not in entries or entries[weight].dtype == object:
                continue  # that weight is already gone or replaced
        if kind == "tamper":
            if name == "version":
                entries["version"] = np.array(draw(st.sampled_from([0, 2, -1, 2**40])))
            elif name == "format":
                entries["format"] = np.frombuffer(b"SequenceRegressor", np.uint8).copy()
            elif name == "config_json":
                entries["config"] = np.frombuffer(b'{"vocab": ', np.uint8).copy()
            elif name == "config_keys":
                entries["config"] = np.frombuffer(b'{"a": 1}', np.uint8).copy()
            elif name == "weight_shape":
                entries[weight] = np.zeros((*entries[weight].shape, 2), entries[weight].dtype)
            elif name == "weight_dtype":
                entries[weight] = entries[weight].astype(np.float16)
            elif name == "weight_nan":
                entries[weight] = np.full_like(entries[weight], np.nan)
            elif name == "object_entry":
                entries[weight] = np.array([Payload()], dtype=object)
            elif name == "missing_entry":
                entries.pop(weight)
            else:
                entries["param/extra"] = np.zeros(3, np.float32)
        elif name == "truncate":
            data = raw[: draw(st.integers(0, len(raw) - 1))]
        elif name == "flip_bytes":
            buf = bytearray(raw)
            for i in rng.integers(0, len(buf), draw(st.integers(1, 8))):
                buf[i] ^= 1 << int(rng.integers(0, 8))
            data = bytes(buf)
        elif name == "append":
            data = raw + rng.bytes(draw(st.integers(1, 64)))
        elif name == "empty":
            data = b""
        elif name == "random_bytes":
            data = rng.bytes(draw(st.integers(1, 512)))
        else:
            data = pickle.dumps(Payload())
    path = MODEL_FILE_DIR / f"case-{len(notes)}-{rng.integers(2**62)}.npz"
    if data is None:
        with open(path, "wb") as f:
            np.savez(f, **entries)  # object entries are pickled here, as an attacker would
    else:
        path.write_bytes(data)

    def call() -> tuple[np.ndarray, ...]:
        try:
            model = loader(path)
        finally:
            path.unlink()
        return tuple(model.state_dict().values())

    def check(result: tuple[np.ndarray, ...]) -> None:
        for w in result:
            assert np.all(np.isfinite(w)), "a loaded model has non-finite weights"

    def judged() -> Any:
        try:
            return call()
        finally:
            assert not UNPICKLED, f"loading ran code from the file: {'; '.join(notes)}"

    return Case(
        call=judged,
        expected=None,
        fault_names=None,
        inputs=(),
        description="; ".join(notes),
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        check=check,
    )


@dataclass(frozen=True)
class EntryPoint:
    """One row of the fuzz table: how to draw its cases and how many CI runs."""

    cases: Callable[[tuple[str, str] | None], st.SearchStrategy[Case]]
    """Cases with random faults (None), or with exactly the one fault given."""
    targets: tuple[tuple[str, str], ...]
    """Every (kind of fault, argument): a run starts with a few single-fault cases of each."""
    ci_cases: int
    """Cases in a CI run, the single-fault sweep included."""

    @classmethod
    def of(cls, spec: ArrayFunction, ci_cases: int) -> EntryPoint:
        """The entry point of an :class:`ArrayFunction`."""
        return cls(
            cases=lambda fault: array_function_cases(spec, fault),
            targets=tuple(fault_targets(spec)),
            ci_cases=ci_cases,
        )


ENTRY_POINTS: dict[str, EntryPoint] = {
    "rnn_forward": EntryPoint.of(RNN_FORWARD, ci_cases=1100),
    "rnn_backward": EntryPoint.of(RNN_BACKWARD, ci_cases=1100),
    "rnn_step": EntryPoint(rnn_step_function_cases, tuple(STEP_TARGETS), ci_cases=600),
    "RNN": EntryPoint(rnn_layer_cases, tuple(RNN_LAYER_TARGETS), ci_cases=300),
    "RNN.step": EntryPoint(rnn_step_cases, tuple(RNN_STEP_TARGETS), ci_cases=200),
    "RNNCell": EntryPoint(rnn_cell_cases, tuple(RNN_CELL_TARGETS), ci_cases=200),
    "losses": EntryPoint(loss_cases, tuple(LOSS_TARGETS), ci_cases=300),
    "optimizers": EntryPoint(optimizer_cases, tuple(OPTIMIZER_TARGETS), ci_cases=200),
    "model files": EntryPoint(model_file_cases, tuple(MODEL_FILE_TARGETS), ci_cases=200),
}
"""Every fuzzed entry point. CI runs each one's ``ci_cases``; their sum is at least 2,000."""

SWEEP_CASES_PER_FAULT = 4
"""Cases with each single fault that a run starts with, before the random faults."""


# ---------------------------------------------------------------------------------------------
# The child process


def run_entry_point(name: str, cases: int, seed_value: int, last_case: Path | None) -> Counter:
    """Run ``cases`` Hypothesis examples of one entry point; return the outcome counts.

    First a sweep: :data:`SWEEP_CASES_PER_FAULT` cases with each single fault of the entry
    point's table, so that every kind of fault meets every argument whatever Hypothesis
    favours; then random cases up to ``cases``.
    """
    entry = ENTRY_POINTS[name]
    tally: Counter = Counter()

    def fuzz_with(strategy: st.SearchStrategy[Case], examples: int) -> None:
        @seed(seed_value)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def fuzz(case: Case) -> None:
            if last_case is not None:
                last_case.write_text(case.description)
            tally["cases"] += 1
            run_case(case, tally)

        fuzz()

    sweep = min(SWEEP_CASES_PER_FAULT, cases // (2 * len(entry.targets)))
    for target in entry.targets if sweep else ():
        fuzz_with(entry.cases(target), sweep)
    fuzz_with(entry.cases(None), cases - tally["cases"])
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", required=True, choices=sorted(ENTRY_POINTS))
    parser.add_argument("--cases", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--last-case", type=Path, default=None)
    args = parser.parse_args(argv)
    faulthandler.enable()
    tally = run_entry_point(args.entry, args.cases, args.seed, args.last_case)
    print("FUZZ-RESULT " + json.dumps({"entry": args.entry, **tally}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
