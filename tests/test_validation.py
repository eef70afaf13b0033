"""Edge sizes, input layouts, argument validation and backend dispatch of the public API."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from conftest import (
    RTOL,
    Problem,
    assert_close,
    assert_close_nonfinite,
    assert_grads_close,
    make_problem,
)

import rnnfast
from rnnfast import RNNGrads, functional

SMALL = {"T": 3, "B": 2, "D": 4, "H": 5}


def small_problem(dtype=np.float64, **kwargs) -> Problem:
    return make_problem(np.random.default_rng(1), **SMALL, dtype=dtype, **kwargs)


def forward_kwargs(p: Problem) -> dict:
    return {"x": p.x, "h0": p.h0, "w_ih": p.w_ih, "w_hh": p.w_hh, "b": p.b}


def backward_kwargs(p: Problem, h: np.ndarray) -> dict:
    return {"dh": p.dh, "x": p.x, "h0": p.h0, "h": h, "w_ih": p.w_ih, "w_hh": p.w_hh}


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_scalar_sized_problem_matches_closed_form(backend, nonlinearity, bias):
    """T = B = D = H = 1: one step, h = act(x w_ih + h0 w_hh + b), gradients by hand."""
    x, h0, w_ih, w_hh, b, g = 0.7, -0.4, 0.9, 0.5, (0.3 if bias else 0.0), 1.3
    a = x * w_ih + h0 * w_hh + b
    h_expected = np.tanh(a) if nonlinearity == "tanh" else max(a, 0.0)
    da = g * (1 - h_expected**2) if nonlinearity == "tanh" else g * (a > 0)

    def arr(v: float, ndim: int) -> np.ndarray:
        return np.full((1,) * ndim, v)

    h = rnnfast.rnn_forward(
        arr(x, 3),
        arr(h0, 2),
        arr(w_ih, 2),
        arr(w_hh, 2),
        arr(b, 1) if bias else None,
        nonlinearity=nonlinearity,
        backend=backend,
    )
    assert h.shape == (1, 1, 1)
    assert_close(h, arr(h_expected, 3), 1e-15, "h")
    grads = rnnfast.rnn_backward(
        arr(g, 3),
        arr(x, 3),
        arr(h0, 2),
        h,
        arr(w_ih, 2),
        arr(w_hh, 2),
        nonlinearity=nonlinearity,
        backend=backend,
    )
    expected = RNNGrads(
        dx=arr(da * w_ih, 3),
        dh0=arr(da * w_hh, 2),
        dw_ih=arr(da * x, 2),
        dw_hh=arr(da * h0, 2),
        db=arr(da, 1),
    )
    assert_grads_close(grads, expected, 1e-15)


EMPTY_SIZES = {
    "T0": (0, 2, 3, 4),
    "B0": (3, 0, 3, 4),
    "D0": (3, 2, 0, 4),
    "H0": (3, 2, 3, 0),
    "all0": (0, 0, 0, 0),
}


@pytest.mark.parametrize("size", list(EMPTY_SIZES.values()), ids=list(EMPTY_SIZES))
def test_empty_sizes(backend, dtype, nonlinearity, size):
    T, B, D, H = size
    p = make_problem(np.random.default_rng(2), T, B, D, H, dtype)
    h = p.forward(nonlinearity, backend)
    assert h.shape == (T, B, H)
    assert h.dtype == dtype
    grads = p.backward(h, nonlinearity, backend)
    shapes = {"dx": (T, B, D), "dh0": (B, H), "dw_ih": (H, D), "dw_hh": (H, H), "db": (H,)}
    for name, grad in grads._asdict().items():
        assert grad.shape == shapes[name], name
        assert grad.dtype == dtype, name
        assert np.all(np.isfinite(grad)), name
    if T == 0 or B == 0:
        # No step, or no sequence: no gradient reaches the weights or h0.
        for name in ("dh0", "dw_ih", "dw_hh", "db"):
            np.testing.assert_array_equal(getattr(grads, name), 0, err_msg=name)


def test_zero_inputs_dimension_is_like_zero_inputs(backend, dtype, nonlinearity):
    """D = 0 runs the recurrence on h0 and b alone: the same as one all-zero input feature."""
    T, B, H = 4, 3, 5
    p = make_problem(np.random.default_rng(3), T, B, 1, H, dtype)
    p.x[...] = 0
    empty = replace(p, x=p.x[:, :, :0], w_ih=p.w_ih[:, :0])
    h = p.forward(nonlinearity, backend)
    h_empty = empty.forward(nonlinearity, backend)
    assert np.any(h != 0)
    assert_close(h_empty, h, RTOL[dtype], "h")
    g = p.backward(h, nonlinearity, backend)
    g_empty = empty.backward(h_empty, nonlinearity, backend)
    for name in ("dh0", "dw_hh", "db"):
        assert_close(getattr(g_empty, name), getattr(g, name), RTOL[dtype], name)


# ---------------------------------------------------------------------------------------------
# Layouts: anything with the same values gives the same results as C-contiguous arrays.


def strided(a: np.ndarray) -> np.ndarray:
    """Every other element along every axis of a twice-as-large array."""
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def transposed(a: np.ndarray) -> np.ndarray:
    """A transposed view of a contiguous copy of the transpose."""
    return np.ascontiguousarray(a.T).T


def reversed_strides(a: np.ndarray) -> np.ndarray:
    """Negative strides along every axis."""
    flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
    return flipped[tuple(slice(None, None, -1) for _ in a.shape)]


def read_only(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out.flags.writeable = False
    return out


def big_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder(">"))


def unaligned(a: np.ndarray) -> np.ndarray:
    """A copy at an odd byte offset of its buffer."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "strided": strided,
    "transposed": transposed,
    "fortran": np.asfortranarray,
    "negative_strides": reversed_strides,
    "read_only": read_only,
    "big_endian": big_endian,
    "unaligned": unaligned,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_give_contiguous_results(backend, dtype, nonlinearity, layout):
    # B * H * H = 8 * 64 * 64 is above the compiled loop/BLAS switch; a 2-D x[t] is not
    # contiguous for transposed and Fortran layouts.
    p = make_problem(np.random.default_rng(4), 5, 8, 6, 64, dtype)
    h = p.forward(nonlinearity, backend)
    grads = p.backward(h, nonlinearity, backend)

    convert = LAYOUTS[layout]
    q = Problem(**{name: convert(a) for name, a in p.arrays().items()})
    for name, a in q.arrays().items():
        np.testing.assert_array_equal(a, getattr(p, name), err_msg=name)
        kernel_ready = a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative
        assert a.ndim == 1 or not (kernel_ready and a.flags.writeable), f"{name} is plain"
    h_q = q.forward(nonlinearity, backend)
    assert h_q.dtype == dtype
    assert h_q.flags.c_contiguous
    assert_close(h_q, h, RTOL[dtype] / 10, "h")
    grads_q = q.backward(convert(h), nonlinearity, backend)
    for name, grad in grads_q._asdict().items():
        assert grad.dtype == dtype, name
    assert_grads_close(grads_q, grads, RTOL[dtype] / 10)


