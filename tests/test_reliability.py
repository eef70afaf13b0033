"""Input policy at the edges: NaN and Inf (check_finite, ReLU overflow, tanh saturation), sizes
beyond the BLAS integer, allocations that fail, and objects NumPy cannot convert."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import RTOL, assert_close_nonfinite, forward_backward, make_problem

import rnnfast
import rnnfast.benchmark
import rnnfast.models.file_format
from rnnfast import RNNGrads, functional

# These tests feed NaN and Inf on purpose: NumPy's overflow warnings from the reference are
# expected noise.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FORWARD_ARGS = ("x", "h0", "w_ih", "w_hh", "b")
BACKWARD_ARGS = ("dh", "x", "h0", "h", "w_ih", "w_hh")


def call(which: str, arrays: dict, **options):
    """rnn_forward or rnn_backward with the named arrays."""
    if which == "forward":
        return rnnfast.rnn_forward(*(arrays[n] for n in FORWARD_ARGS), **options)
    return rnnfast.rnn_backward(*(arrays[n] for n in BACKWARD_ARGS), **options)


def problem_arrays(dtype=np.float64, T=3, B=2, D=4, H=5) -> dict[str, np.ndarray]:
    p = make_problem(np.random.default_rng(7), T, B, D, H, dtype)
    h = p.forward("tanh", "numpy")
    return {"x": p.x, "h0": p.h0, "w_ih": p.w_ih, "w_hh": p.w_hh, "b": p.b, "dh": p.dh, "h": h}


# ---------------------------------------------------------------------------------------------
# check_finite


ARG_CALLS = [("forward", a) for a in FORWARD_ARGS] + [("backward", a) for a in BACKWARD_ARGS]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("which", "arg"), ARG_CALLS, ids=str)
def test_check_finite_names_the_argument(backend, dtype, which, arg, bad):
    arrays = problem_arrays(dtype)
    arrays[arg] = arrays[arg].copy()
    arrays[arg].flat[-1] = bad
    with pytest.raises(ValueError, match=rf"^{arg} contains NaN or Inf \(check_finite=True\)"):
        call(which, arrays, backend=backend, check_finite=True)
    # The default lets it through (an Inf may saturate tanh away; a NaN always shows).
    outputs = result_tuple(call(which, arrays, backend=backend))
    if np.isnan(bad):
        assert any(np.any(np.isnan(out)) for out in outputs)


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_check_finite_accepts_finite_inputs_and_changes_nothing(backend, which):
    arrays = problem_arrays()
    plain = call(which, arrays, backend=backend)
    checked = call(which, arrays, backend=backend, check_finite=True)
    for a, b in zip(result_tuple(plain), result_tuple(checked), strict=True):
        np.testing.assert_array_equal(a, b)


def result_tuple(result) -> tuple[np.ndarray, ...]:
    return (result,) if isinstance(result, np.ndarray) else tuple(result)


@pytest.mark.parametrize("value", ["yes", 1, 0, None, 1.0, [True]], ids=repr)
def test_check_finite_must_be_a_bool(value):
    with pytest.raises(TypeError, match=r"^check_finite must be True or False"):
        call("forward", problem_arrays(), backend="numpy", check_finite=value)


def test_check_finite_accepts_numpy_bool_and_empty_arrays(backend):
    arrays = problem_arrays(T=0)
    h = call("forward", arrays, backend=backend, check_finite=np.bool_(True))
    assert h.shape == (0, 2, 5)


def test_check_finite_allocates_no_full_size_temporary():
    """min/max instead of isfinite(...).all(): no boolean array as large as the input."""
    tracemalloc = pytest.importorskip("tracemalloc")
    x = np.ones((200, 50, 100))  # 8 MB; an isfinite mask would be 1 MB
    tracemalloc.start()
    try:
        assert rnnfast._validation._all_finite(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.size // 10


# ---------------------------------------------------------------------------------------------
# NaN and Inf propagate alike in both backends


@pytest.mark.parametrize("h0", [True, False], ids=["h0", "no_h0"])
@pytest.mark.parametrize("size", [(3, 2, 3, 4), (3, 8, 3, 64)], ids=["loop", "blas"])
def test_nonfinite_weights_propagate_alike(compiled, dtype, nonlinearity, size, h0):
    """A NaN or Inf in w_hh reaches exactly the same outputs in both backends; with h0=None
    the first step has no recurrent product, so 0 * Inf does not make a NaN there."""
    T, B, D, H = size
    p = make_problem(np.random.default_rng(8), T, B, D, H, dtype, h0=h0)
    p.w_hh[1, 2] = np.nan
    p.w_hh[0, 0] = np.inf
    h_ref, g_ref = forward_backward(p, nonlinearity, "numpy")
    h_cy, g_cy = forward_backward(p, nonlinearity, "cython")
    assert_close_nonfinite(h_cy, h_ref, RTOL[dtype], "h")
    for name, a, e in zip(RNNGrads._fields, g_cy, g_ref, strict=True):
        assert_close_nonfinite(a, e, RTOL[dtype], name)
    if not h0:
        assert np.all(np.isfinite(h_ref[0])), "step 0 does not involve w_hh"
    assert not np.all(np.isfinite(h_ref[1:]))


@pytest.mark.parametrize("size", [(4, 2, 3, 4), (4, 8, 3, 64)], ids=["loop", "blas"])
def test_relu_overflow_gives_inf_alike(compiled, dtype, size):
    """Huge positive weights: every product overflows, so h is +Inf from step 0 on, and the
    gradients are Inf too, the same in both backends (no NaN: nothing is Inf - Inf)."""
    T, B, D, H = size
    huge = np.sqrt(np.finfo(dtype).max) * 4  # huge * huge overflows
    x = np.full((T, B, D), huge, dtype)
    w_ih = np.full((H, D), huge, dtype)
    w_hh = np.full((H, H), huge, dtype)
    b = np.zeros(H, dtype)
    dh = np.ones((T, B, H), dtype)
    results = {}
    for backend in ("numpy", "cython"):
        with np.errstate(over="ignore", invalid="ignore"):
            h = rnnfast.rnn_forward(x, None, w_ih, w_hh, b, nonlinearity="relu", backend=backend)
            g = rnnfast.rnn_backward(
                dh, x, None, h, w_ih, w_hh, nonlinearity="relu", backend=backend
            )
        results[backend] = {"h": h, **g._asdict()}
    np.testing.assert_array_equal(results["cython"]["h"], np.inf)
    for name, a in results["cython"].items():
        assert not np.any(np.isnan(a)), name
        assert_close_nonfinite(a, results["numpy"][name], RTOL[dtype], name)
    # h is Inf, so the weight gradients (da >= 1 times h or x) are; da itself overflows
    # from the second-to-last step back, and with it dx.
    for name in ("dw_ih", "dw_hh", "dh0", "db"):
        np.testing.assert_array_equal(results["cython"][name], np.inf, err_msg=name)
    np.testing.assert_array_equal(results["cython"]["dx"][:-2], np.inf)


def saturating_problem(dtype, size, scale) -> dict[str, np.ndarray]:
    """Pre-activations of +-``scale`` times D: each row of ``w_ih`` is +scale or -scale, x ones."""
    T, B, D, H = size
    rng = np.random.default_rng(9)
    return {
        "x": np.ones((T, B, D), dtype),
        "h0": None,
        "w_ih": (rng.choice([-1.0, 1.0], size=(H, 1)) * np.full((H, D), scale)).astype(dtype),
        "w_hh": rng.uniform(-0.1, 0.1, (H, H)).astype(dtype),
        "b": None,
        "dh": rng.standard_normal((T, B, H)).astype(dtype),
    }


def forward_backward_arrays(arrays: dict, backend: str) -> tuple[np.ndarray, RNNGrads]:
    with np.errstate(over="ignore", invalid="ignore"):
        h = call("forward", arrays, backend=backend)
        return h, call("backward", {**arrays, "h": h}, backend=backend)


SATURATION_SIZES = {"loop": (3, 2, 3, 4), "blas": (3, 8, 3, 64)}


@pytest.mark.parametrize("size", list(SATURATION_SIZES.values()), ids=list(SATURATION_SIZES))
def test_tanh_saturates_to_exactly_one_with_zero_derivative(backend, dtype, size):
    """Huge finite pre-activations: h is exactly +-1 and every gradient exactly 0, no NaN."""
    scale = 1e30 if dtype == np.float32 else 1e300
    h, grads = forward_backward_arrays(saturating_problem(dtype, size, scale), backend)
    np.testing.assert_array_equal(np.abs(h), 1)
    for name, grad in grads._asdict().items():
        np.testing.assert_array_equal(grad, 0, err_msg=name)


@pytest.mark.parametrize("size", list(SATURATION_SIZES.values()), ids=list(SATURATION_SIZES))
def test_tanh_of_infinite_pre_activation(backend, dtype, size):
    """Pre-activations of +-Inf: h is exactly +-1 and da exactly 0, so dh0, dw_hh and db are 0;
    dx = da @ w_ih and dw_ih = da^T @ x meet 0 * Inf, which IEEE makes NaN, in both backends."""
    arrays = saturating_problem(dtype, size, np.inf)
    h, grads = forward_backward_arrays(arrays, backend)
    np.testing.assert_array_equal(np.abs(h), 1)
    for name in ("dh0", "dw_hh", "db"):
        np.testing.assert_array_equal(getattr(grads, name), 0, err_msg=name)
    assert np.all(np.isnan(grads.dx))
    if backend == "cython":
        h_ref, grads_ref = forward_backward_arrays(arrays, "numpy")
        np.testing.assert_array_equal(h, h_ref)
        for name, a, e in zip(RNNGrads._fields, grads, grads_ref, strict=True):
            assert_close_nonfinite(a, e, 0.0, name)


# ---------------------------------------------------------------------------------------------
# Sizes beyond the BLAS integer, and allocations that fail


def huge(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zero-stride array of ``shape``: any size, no memory."""
    return np.broadcast_to(np.ones((1,) * len(shape), dtype), shape)


