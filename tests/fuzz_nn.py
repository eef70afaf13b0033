"""Fuzz families of the layers: ``RNN``, ``LSTM`` and ``GRU`` (forward + backward, ``lengths=``,
an LSTM's ``hx`` tuple and ``proj_size``), their ``step``, and ``RNNCell``, ``LSTMCell``,
``GRUCell``, each judged against its twin on the NumPy backend."""

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


# ---------------------------------------------------------------------------------------------
# The gated layers: LSTM and GRU (forward + backward, lengths, hx), their steps and cells, each
# judged against its twin on the NumPy backend

GATED_LAYER_CONFIG = ("input_size", "hidden_size", "num_layers", "dropout", "dtype")
LSTM_LAYER_TARGETS = [
    *layer_fault_targets(("x", "h0", "c0", "d_output", "d_h_n", "d_c_n"), GATED_LAYER_CONFIG),
    *(("lengths", name) for name in BAD_LENGTHS),
    *(("hx", name) for name in ("array", "one", "three", "none_inside", "swapped")),
    ("config", "proj_size"),
]
GRU_LAYER_TARGETS = [
    *layer_fault_targets(("x", "h0", "d_output", "d_h_n"), GATED_LAYER_CONFIG),
    *(("lengths", name) for name in BAD_LENGTHS),
]


def _bad_hx(name: str, h0: Any, c0: Any) -> Any:
    return {
        "array": h0,
        "one": (h0,),
        "three": (h0, c0, c0),
        "none_inside": (h0, None),
        "swapped": (c0, h0),
    }[name]


@st.composite
def gated_layer_cases(draw: st.DrawFn, cell: str, fault: tuple[str, str] | None = None) -> Case:
    """layer = LSTM/GRU(...); out, finals = layer(x, hx, lengths); layer.backward(...)."""
    lstm = cell == "lstm"
    config: dict[str, Any] = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([1, 3, 8, 24])),
        "num_layers": draw(st.integers(1, 2)),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "dropout": draw(st.sampled_from([0.0, 0.0, 0.5])),
        "bidirectional": draw(st.booleans()),
        "dtype": np.dtype(draw(st.sampled_from(FLOATS))),
        "seed": draw(st.integers(0, 2**16)),
    }
    if lstm:
        config["proj_size"] = draw(st.integers(0, config["hidden_size"] - 1))
    D, H, L = config["input_size"], config["hidden_size"], config["num_layers"]
    S = config.get("proj_size") or H
    dirs = 2 if config["bidirectional"] else 1
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    batched = draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    dtype = config["dtype"]

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    seq = ((B, T) if config["batch_first"] else (T, B)) if batched else (T,)
    lead = (L * dirs, B) if batched else (L * dirs,)
    valid = {"x": arr(*seq, D), "h0": arr(*lead, S), "d_output": arr(*seq, dirs * S)}
    valid["d_h_n"] = arr(*lead, S)
    if lstm:
        valid["c0"], valid["d_c_n"] = arr(*lead, H), arr(*lead, H)
    values: dict[str, Any] = dict(valid)
    use_hx = draw(st.booleans())
    for name in ("d_h_n", "d_c_n") if lstm else ("d_h_n",):
        if draw(st.booleans()):
            values[name] = None
    lengths = rng.integers(1, T + 1, B) if batched and draw(st.booleans()) else None
    notes = [f"{cell} {config} T={T} B={B} batched={batched} values_seed={value_seed}"]
    hx_fault = None
    faults = draw_faults(draw, LSTM_LAYER_TARGETS if lstm else GRU_LAYER_TARGETS, fault)
    for kind, name in faults:
        if kind == "lengths":
            base = lengths if lengths is not None else np.ones(B, np.int64)
            lengths = BAD_LENGTHS[name](base, T)
            notes.append(f"FAULT lengths {name}: {lengths!r}")
        elif kind == "hx":
            hx_fault = name
            notes.append(f"FAULT hx {name}")
        elif (kind, name) == ("config", "proj_size"):
            config["proj_size"] = draw(st.sampled_from([H, H + 1, -1, 1.5, True, None, "1"]))
            notes.append(f"FAULT config proj_size={config['proj_size']!r}")
        else:
            if name in ("h0", "c0"):
                use_hx = True
            notes.append(apply_layer_fault(draw, kind, name, config, values, valid, value_seed))
    if hx_fault is not None:
        hx = _bad_hx(hx_fault, values["h0"], values["c0"])
    elif not use_hx:
        hx = None
    else:
        hx = (values["h0"], values["c0"]) if lstm else values["h0"]
    notes.append(f"lengths={lengths!r}")

    def run(backend: str):
        layer = (rnnfast.LSTM if lstm else rnnfast.GRU)(**config, backend=backend)
        output, finals = layer(values["x"], hx, lengths)
        if lstm:
            dx, d0 = layer.backward(values["d_output"], values["d_h_n"], values["d_c_n"])
        else:
            dx, d0 = layer.backward(values["d_output"], values["d_h_n"])
        return output, finals, dx, d0, *(layer.grads[k] for k in sorted(layer.grads))

    return layer_case(run, values, notes, faults, dtype)


GATED_STEP_TARGETS = layer_fault_targets(("x", "h", "c"), GATED_LAYER_CONFIG)