def test_zero_strided_inputs(backend, dtype, nonlinearity):
    """Broadcast (zero-stride, read-only) views give the results of their contiguous copies."""
    p = make_problem(np.random.default_rng(7), 4, 3, 5, 6, dtype)
    q = replace(
        p,
        x=np.broadcast_to(p.x[:1], p.x.shape),
        h0=np.broadcast_to(p.h0[0], p.h0.shape),
        dh=np.broadcast_to(p.dh[:, :1], p.dh.shape),
    )
    assert 0 in q.x.strides and 0 in q.h0.strides and 0 in q.dh.strides
    copies = replace(q, x=q.x.copy(), h0=q.h0.copy(), dh=q.dh.copy())
    h = copies.forward(nonlinearity, backend)
    h_q = q.forward(nonlinearity, backend)
    assert_close(h_q, h, RTOL[dtype] / 10, "h")
    assert_grads_close(
        q.backward(h_q, nonlinearity, backend),
        copies.backward(h, nonlinearity, backend),
        RTOL[dtype] / 10,
    )


def test_python_lists_accepted(backend, nonlinearity):
    p = small_problem()
    h = p.forward(nonlinearity, backend)
    grads = p.backward(h, nonlinearity, backend)
    lists = Problem(**{name: a.tolist() for name, a in p.arrays().items()})
    h_list = lists.forward(nonlinearity, backend)
    assert isinstance(h_list, np.ndarray)
    assert h_list.dtype == np.float64
    np.testing.assert_array_equal(h_list, h)
    grads_list = lists.backward(h.tolist(), nonlinearity, backend)
    for name, a, e in zip(RNNGrads._fields, grads_list, grads, strict=True):
        np.testing.assert_array_equal(a, e, err_msg=name)


