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
import faulthandler
import inspect
import json
import re
import sys
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
        fault_names: frozenset[str],
        inputs: tuple[np.ndarray, ...],
        description: str,
        rtol: float = 0.0,
        coverage: str | None = None,
    ) -> None:
        self.call = call
        """Makes the call under test."""
        self.expected = expected
        """For a valid case, computes the correct result's arrays; None if the call must raise."""
        self.fault_names = fault_names
        """For an invalid case: the words an error message may start with (the arguments at
        fault; for errors Python raises about the call itself, the function's name)."""
        self.inputs = inputs
        """Every array passed in, to check it is unchanged afterwards."""
        self.description = description
        """Everything needed to recognise and rebuild the case."""
        self.rtol = rtol
        """Tolerance of the comparison with ``expected`` (see conftest.assert_close)."""
        self.coverage = coverage
        """For a case with exactly one fault, its tag (``"kind:argument"``), counted so the
        parent can check that every kind of fault was tried on every argument."""

    def __repr__(self) -> str:
        return f"Case({self.description})"


def result_arrays(result: Any) -> tuple[np.ndarray, ...]:
    """The arrays of a result: an ndarray, or a tuple (a NamedTuple) of them."""
    if isinstance(result, np.ndarray):
        return (result,)
    assert isinstance(result, tuple), f"result is a {type(result).__name__}, not arrays"
    return tuple(result)


def snapshot(a: np.ndarray) -> np.ndarray:
    """An independent copy with the same values, strides aside."""
    return np.array(a, copy=True)


def run_case(case: Case, tally: Counter) -> None:
    """Make the call and check its outcome; count it in ``tally`` by outcome."""
    before = [snapshot(a) for a in case.inputs]
    if case.coverage is not None:
        tally[f"single-fault {case.coverage}"] += 1
    try:
        result = case.call()
    except (ValueError, TypeError) as exc:
        if case.expected is not None:
            raise AssertionError(f"a valid case raised {exc!r}: {case.description}") from exc
        first_word = re.match(r"\w*", str(exc)).group()
        assert first_word in case.fault_names, (
            f"{type(exc).__name__}({str(exc)!r}) does not start with one of "
            f"{sorted(case.fault_names)}: {case.description}"
        )
        tally[type(exc).__name__] += 1
    else:
        assert case.expected is not None, (
            f"an invalid case (faults: {sorted(case.fault_names)}) was accepted: {case.description}"
        )
        check_result(result_arrays(result), case.expected(), case)
        tally["ok"] += 1
    for a, b in zip(case.inputs, before, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"an input was modified: {case.description}")


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
        if kind == "shape":
            shape = wrong_shape(draw, valid[name].shape)
            values[name] = np.random.default_rng(value_seed).standard_normal(shape).astype(dtype)
            notes.append(f"FAULT {name}: shape {shape}")
        elif kind == "dtype":
            bad = np.dtype(draw(st.sampled_from([*BAD_DTYPES, *FLOATS])))
            values[name] = valid[name].astype(bad)
            notes.append(f"FAULT {name}: dtype {bad}")
        elif kind == "garbage":
            garbage = draw(st.sampled_from(sorted(GARBAGE)))
            values[name] = GARBAGE[garbage](valid[name].shape)
            notes.append(f"FAULT {name}: garbage {garbage}")
        elif kind == "none":
            values[name] = None
            notes.append(f"FAULT {name}: None")
        elif kind == "nonfinite":
            arr = np.array(valid[name])
            if arr.size:
                bad_value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
                arr.flat[draw(st.integers(0, arr.size - 1))] = bad_value
                notes.append(f"FAULT {name}: holds {bad_value}")
            values[name] = arr
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
    # B * H >= 32768: bias + activation split over OpenMP threads.
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