# (label in the message, sizes (T, B, D, H)) where that operand alone is 24 elements
BLAS_OPERANDS = {
    "T \\* B \\* D \\(the input x\\)": (2, 3, 4, 1),
    "T \\* B \\* H \\(the states h\\)": (2, 3, 1, 4),
    "H \\* D \\(w_ih\\)": (1, 1, 6, 4),
    "H \\* H \\(w_hh\\)": (1, 1, 1, 5),  # 25 elements
}


@pytest.mark.parametrize("which", ["forward", "backward"])
@pytest.mark.parametrize("label", list(BLAS_OPERANDS), ids=lambda s: s.split()[0] + s.split()[-2])
def test_each_gemm_operand_is_checked_against_the_blas_integer(compiled, monkeypatch, which, label):
    """With the limit lowered, the largest operand is refused one element past it, not at it."""
    T, B, D, H = BLAS_OPERANDS[label]
    arrays = problem_arrays(np.float64, T, B, D, H)
    largest = max(T * B * D, T * B * H, H * D, H * H)
    monkeypatch.setattr(functional, "BLAS_INT_MAX", largest - 1)
    with pytest.raises(ValueError, match=rf"^{label} = {largest} elements exceeds the BLAS limit"):
        call(which, arrays, backend="cython")
    call(which, arrays, backend="numpy")  # the reference has no such limit
    monkeypatch.setattr(functional, "BLAS_INT_MAX", largest)
    call(which, arrays, backend="cython")


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_real_blas_limit_refuses_before_allocating(compiled, which):
    """2^31 rows of x: refused at once, without copying the zero-stride input (16 GB)."""
    T, B, D, H = 2**16, 2**15, 1, 1
    arrays = {
        "x": huge((T, B, D)),
        "h0": None,
        "w_ih": np.ones((H, D), np.float32),
        "w_hh": np.ones((H, H), np.float32),
        "b": None,
        "dh": huge((T, B, H)),
        "h": huge((T, B, H)),
    }
    assert T * B * D > functional.BLAS_INT_MAX
    with pytest.raises(ValueError, match=r"T \* B \* D \(the input x\) = 2147483648 elements"):
        call(which, arrays, backend="cython")