def test_inputs_not_mutated_and_outputs_fresh(backend, dtype, nonlinearity):
    p = small_problem(dtype)
    before = {name: a.copy() for name, a in p.arrays().items()}
    h = p.forward(nonlinearity, backend)
    h_before = h.copy()
    grads = p.backward(h, nonlinearity, backend)
    for name, a in p.arrays().items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)
    np.testing.assert_array_equal(h, h_before, err_msg="h")
    inputs = [*p.arrays().values(), h]
    for out in (h, *grads):
        assert not any(np.shares_memory(out, a) for a in inputs if a is not out)


@pytest.mark.parametrize("size", [(6, 3, 4, 5), (6, 8, 4, 64)], ids=["loop", "blas"])
def test_nan_in_x_propagates(backend, nonlinearity, size):
    """NaN is not checked: it flows like in NumPy, from its step onward, within its sequence."""
    T, B, D, H = size
    p = make_problem(np.random.default_rng(5), T, B, D, H)
    clean = p.forward(nonlinearity, backend)
    t0, b0 = 2, 1
    p.x[t0, b0, 0] = np.nan
    h = p.forward(nonlinearity, backend)
    assert np.all(np.isnan(h[t0:, b0]))
    np.testing.assert_array_equal(np.isnan(h[:t0]), False)
    others = np.arange(B) != b0
    np.testing.assert_array_equal(h[:, others], clean[:, others])
    np.testing.assert_array_equal(h[:t0], clean[:t0])
    if backend != "numpy":
        reference = p.forward(nonlinearity, "numpy")
        np.testing.assert_array_equal(np.isnan(h), np.isnan(reference))


NON_FINITE_AT = {"x": (1, 0, 2), "w_ih": (3, 0), "w_hh": (1, 2), "h0": (2, 4)}


@pytest.mark.parametrize(
    ("arg", "h0"),
    [(arg, h0) for arg in NON_FINITE_AT for h0 in (True, False) if h0 or arg != "h0"],
    ids=lambda v: v if isinstance(v, str) else ("h0" if v else "no_h0"),
)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_inputs_same_on_both_backends(compiled, nonlinearity, arg, h0, value):
    """Both backends propagate a NaN or Inf alike, forward and backward; in particular an absent
    h0 (or the missing gradient beyond the last step) contributes no 0 * Inf = NaN."""
    p = make_problem(np.random.default_rng(9), 4, 3, 5, 6, h0=h0)
    getattr(p, arg)[NON_FINITE_AT[arg]] = value
    with np.errstate(all="ignore"):
        h_cy = p.forward(nonlinearity, "cython")
        h_np = p.forward(nonlinearity, "numpy")
        assert_close_nonfinite(h_cy, h_np, RTOL[p.dtype], "h")
        g_cy = p.backward(h_np, nonlinearity, "cython")
        g_np = p.backward(h_np, nonlinearity, "numpy")
    for name, a, e in zip(RNNGrads._fields, g_cy, g_np, strict=True):
        assert_close_nonfinite(a, e, RTOL[p.dtype], name)


# ---------------------------------------------------------------------------------------------
# Bad arguments: the right exception, naming the argument.


def call_with(which: str, p: Problem, **changes):
    """Call rnn_forward or rnn_backward on a valid small problem with some arguments changed."""
    if which == "forward":
        kwargs = {**forward_kwargs(p), **changes}
        options = {k: kwargs.pop(k) for k in ("nonlinearity", "backend") if k in kwargs}
        return rnnfast.rnn_forward(**kwargs, **{"backend": "numpy", **options})
    h = p.forward("tanh", "numpy")
    kwargs = {**backward_kwargs(p, h), **changes}
    options = {k: kwargs.pop(k) for k in ("nonlinearity", "backend") if k in kwargs}
    return rnnfast.rnn_backward(**kwargs, **{"backend": "numpy", **options})


