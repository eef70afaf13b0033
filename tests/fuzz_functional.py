"""Fuzz families of the functional API: ``rnn_forward``, ``rnn_backward`` (arrays with named
dimensions, judged against the NumPy reference) and ``rnn_step`` (the fast path judged against
its validating twin)."""

from __future__ import annotations

from typing import Any

import numpy as np
from conftest import RTOL, make_problem
from fuzz_common import (
    ARRAY_FAULTS,
    BACKENDS_IN_USE,
    FLOATS,
    RNN_INVALID_OPTIONS,
    RNN_VALID_OPTIONS,
    ArrayFunction,
    Case,
    EntryPoint,
    apply_transform,
    break_array,
    draw_faults,
    is_valid_option,
    transform_names,
)
from hypothesis import strategies as st

import rnnfast
from rnnfast import _reference

# ---------------------------------------------------------------------------------------------
# The RNN core: rnn_forward and rnn_backward

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
# The gated cells: lstm_forward + lstm_backward, gru_forward + gru_backward (one case runs the
# training forward and its backward) and lstm_step / gru_step, judged against their twins on
# the NumPy backend (validity not modelled: the same error type, or close results).

LSTM_ARRAYS = ("x", "h0", "c0", "w_ih", "w_hh", "b", "w_hr", "dh", "dc")
GRU_ARRAYS = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", "dh")
GATED_OPTIONS = ("backend", "check_finite", "training")


def _gated_targets(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(k, n) for k in ARRAY_FAULTS for n in names] + [("option", o) for o in GATED_OPTIONS]


