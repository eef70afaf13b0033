"""What every fuzz family shares: the :class:`Case` and how one is run and judged, the argument
values (valid ones in every layout, every kind of bad one), the cases of functions of arrays
with named dimensions (:class:`ArrayFunction`), the faults thrown at the layer stack, and the
:class:`EntryPoint` row of the table in ``fuzz_harness.py``.

The only outcomes allowed are

* for a valid case, a correct result: the reference computed on plain C-contiguous copies of
  the same values (NaN and Inf in the same places), in fresh arrays of the right dtype;
* for an invalid case, a ``ValueError`` or ``TypeError`` whose message starts with the name of
  an argument at fault;
* in both, the inputs unchanged.

Validity is decided here by a model of the documented input policy (``np.asarray``
conversion, float32/float64 alike, one consistent set of dimensions, option values), not by
asking rnnfast, so the fuzz also fails on a bad input that is silently accepted. The layer
stack's validity is not modelled: an RNN or RNNCell call must end like its twin on the NumPy
backend (a differential oracle), the rest must return a sane result or raise a ValueError or
TypeError.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from conftest import RTOL, assert_close_nonfinite
from hypothesis import strategies as st
from test_validation import LAYOUTS

import rnnfast

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
# The RNN's options, shared by the functions and the layers

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


def layer_fault_targets(arrays: Sequence[str], config: Sequence[str]) -> list[tuple[str, str]]:
    return [(kind, name) for kind in LAYER_ARRAY_FAULTS for name in arrays] + [
        ("config", name) for name in config
    ]


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


# ---------------------------------------------------------------------------------------------
# The table row of an entry point


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