BOTH = ["forward", "backward"]


def test_call_with_valid_problem_succeeds(backend):
    """The baseline of the cases below: without changes, both calls work."""
    p = small_problem()
    assert call_with("forward", p, backend=backend).shape == (3, 2, 5)
    assert call_with("backward", p, backend=backend).dx.shape == (3, 2, 4)


def shape_cases() -> list[tuple[list[str], str, np.ndarray, str]]:
    """(calls, argument, value of a wrong shape, pattern of the error) for a SMALL problem."""
    T, B, D, H = SMALL["T"], SMALL["B"], SMALL["D"], SMALL["H"]
    return [
        (BOTH, "x", np.ones((B, D)), r"^x must have 3 dimensions \(T, B, D\)"),
        (BOTH, "x", np.ones((T, B, D, 1)), r"^x must have 3 dimensions"),
        (BOTH, "w_ih", np.ones(H), r"^w_ih must have 2 dimensions \(H, D\)"),
        (BOTH, "w_ih", np.ones((H, D, 1)), r"^w_ih must have 2 dimensions"),
        (BOTH, "w_hh", np.ones(H), r"^w_hh must have 2 dimensions \(H, H\)"),
        (BOTH, "h0", np.ones((1, B, H)), r"^h0 must have 2 dimensions \(B, H\)"),
        (BOTH, "h0", np.ones(H), r"^h0 must have 2 dimensions"),
        (["forward"], "b", np.ones((1, H)), r"^b must have 1 dimensions \(H,\)"),
        (["backward"], "h", np.ones((B, H)), r"^h must have 3 dimensions \(T, B, H\)"),
        (["backward"], "dh", np.ones((B, H)), r"^dh must have 3 dimensions"),
        # Mismatched dimensions.
        (BOTH, "w_ih", np.ones((H, D + 1)), r"^w_ih must have shape \(H, D\).*D=4"),
        (BOTH, "w_hh", np.ones((H, H + 1)), r"^w_hh must have shape \(H, H\)"),
        (BOTH, "w_hh", np.ones((H + 1, H)), r"^w_hh must have shape \(H, H\)"),
        (BOTH, "w_hh", np.ones((H + 1, H + 1)), r"^w_hh must have shape .*H=5"),
        (BOTH, "h0", np.ones((B + 1, H)), r"^h0 must have shape \(B, H\).*B=2"),
        (BOTH, "h0", np.ones((B, H + 1)), r"^h0 must have shape \(B, H\).*H=5"),
        (BOTH, "h0", np.ones((H, B)), r"^h0 must have shape"),
        (["forward"], "b", np.ones(H + 1), r"^b must have shape \(H,\).*H=5"),
        (["forward"], "b", np.ones(D), r"^b must have shape"),
        (["backward"], "h", np.ones((T + 1, B, H)), r"^h must have shape.*T=3"),
        (["backward"], "h", np.ones((T, B + 1, H)), r"^h must have shape.*B=2"),
        (["backward"], "h", np.ones((T, B, H - 1)), r"^h must have shape.*H=5"),
        (["backward"], "dh", np.ones((T - 1, B, H)), r"^dh must have shape.*T=3"),
        (["backward"], "dh", np.ones((T, B + 1, H)), r"^dh must have shape.*B=2"),
        (["backward"], "dh", np.ones((T, B, D)), r"^dh must have shape.*H=5"),
    ]


def expand(cases):
    return [
        pytest.param(which, arg, value, pattern, id=f"{which}-{arg}-{np.shape(value)}")
        for calls, arg, value, pattern in cases
        for which in calls
    ]


@pytest.mark.parametrize(("which", "arg", "value", "pattern"), expand(shape_cases()))
def test_bad_shape_raises_value_error(backend, which, arg, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        call_with(which, small_problem(), **{arg: value}, backend=backend)


FORWARD_ARGS = ["x", "h0", "w_ih", "w_hh", "b"]
BACKWARD_ARGS = ["dh", "x", "h0", "h", "w_ih", "w_hh"]
ARG_CALLS = [("forward", a) for a in FORWARD_ARGS] + [("backward", a) for a in BACKWARD_ARGS]


def value_of(which: str, p: Problem, arg: str) -> np.ndarray:
    return p.forward("tanh", "numpy") if arg == "h" else getattr(p, arg)


@pytest.mark.parametrize(("which", "arg"), [c for c in ARG_CALLS if c[1] != "x"], ids=str)
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64], ids=["x32", "x64"])
def test_dtype_mismatch_names_both_arguments(backend, which, arg, x_dtype):
    p = small_problem(x_dtype)
    other = np.float64 if x_dtype == np.float32 else np.float32
    value = value_of(which, p, arg).astype(other)
    pattern = rf"^{arg} has dtype {np.dtype(other).name} but x has dtype {np.dtype(x_dtype).name}"
    with pytest.raises(TypeError, match=pattern):
        call_with(which, p, **{arg: value}, backend=backend)