def absurd_arrays() -> dict[str, np.ndarray | None]:
    """x of 2^50 elements (8 PiB as float64): no machine can copy it."""
    T, B, D, H = 2**20, 2**20, 2**10, 1
    return {
        "x": huge((T, B, D), np.float64),
        "h0": None,
        "w_ih": np.ones((H, D)),
        "w_hh": np.ones((H, H)),
        "b": None,
        "dh": huge((T, B, H), np.float64),
        "h": huge((T, B, H), np.float64),
    }


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_unsatisfiable_allocation_is_memory_error(which):
    """The reference backend must copy the zero-stride x to run: NumPy's MemoryError."""
    with pytest.raises(MemoryError):
        call(which, absurd_arrays(), backend="numpy")


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_memory_error_before_the_kernels(compiled, monkeypatch, which):
    """Even with the BLAS check out of the way, the compiled backend fails with MemoryError
    while making inputs contiguous, before any kernel runs."""
    monkeypatch.setattr(functional, "BLAS_INT_MAX", 2**62)
    with pytest.raises(MemoryError):
        call(which, absurd_arrays(), backend="cython")


# ---------------------------------------------------------------------------------------------
# Objects NumPy cannot convert


class ArrayRaises:
    """Like a PyTorch tensor that requires grad: ``np.asarray`` raises something else."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __array__(self, dtype=None, copy=None):
        raise self.exc


@pytest.mark.parametrize(("which", "arg"), ARG_CALLS, ids=str)
def test_array_conversion_errors_become_type_errors(which, arg):
    arrays = problem_arrays()
    arrays[arg] = ArrayRaises(RuntimeError("no numpy() for you"))
    with pytest.raises(TypeError, match=rf"^{arg} must be an array .* \(RuntimeError: no numpy"):
        call(which, arrays, backend="numpy")


def test_memory_error_during_conversion_is_not_masked():
    arrays = problem_arrays()
    arrays["w_hh"] = ArrayRaises(MemoryError("simulated"))
    with pytest.raises(MemoryError, match="simulated"):
        call("forward", arrays, backend="numpy")


@pytest.mark.parametrize(("which", "arg"), ARG_CALLS, ids=str)
def test_masked_arrays_are_refused(which, arg):
    arrays = problem_arrays()
    arrays[arg] = np.ma.masked_array(arrays[arg], mask=np.zeros(arrays[arg].shape, bool))
    with pytest.raises(TypeError, match=rf"^{arg} must be a plain array, got a masked array"):
        call(which, arrays, backend="numpy")


# ---------------------------------------------------------------------------------------------
# dtype arguments: float32 or float64, anything else a TypeError naming the argument


BAD_DTYPES = ["flaot32", None, "float16", np.int32, "<>f8", object(), np.dtype(">f8"), "complex"]


def dtype_callers():
    return {
        "RNN": lambda dt: rnnfast.RNN(3, 4, dtype=dt),
        "RNNCell": lambda dt: rnnfast.RNNCell(3, 4, dtype=dt),
        "Linear": lambda dt: rnnfast.Linear(3, 4, dtype=dt),
        "one_hot": lambda dt: rnnfast.one_hot([0, 1], 3, dtype=dt),
        "CharRNN": lambda dt: rnnfast.CharRNN("ab", hidden_size=4, dtype=dt),
        "SequenceRegressor": lambda dt: rnnfast.SequenceRegressor(hidden_size=4, dtype=dt),
        "bench Case": lambda dt: rnnfast.benchmark.Case(2, 1, 3, 4, dtype=dt),
    }


@pytest.mark.parametrize("caller", list(dtype_callers()))
@pytest.mark.parametrize("bad", BAD_DTYPES, ids=repr)
def test_every_dtype_argument_refuses_anything_but_float32_and_float64(caller, bad):
    with pytest.raises(TypeError, match=r"^dtype must be float32 or float64, got "):
        dtype_callers()[caller](bad)


@pytest.mark.parametrize("caller", list(dtype_callers()))
@pytest.mark.parametrize("good", ["float32", np.float64, "f8", np.dtype("float32")], ids=repr)
def test_every_dtype_argument_accepts_float32_and_float64(caller, good):
    made = dtype_callers()[caller](good)
    dt = getattr(made, "dtype", None)
    assert np.dtype(dt) == np.dtype(good)


# ---------------------------------------------------------------------------------------------
# Model files are untrusted input: one ValueError, bounded memory and time


def small_model_file(tmp_path, **config_changes) -> Path:
    """A saved CharRNN (8 hidden units), its configuration changed as given."""
    good = tmp_path / "good.npz"
    rnnfast.CharRNN("ab", hidden_size=8, seed=0).save(good)
    if not config_changes:
        return good
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    config = json.loads(arrays["config"].tobytes()) | config_changes
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    return bad


def load_peak_bytes(path) -> int:
    """Load ``path`` (a ValueError expected) and return the peak of traced allocations."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"^'.*'"):
            rnnfast.CharRNN.load(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "changes",
    [
        {"hidden_size": 12000},
        {"hidden_size": 10**9},
        {"num_layers": 200_000},
        {"embedding_dim": 3e8},
        {"embedding_dim": 7},  # smaller than the largest stored dimension, still not stored
        {"hidden_size": 8, "num_layers": 8},
        {"dropout": 1e308},
        {"hidden_size": 2**80},
    ],
    ids=str,
)
def test_config_claiming_more_than_the_stored_weights_builds_nothing(tmp_path, changes):
    assert load_peak_bytes(small_model_file(tmp_path, **changes)) < 4 << 20


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("[" * 20_000 + "]" * 20_000, "nests deeper"),
        ('{"a": ' * 5_000 + "1" + "}" * 5_000, "nests deeper"),
        ('{"x": "' + "y" * 70_000 + '"}', "more than"),
        ('{"hidden_size": NaN}', "not valid JSON"),
        ('{"hidden_size": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
    ids=["deep-list", "deep-object", "huge", "nan", "long-int"],
)
def test_config_is_parsed_with_a_depth_and_size_bound(tmp_path, config, match):
    path = small_model_file(tmp_path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["config"] = np.frombuffer(config.encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        rnnfast.CharRNN.load(tmp_path / "bad.npz")


def add_zero_entry(path, name: str, nbytes: int, compression=zipfile.ZIP_DEFLATED) -> None:
    """Append an entry of ``nbytes`` zeros (a valid .npy header, deflated to almost nothing)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (nbytes,)}
    )
    with zipfile.ZipFile(path, "a", compression) as z, z.open(name, "w", force_zip64=True) as e:
        e.write(header.getvalue())
        block = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            e.write(block)


@pytest.mark.parametrize("name", ["surprise.npy", "param/decoder.bias.npy", "extra/junk.npy"])
def test_oversize_or_unexpected_entries_are_refused_from_the_directory(tmp_path, monkeypatch, name):
    path = small_model_file(tmp_path)
    if name == "param/decoder.bias.npy":  # replace it by an oversize one
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files if k != "param/decoder.bias"}
        np.savez(path, **arrays)
    monkeypatch.setattr(rnnfast.models.file_format, "MAX_FILE_BYTES", 4 << 20)
    add_zero_entry(path, name, 64 << 20)
    assert path.stat().st_size < 1 << 20
    assert load_peak_bytes(path) < 2 << 20


def test_the_largest_model_file_is_a_stated_limit(tmp_path):
    big = tmp_path / "big.npz"
    with open(big, "wb") as f:
        f.truncate(rnnfast.models.file_format.MAX_FILE_BYTES + 1)  # sparse
    with pytest.raises(ValueError, match="more than"):
        rnnfast.CharRNN.load(big)
    with pytest.raises(ValueError, match="not a regular file"):
        rnnfast.CharRNN.load("/dev/zero")


def test_a_vocabulary_must_be_text(tmp_path):
    path = small_model_file(tmp_path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["extra/vocab"] = np.array([97, 0xDCFF], np.uint32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="lone surrogate U\\+DCFF"):
        rnnfast.CharRNN.load(path)
    with pytest.raises(ValueError, match="lone surrogate U\\+D800"):
        rnnfast.CharRNN("a\ud800", hidden_size=4)
