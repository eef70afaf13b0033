"""Fuzz families of training: the losses and the optimizers (and gradient clipping)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fuzz_common import (
    FLOATS,
    GARBAGE,
    LAYER_ARRAY_FAULTS,
    LAYER_GARBAGE,
    Case,
    EntryPoint,
    break_array,
    draw_faults,
)
from hypothesis import strategies as st

import rnnfast

# ---------------------------------------------------------------------------------------------
# The losses and the optimizers: a sane result, or a ValueError or TypeError

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


ENTRY_POINTS: dict[str, EntryPoint] = {
    "losses": EntryPoint(loss_cases, tuple(LOSS_TARGETS), ci_cases=300),
    "optimizers": EntryPoint(optimizer_cases, tuple(OPTIMIZER_TARGETS), ci_cases=200),
}