@pytest.mark.parametrize(("which", "arg"), ARG_CALLS, ids=str)
@pytest.mark.parametrize("bad_dtype", [np.int64, np.int32, np.float16, np.complex128, bool])
def test_non_float_dtype_raises_type_error(backend, which, arg, bad_dtype):
    p = small_problem()
    value = value_of(which, p, arg).astype(bad_dtype)
    if arg == "x":
        pattern = rf"^x must have dtype float32 or float64, got {np.dtype(bad_dtype)}"
    else:
        pattern = rf"^{arg} has dtype {np.dtype(bad_dtype)} but x has dtype float64"
    with pytest.raises(TypeError, match=pattern):
        call_with(which, p, **{arg: value}, backend=backend)


@pytest.mark.parametrize("bad_dtype", [np.float16, np.int64, np.longdouble])
def test_uniform_unsupported_dtype_raises_type_error(backend, bad_dtype):
    """Not only a mismatch: float16 (or int) everywhere is refused, naming x."""
    p = small_problem()
    q = Problem(**{name: a.astype(bad_dtype) for name, a in p.arrays().items()})
    with pytest.raises(TypeError, match=r"^x must have dtype float32 or float64"):
        q.forward("tanh", backend)
    with pytest.raises(TypeError, match=r"^x must have dtype float32 or float64"):
        q.backward(q.dh, "tanh", backend)


@pytest.mark.parametrize(
    ("which", "arg"),
    [("forward", a) for a in ("x", "w_ih", "w_hh")]
    + [("backward", a) for a in ("dh", "x", "h", "w_ih", "w_hh")],
    ids=str,
)
def test_none_for_required_array_raises_type_error(backend, which, arg):
    with pytest.raises(TypeError, match=rf"^{arg} must be an array, got None"):
        call_with(which, small_problem(), **{arg: None}, backend=backend)


@pytest.mark.parametrize(
    ("arg", "value"),
    [("x", [[[1.0, 2.0]], [[3.0]]]), ("w_hh", "weights"), ("w_ih", {"a": 1.0}), ("x", object())],
    ids=["ragged", "string", "dict", "object"],
)
def test_unreadable_array_raises_type_error(backend, arg, value):
    with pytest.raises(TypeError, match=rf"^{arg} (must|has)"):
        call_with("forward", small_problem(), **{arg: value}, backend=backend)


def test_float64_lists_with_float32_x_raise(backend):
    """A list is float64: with a float32 x it is a dtype mismatch, not silently cast."""
    p = small_problem(np.float32)
    with pytest.raises(TypeError, match=r"^w_hh has dtype float64 but x has dtype float32"):
        call_with("forward", p, w_hh=p.w_hh.tolist(), backend=backend)


@pytest.mark.parametrize("which", BOTH)
@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", "", None, 1])
def test_unknown_nonlinearity_raises_value_error(backend, which, nonlinearity):
    with pytest.raises(ValueError, match=r"^nonlinearity must be one of \('tanh', 'relu'\)"):
        call_with(which, small_problem(), nonlinearity=nonlinearity, backend=backend)


@pytest.mark.parametrize("which", BOTH)
@pytest.mark.parametrize("bad_backend", ["torch", "Cython", "", None, 0])
def test_unknown_backend_raises_value_error(which, bad_backend):
    with pytest.raises(ValueError, match=r"^backend must be one of \('auto', 'cython', 'numpy'\)"):
        call_with(which, small_problem(), backend=bad_backend)


# ---------------------------------------------------------------------------------------------
# Backend dispatch and RNNFAST_BACKEND.