def _gated_valid(rng, cell: str, s: dict[str, int], dtype: np.dtype) -> dict[str, Any]:
    T, B, D, H, P = s["T"], s["B"], s["D"], s["H"], s["P"]
    S = P or H
    G = (4 if cell == "lstm" else 3) * H

    def arr(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(dtype)

    v = {"x": arr(T, B, D), "h0": arr(B, S), "w_ih": arr(G, D, scale=0.5)}
    v["w_hh"] = arr(G, S, scale=0.5)
    if cell == "lstm":
        v |= {"c0": arr(B, H), "b": arr(G), "w_hr": arr(P, H) if P else None}
        v |= {"dh": arr(T, B, S), "dc": arr(T, B, H)}
    else:
        v |= {"b_ih": arr(G), "b_hh": arr(G), "dh": arr(T, B, H)}
    return v


@st.composite
def gated_sequence_cases(draw: st.DrawFn, cell: str, fault: tuple[str, str] | None = None):
    """out = lstm_forward(..., training=True); lstm_backward(..., out's h, c, workspace) (the
    GRU's alike)."""
    lstm = cell == "lstm"
    sizes = {k: draw(st.integers(0 if k != "H" else 1, 4)) for k in "TBD"}
    sizes["H"] = draw(st.sampled_from([1, 2, 5, 17]))
    # projections narrower and (the functions allow it) wider than the cell
    H = sizes["H"]
    sizes["P"] = draw(st.sampled_from([0, 0, 1, H - 1, H + 2])) if lstm and H > 1 else 0
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    valid = _gated_valid(rng, cell, sizes, dtype)
    values: dict[str, Any] = dict(valid)
    for name in ("h0", "c0", "dc") if lstm else ("h0",):
        if draw(st.booleans()):
            values[name] = None
    if draw(st.integers(0, 3)) == 0:
        for name in ("b",) if lstm else ("b_ih", "b_hh"):
            values[name] = None
    options: dict[str, Any] = {"backend": "auto", "check_finite": draw(st.booleans())}
    options["training"] = True
    notes = [f"{cell} sizes={sizes} dtype={dtype} seed={value_seed}"]
    names = LSTM_ARRAYS if lstm else GRU_ARRAYS
    faults = draw_faults(draw, _gated_targets(names), fault)
    for kind, name in faults:
        if kind == "option":
            bad = {
                "backend": ["cuda", None, 3],
                "check_finite": ["yes", 1, None],
                "training": ["yes", 1, None],
            }[name]
            options[name] = draw(st.sampled_from(bad))
            notes.append(f"FAULT option {name}={options[name]!r}")
            continue
        base = valid[name] if valid[name] is not None else rng.standard_normal((2, 2))
        values[name], note = break_array(draw, kind, base.astype(dtype), value_seed)
        notes.append(f"FAULT {name}: {note}")

    def run(backend: str):
        kw = {"backend": backend, "check_finite": options["check_finite"]}
        if options["backend"] != "auto":
            kw["backend"] = options["backend"]  # an invalid backend, refused alike
        v = values
        if lstm:
            h, c, ws = rnnfast.lstm_forward(
                v["x"], v["h0"], v["c0"], v["w_ih"], v["w_hh"], v["b"], v["w_hr"],
                training=options["training"], **kw,
            )  # fmt: skip
            grads = rnnfast.lstm_backward(
                v["dh"], v["dc"], v["x"], v["h0"], v["c0"], h, c, ws, v["w_ih"], v["w_hh"],
                v["w_hr"], **kw,
            )  # fmt: skip
            return h, c, tuple(g for g in grads if g is not None)
        h, ws = rnnfast.gru_forward(
            v["x"], v["h0"], v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"],
            training=options["training"], **kw,
        )  # fmt: skip
        grads = rnnfast.gru_backward(
            v["dh"], v["x"], v["h0"], h, ws, v["w_ih"], v["w_hh"], v["b_hh"], **kw
        )
        return h, tuple(g for g in grads if g is not None)

    return Case(
        call=lambda: run("cython" if rnnfast.HAVE_COMPILED else "numpy"),
        expected=None,
        fault_names=None,
        inputs=tuple(a for a in values.values() if isinstance(a, np.ndarray)),
        description="; ".join(notes),
        rtol=RTOL[dtype] * 100,  # T steps of float32 kernel-vs-reference rounding
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        twin=lambda: run("numpy"),
    )


GATED_STEP_ARRAYS = (
    "x", "h", "c", "params[0] w_ih", "params[0] w_hh", "params[0] b_ih", "params[0] w_hr"
)  # fmt: skip
GATED_STEP_STRUCTURE = ("no_layers", "short_layer", "one_bias", "params_garbage", "h_layers")
GATED_STEP_TARGETS = [
    *((k, n) for k in ARRAY_FAULTS for n in GATED_STEP_ARRAYS),
    *(("structure", n) for n in GATED_STEP_STRUCTURE),
]


@st.composite
def gated_step_function_cases(draw: st.DrawFn, cell: str, fault: tuple[str, str] | None = None):
    """lstm_step(x, h, c, params) / gru_step(x, h, params), against the NumPy twin."""
    lstm = cell == "lstm"
    L, B, D = draw(st.integers(1, 2)), draw(st.integers(0, 3)), draw(st.integers(0, 4))
    H = draw(st.sampled_from([1, 3, 8, 17]))
    P = draw(st.sampled_from([0, 0, 1, H - 1, H + 2])) if lstm and H > 1 else 0
    S = P or H
    G = (4 if lstm else 3) * H
    dtype = np.dtype(draw(st.sampled_from(FLOATS)))
    bias = draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)

    def arr(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(dtype)

    layers = []
    for k in range(L):
        layer = [
            arr(G, D if k == 0 else S),
            arr(G, S),
            *((arr(G), arr(G)) if bias else (None,) * 2),
        ]
        layers.append(layer + ([arr(P, H) if P else None] if lstm else []))
    x = arr(B, D)
    h = arr(L, B, S) if draw(st.booleans()) else None
    c = arr(L, B, H) if lstm and draw(st.booleans()) else None
    params: Any = None
    notes = [f"{cell}_step L={L} B={B} D={D} H={H} P={P} dtype={dtype} seed={value_seed}"]
    targets = [t for t in GATED_STEP_TARGETS if lstm or t[1] not in ("c", "params[0] w_hr")]
    faults = draw_faults(draw, targets, fault)
    for kind, name in faults:
        notes.append(f"FAULT {kind} {name}")
        if kind in ARRAY_FAULTS and name in ("x", "h", "c"):
            base = {"x": arr(B, D), "h": arr(L, B, S), "c": arr(L, B, H)}[name]
            value, note = break_array(draw, kind, base, value_seed)
            x, h, c = (value if name == n else v for n, v in (("x", x), ("h", h), ("c", c)))
            notes.append(note)
        elif kind in ARRAY_FAULTS:
            w = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr").index(name.split()[-1])
            layers[0][w], note = break_array(
                draw, kind, arr(*[(G, D), (G, S), (G,), (G,), (P or 2, H)][w]), value_seed
            )
            notes.append(note)
        elif name == "no_layers":
            params = ()
        elif name == "short_layer":
            layers[-1] = layers[-1][:3]
        elif name == "one_bias":
            layers[0][2] = None if bias else arr(G)
        elif name == "params_garbage":
            params = draw(st.sampled_from([None, 3, "params", object(), (None,), ((),)]))
        else:  # h_layers
            h = arr(L + 1, B, S)
    if params is None:
        params = tuple(tuple(layer) for layer in layers)

    def run(backend: str):
        if lstm:
            output, h_new, c_new = rnnfast.lstm_step(x, h, c, params, backend=backend)
            return output, h_new, c_new
        output, h_new = rnnfast.gru_step(x, h, params, backend=backend)
        return output, h_new

    arrays = [x, h, c, *(a for layer in layers for a in layer)]
    return Case(
        call=lambda: run("auto"),
        expected=None,
        fault_names=None,
        inputs=tuple(a for a in arrays if isinstance(a, np.ndarray)),
        description="; ".join(notes),
        rtol=RTOL[dtype] * 10,
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        twin=lambda: run("numpy"),
    )


ENTRY_POINTS: dict[str, EntryPoint] = {
    "rnn_forward": EntryPoint.of(RNN_FORWARD, ci_cases=1100),
    "rnn_backward": EntryPoint.of(RNN_BACKWARD, ci_cases=1100),
    "rnn_step": EntryPoint(rnn_step_function_cases, tuple(STEP_TARGETS), ci_cases=600),
    "lstm_forward/backward": EntryPoint(
        lambda fault: gated_sequence_cases("lstm", fault),
        tuple(_gated_targets(LSTM_ARRAYS)),
        ci_cases=300,
    ),
    "gru_forward/backward": EntryPoint(
        lambda fault: gated_sequence_cases("gru", fault),
        tuple(_gated_targets(GRU_ARRAYS)),
        ci_cases=300,
    ),
    "lstm_step": EntryPoint(
        lambda fault: gated_step_function_cases("lstm", fault),
        tuple(GATED_STEP_TARGETS),
        ci_cases=200,
    ),
    "gru_step": EntryPoint(
        lambda fault: gated_step_function_cases("gru", fault),
        tuple(t for t in GATED_STEP_TARGETS if t[1] not in ("c", "params[0] w_hr")),
        ci_cases=200,
    ),
}
