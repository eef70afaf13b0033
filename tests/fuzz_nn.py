"""Fuzz families of the layers: ``RNN`` (forward + backward, ``lengths=``), ``RNN.step`` and
``RNNCell``, each judged against its twin on the NumPy backend."""

from __future__ import annotations

from typing import Any

import numpy as np
from fuzz_common import (
    FLOATS,
    Case,
    EntryPoint,
    apply_layer_fault,
    draw_faults,
    layer_case,
    layer_fault_targets,
)
from hypothesis import strategies as st

import rnnfast

# ---------------------------------------------------------------------------------------------
# The layers: RNN (forward + backward, and the streaming step) and RNNCell, each judged
# against its twin on the NumPy backend

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


ENTRY_POINTS: dict[str, EntryPoint] = {
    "RNN": EntryPoint(rnn_layer_cases, tuple(RNN_LAYER_TARGETS), ci_cases=300),
    "RNN.step": EntryPoint(rnn_step_cases, tuple(RNN_STEP_TARGETS), ci_cases=200),
    "RNNCell": EntryPoint(rnn_cell_cases, tuple(RNN_CELL_TARGETS), ci_cases=200),
}