@pytest.mark.parametrize("which", BOTH)
@pytest.mark.parametrize("value", ["gpu", "reference", "1"])
def test_invalid_env_backend_raises_on_auto(monkeypatch, which, value):
    monkeypatch.setenv("RNNFAST_BACKEND", value)
    with pytest.raises(ValueError, match=rf"RNNFAST_BACKEND must be one of .*got '{value}'"):
        call_with(which, small_problem(), backend="auto")
    # An explicit backend does not consult the variable.
    call_with(which, small_problem(), backend="numpy")


class Spy:
    """Wraps a function, recording that it was called."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def spy_on(monkeypatch, module) -> dict[str, Spy]:
    spies = {name: Spy(getattr(module, name)) for name in ("rnn_forward", "rnn_backward")}
    for name, spy in spies.items():
        monkeypatch.setattr(module, name, spy)
    return spies


@pytest.mark.parametrize("env", ["numpy", " NumPy "])
def test_env_numpy_makes_auto_use_reference(monkeypatch, env):
    monkeypatch.setenv("RNNFAST_BACKEND", env)
    reference = spy_on(monkeypatch, rnnfast._reference)
    kernels = spy_on(monkeypatch, rnnfast._backend.kernels) if rnnfast.HAVE_COMPILED else None
    p = small_problem()
    h = call_with("forward", p, backend="auto")
    call_with("backward", p, backend="auto")  # its own h comes from an explicit numpy call
    assert reference["rnn_forward"].calls == 2
    assert reference["rnn_backward"].calls == 1
    if kernels is not None:
        assert (kernels["rnn_forward"].calls, kernels["rnn_backward"].calls) == (0, 0)
    np.testing.assert_array_equal(h, p.forward("tanh", "numpy"))


@pytest.mark.parametrize("env", [None, "", "auto", "cython"])
def test_auto_uses_compiled_kernels(compiled, monkeypatch, env):
    if env is None:
        monkeypatch.delenv("RNNFAST_BACKEND", raising=False)
    else:
        monkeypatch.setenv("RNNFAST_BACKEND", env)
    kernels = spy_on(monkeypatch, rnnfast._backend.kernels)
    reference = spy_on(monkeypatch, rnnfast._reference)
    p = small_problem()
    h = p.forward("tanh", "auto")
    p.backward(h, "tanh", "auto")
    assert (kernels["rnn_forward"].calls, kernels["rnn_backward"].calls) == (1, 1)
    assert (reference["rnn_forward"].calls, reference["rnn_backward"].calls) == (0, 0)


def test_explicit_cython_ignores_env_numpy(compiled, monkeypatch):
    monkeypatch.setenv("RNNFAST_BACKEND", "numpy")
    kernels = spy_on(monkeypatch, rnnfast._backend.kernels)
    p = small_problem()
    p.backward(p.forward("relu", "cython"), "relu", "cython")
    assert (kernels["rnn_forward"].calls, kernels["rnn_backward"].calls) == (1, 1)


@pytest.mark.parametrize(
    "env, backend, compiled_step",
    [
        (None, "auto", True),
        ("numpy", "auto", False),
        ("numpy", "cython", True),
        (None, "numpy", False),
    ],
)
@pytest.mark.parametrize("layer", ["RNN.step", "RNNCell"])
def test_streaming_step_follows_backend_and_env(
    request, monkeypatch, env, backend, compiled_step, layer
):
    """The layers' one-call step (the compiled step when the backend is the default) must give
    way to RNNFAST_BACKEND, read at every call, and to an explicit backend."""
    if compiled_step:
        request.getfixturevalue("compiled")  # fails without the extension
    if layer == "RNNCell":
        cell = rnnfast.RNNCell(3, 4, seed=0, backend=backend)
        h = np.zeros((2, 4), np.float32)

        def step(x, h):
            return (cell(x, h),)

    else:
        rnn = rnnfast.RNN(3, 4, seed=0, backend=backend)
        h = np.zeros((1, 2, 4), np.float32)

        def step(x, h):
            return rnn.step(x, h)  # (output, h_new)

    x = np.ones((2, 3), np.float32)
    expected = step(x, h)  # before the variable changes: the same numbers either way
    if env is None:
        monkeypatch.delenv("RNNFAST_BACKEND", raising=False)
    else:
        monkeypatch.setenv("RNNFAST_BACKEND", env)
    reference = spy_on(monkeypatch, rnnfast._reference)
    results = step(x, h)
    assert (reference["rnn_forward"].calls == 0) == compiled_step
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_compiled_backend_is_decided_by_one_dict_lookup_in_the_common_case(compiled, monkeypatch):
    """_backend.compiled: the kernels for "auto" with RNNFAST_BACKEND unset, and for an explicit
    "cython"; None for "numpy" and for RNNFAST_BACKEND=numpy; set at all, resolve() decides."""
    backend = rnnfast._backend
    monkeypatch.delenv("RNNFAST_BACKEND", raising=False)
    assert backend.compiled("auto") is backend.kernels
    assert backend.compiled("cython") is backend.kernels
    assert backend.compiled("numpy") is None
    for bad in ("AUTO", None, b"auto"):
        with pytest.raises(ValueError, match="backend must be one of"):
            backend.compiled(bad)
    monkeypatch.setenv("RNNFAST_BACKEND", "numpy")
    assert backend.compiled("auto") is None
    assert backend.compiled("cython") is backend.kernels
    monkeypatch.setenv("RNNFAST_BACKEND", "auto")
    assert backend.compiled("auto") is backend.kernels


def test_one_door_for_every_step(compiled, monkeypatch):
    """RNN.step, RNNCell and functional.rnn_step all reach the kernel through functional.step,
    which tries the compiled fast path once per call."""
    monkeypatch.delenv("RNNFAST_BACKEND", raising=False)
    kernels = rnnfast._backend.kernels
    calls = []
    real = kernels.rnn_step

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(kernels, "rnn_step", counting)
    door = Spy(functional.step)
    monkeypatch.setattr(functional, "step", door)
    x, h = np.ones((2, 3), np.float32), np.zeros((1, 2, 4), np.float32)
    rnn = rnnfast.RNN(3, 4, seed=0)
    cell = rnnfast.RNNCell(3, 4, seed=0)
    rnn.step(x, h)
    cell(x, h[0])
    functional.rnn_step(x, h, rnn._step_layers)
    assert door.calls == 3
    assert len(calls) == 3  # one C call each: the fast path, not repeated
    calls.clear()
    rnn.step(x[0], h[:, 0])  # unbatched: the fast path declines once, then the checked path
    assert len(calls) == 2


def _import_with_simd(value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RNNFAST_SIMD": value, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "import rnnfast._backend as b; print(b.kernels.simd_level(), b.HAVE_COMPILED)"
    return subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_simd_environment_warns_and_keeps_the_best_level(compiled):
    """A bad RNNFAST_SIMD is a RuntimeWarning naming the allowed levels, not an import error;
    a good one is applied once, at import."""
    best = rnnfast._backend.kernels.simd_level()
    proc = _import_with_simd("no-such-level")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [best, "True"]
    assert "RuntimeWarning" in proc.stderr and "RNNFAST_SIMD='no-such-level'" in proc.stderr
    for level in rnnfast._backend.kernels.SIMD_LEVELS:
        assert level in proc.stderr
    proc = _import_with_simd("baseline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["baseline", "True"]
    assert "RuntimeWarning" not in proc.stderr


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    """Without the compiled module: "auto" warns once and uses the reference; "cython" raises."""
    monkeypatch.setattr(rnnfast._backend, "kernels", None)
    monkeypatch.setattr(rnnfast._backend, "COMPILED_IMPORT_ERROR", ImportError("simulated"))
    monkeypatch.setattr(rnnfast._backend, "_warned_fallback", False)
    monkeypatch.delenv("RNNFAST_BACKEND", raising=False)
    reference = spy_on(monkeypatch, rnnfast._reference)
    p = small_problem()
    with pytest.warns(RuntimeWarning, match="simulated"):
        p.forward("tanh", "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.forward("tanh", "auto")
    assert reference["rnn_forward"].calls == 2
    with pytest.raises(RuntimeError, match=r"backend='cython'.*simulated"):
        p.forward("tanh", "cython")
    monkeypatch.setenv("RNNFAST_BACKEND", "cython")
    with pytest.raises(RuntimeError, match=r"backend='cython'"):
        p.forward("tanh", "auto")