@st.composite
def gated_step_cases(draw: st.DrawFn, cell: str, fault: tuple[str, str] | None = None) -> Case:
    """The streaming step: output, state = layer.step(x_t, state), three steps in a row."""
    lstm = cell == "lstm"
    config: dict[str, Any] = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([1, 3, 8, 24])),
        "num_layers": draw(st.integers(1, 2)),
        "dropout": 0.0,
        "bidirectional": draw(st.sampled_from([False, False, False, True])),
        "dtype": np.dtype(draw(st.sampled_from(FLOATS))),
        "seed": draw(st.integers(0, 2**16)),
    }
    if lstm:
        config["proj_size"] = draw(st.sampled_from([0, 0, config["hidden_size"] // 2]))
    D, H, L = config["input_size"], config["hidden_size"], config["num_layers"]
    S = config.get("proj_size") or H
    B, batched = draw(st.integers(1, 4)), draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    lead = (B,) if batched else ()
    dtype = config["dtype"]
    valid = {
        "x": rng.standard_normal((*lead, D)).astype(dtype),
        "h": rng.standard_normal((L, *lead, S)).astype(dtype),
        "c": rng.standard_normal((L, *lead, H)).astype(dtype),
    }
    values: dict[str, Any] = dict(valid)
    use_state = draw(st.booleans())
    notes = [f"{cell}.step {config} B={B} batched={batched} values_seed={value_seed}"]
    targets = GATED_STEP_TARGETS if lstm else [t for t in GATED_STEP_TARGETS if t[1] != "c"]
    faults = draw_faults(draw, targets, fault)
    for kind, name in faults:
        use_state = use_state or name in ("h", "c")
        notes.append(apply_layer_fault(draw, kind, name, config, values, valid, value_seed))

    def run(backend: str):
        layer = (rnnfast.LSTM if lstm else rnnfast.GRU)(**config, backend=backend)
        outputs = []
        state = ((values["h"], values["c"]) if lstm else values["h"]) if use_state else None
        for _ in range(3):
            output, state = layer.step(values["x"], state)
            outputs.append(output)
        return (*outputs, state)

    return layer_case(run, values, notes, faults, dtype)


GATED_CELL_CONFIG = ("input_size", "hidden_size", "dtype")


@st.composite
def gated_cell_cases(draw: st.DrawFn, cell: str, fault: tuple[str, str] | None = None) -> Case:
    """LSTMCell: h1, c1 = cell(x, (h, c)); cell.backward(d_h1, d_c1). GRUCell: h1 = cell(x, h);
    cell.backward(d_h1)."""
    lstm = cell == "lstm"
    config = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([1, 3, 8, 24])),
        "bias": draw(st.booleans()),
        "dtype": np.dtype(draw(st.sampled_from(FLOATS))),
        "seed": draw(st.integers(0, 2**16)),
    }
    D, H = config["input_size"], config["hidden_size"]
    B, batched = draw(st.integers(1, 4)), draw(st.booleans())
    value_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(value_seed)
    lead = (B,) if batched else ()
    names = (("x", D), ("h", H), ("d_h1", H)) + ((("c", H), ("d_c1", H)) if lstm else ())
    valid = {n: rng.standard_normal((*lead, k)).astype(config["dtype"]) for n, k in names}
    values: dict[str, Any] = dict(valid)
    use_state = draw(st.booleans())
    if lstm and draw(st.booleans()):
        values["d_c1"] = None
    notes = [f"{cell}Cell {config} B={B} batched={batched} values_seed={value_seed}"]
    targets = layer_fault_targets(tuple(n for n, _ in names), GATED_CELL_CONFIG)
    faults = draw_faults(draw, targets, fault)
    for kind, name in faults:
        use_state = use_state or name in ("h", "c")
        notes.append(apply_layer_fault(draw, kind, name, config, values, valid, value_seed))

    def run(backend: str):
        if lstm:
            layer = rnnfast.LSTMCell(**config, backend=backend)
            h1 = layer(values["x"], (values["h"], values["c"]) if use_state else None)
            grads = layer.backward(values["d_h1"], values["d_c1"])
        else:
            layer = rnnfast.GRUCell(**config, backend=backend)
            h1 = layer(values["x"], values["h"] if use_state else None)
            grads = layer.backward(values["d_h1"])
        return h1, grads, *(layer.grads[k] for k in sorted(layer.grads))

    return layer_case(run, values, notes, faults, config["dtype"])


def _gated_cell_targets(lstm: bool) -> tuple[tuple[str, str], ...]:
    names = ("x", "h", "d_h1") + (("c", "d_c1") if lstm else ())
    return tuple(layer_fault_targets(names, GATED_CELL_CONFIG))


ENTRY_POINTS: dict[str, EntryPoint] = {
    "RNN": EntryPoint(rnn_layer_cases, tuple(RNN_LAYER_TARGETS), ci_cases=300),
    "RNN.step": EntryPoint(rnn_step_cases, tuple(RNN_STEP_TARGETS), ci_cases=200),
    "RNNCell": EntryPoint(rnn_cell_cases, tuple(RNN_CELL_TARGETS), ci_cases=200),
    "LSTM": EntryPoint(
        lambda fault: gated_layer_cases("lstm", fault), tuple(LSTM_LAYER_TARGETS), ci_cases=300
    ),
    "GRU": EntryPoint(
        lambda fault: gated_layer_cases("gru", fault), tuple(GRU_LAYER_TARGETS), ci_cases=250
    ),
    "LSTM.step": EntryPoint(
        lambda fault: gated_step_cases("lstm", fault), tuple(GATED_STEP_TARGETS), ci_cases=150
    ),
    "GRU.step": EntryPoint(
        lambda fault: gated_step_cases("gru", fault),
        tuple(t for t in GATED_STEP_TARGETS if t[1] != "c"),
        ci_cases=150,
    ),
    "LSTMCell": EntryPoint(
        lambda fault: gated_cell_cases("lstm", fault), _gated_cell_targets(True), ci_cases=150
    ),
    "GRUCell": EntryPoint(
        lambda fault: gated_cell_cases("gru", fault), _gated_cell_targets(False), ci_cases=150
    ),
}
