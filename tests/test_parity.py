"""The compiled kernels agree with the NumPy reference on the forward pass and all gradients.

The kernels pick a path per call: the recurrent product of a step through BLAS or through their
own small-product code, and (in builds with runtime SIMD dispatch) one of several instruction
sets. The tests here reach every path,
by size and by the kernels' tuning API (``tuned``/``set_tuning``) and (where it exists)
``set_simd_level``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
import threadpoolctl
from conftest import RTOL, assert_close, assert_grads_close, make_problem, step_product
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnfast

pytestmark = pytest.mark.usefixtures("compiled")

KERNELS = rnnfast._backend.kernels  # None when the extension did not import


def check_parity(problem, nonlinearity: str) -> None:
    """Compiled vs reference: h, then the five gradients given the same h (the reference's,
    so that a relu unit sitting exactly at 0 cannot flip between the two backward passes)."""
    rtol = RTOL[problem.dtype]
    h_ref = problem.forward(nonlinearity, "numpy")
    h_cy = problem.forward(nonlinearity, "cython")
    assert h_ref.dtype == h_cy.dtype == problem.dtype
    assert_close(h_cy, h_ref, rtol, "h")

    g_ref = problem.backward(h_ref, nonlinearity, "numpy")
    g_cy = problem.backward(h_ref, nonlinearity, "cython")
    for name, a, e in zip(rnnfast.RNNGrads._fields, g_cy, g_ref, strict=True):
        assert a.dtype == e.dtype == problem.dtype, f"{name}: {a.dtype} / {e.dtype}"
    assert_grads_close(g_cy, g_ref, rtol)


def size_id(size: tuple[int, int, int, int]) -> str:
    return "T{}-B{}-D{}-H{}".format(*size)


# ---------------------------------------------------------------------------------------------
# SIMD levels (kernels with runtime dispatch have set_simd_level; others run one default path).


def supported_simd_levels() -> list[str | None]:
    """Every instruction set this CPU can run the kernels with; [None] without dispatch."""
    if KERNELS is None or not hasattr(KERNELS, "set_simd_level"):
        return [None]
    levels = []
    original = KERNELS.simd_level()
    try:
        for level in KERNELS.SIMD_LEVELS:
            try:
                KERNELS.set_simd_level(level)
            except ValueError:  # this CPU cannot run it
                continue
            levels.append(level)
    finally:
        KERNELS.set_simd_level(original)
    return levels


SIMD_LEVELS = supported_simd_levels()


@contextmanager
def simd_level(level: str | None):
    """Run the kernels with ``level`` inside the block (None: leave the default)."""
    if level is None:
        yield
        return
    previous = KERNELS.set_simd_level(level)
    try:
        assert KERNELS.simd_level() == level
        yield
    finally:
        KERNELS.set_simd_level(previous)


# ---------------------------------------------------------------------------------------------
# Random problems.


@settings(max_examples=150, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    T=st.integers(1, 40),
    B=st.integers(1, 8),
    D=st.integers(1, 32),
    H=st.integers(1, 64),
    dtype=st.sampled_from([np.float32, np.float64]),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    h0=st.booleans(),
    level=st.sampled_from(SIMD_LEVELS),
)
def test_parity_random(seed, T, B, D, H, dtype, nonlinearity, bias, h0, level):
    problem = make_problem(np.random.default_rng(seed), T, B, D, H, dtype, bias=bias, h0=h0)
    with simd_level(level):
        check_parity(problem, nonlinearity)


# ---------------------------------------------------------------------------------------------
# Sizes on both sides of the step-product switch.


def threshold_sizes() -> list[tuple[int, int, int, int]]:
    """(T, B, D, H) on both sides of the switches between a step's recurrent products (BLAS,
    the small product, the panel product): a batch of 1 with w_hh at and above 128 KB (float32
    H 181/182, float64 128/129), batches up to 8 and beyond, batches of 3/4 and 32/33 (the
    panel product's range), batches that leave a partial block of rows, and H at and beyond the
    register widths of the small product and the widths of the panels (12 to 256 columns, by
    SIMD level and dtype)."""
    sizes = [(6, 1, 16, 128), (6, 4, 16, 64), (6, 8, 16, 64), (4, 32, 24, 256)]
    sizes += [(5, 1, 7, h) for h in (128, 129, 181, 182)]
    sizes += [(5, 8, 7, 20), (5, 9, 7, 20)]
    sizes += [(4, 3, 5, h) for h in (1, 3, 7, 24, 25, 48, 49, 96, 97, 129, 255, 257)]
    sizes += [(3, b, 5, 100) for b in (3, 4, 5, 11, 13, 32, 33)]
    sizes += [(3, 9, 4, h) for h in (12, 13, 47, 65, 144, 145)]
    sizes += [(2, 32, 3, 512), (2, 32, 3, 513)]
    return list(dict.fromkeys(sizes))


THRESHOLD_SIZES = threshold_sizes()


@pytest.mark.parametrize("size", THRESHOLD_SIZES, ids=size_id)
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "no_h0"])
def test_parity_across_step_threshold(size, h0, dtype, nonlinearity):
    problem = make_problem(np.random.default_rng(sum(size)), *size, dtype, h0=h0)
    check_parity(problem, nonlinearity)


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize("size", THRESHOLD_SIZES, ids=size_id)
def test_parity_at_each_simd_level(level, size, dtype, nonlinearity):
    problem = make_problem(np.random.default_rng(sum(size) + 1), *size, dtype)
    with simd_level(level):
        check_parity(problem, nonlinearity)


# ---------------------------------------------------------------------------------------------
# Paths forced with tuned(step_product=...) (set_tuning, restored on exit).

FORCED = ("blas", "small", "panel")


@pytest.fixture(params=FORCED)
def tuning(request):
    with KERNELS.tuned(step_product=request.param):
        yield request.param


def test_set_tuning_returns_previous_values():
    previous = KERNELS.set_tuning(step_product="panel")
    try:
        assert previous == {"step_product": "auto"}
        assert KERNELS.get_tuning()["step_product"] == "panel"
    finally:
        KERNELS.set_tuning(**previous)
    assert KERNELS.get_tuning()["step_product"] == "auto"
    assert KERNELS.get_tuning() == KERNELS.DEFAULT_TUNING
    with pytest.raises(ValueError, match="step_product must be one of"):
        KERNELS.set_tuning(step_product="sometimes")
    with pytest.raises(TypeError, match="unknown field"):
        KERNELS.set_tuning(step_products="panel")
    with pytest.raises(TypeError, match="must be an int"):
        KERNELS.set_tuning(serial_gemm_max_macs=1.5)
    with pytest.raises(ValueError, match="must be >= 0"):
        KERNELS.set_tuning(serial_gemm_max_macs=-1)
    with pytest.raises(ValueError):  # nothing changes when one field is bad
        KERNELS.set_tuning(step_product="panel", overlap="sometimes")
    assert KERNELS.get_tuning() == KERNELS.DEFAULT_TUNING
    with KERNELS.tuned(step_product="small", step_dot_max_batch=3):
        assert KERNELS.get_tuning()["step_product"] == "small"
        assert KERNELS.get_tuning()["step_dot_max_batch"] == 3
    assert KERNELS.get_tuning() == KERNELS.DEFAULT_TUNING


@pytest.mark.parametrize("size", [(5, 1, 3, 1), (7, 3, 5, 9), *THRESHOLD_SIZES], ids=size_id)
def test_parity_with_forced_paths(tuning, size, dtype, nonlinearity):
    problem = make_problem(np.random.default_rng(len(tuning) + sum(size)), *size, dtype)
    # The forced product runs, except "small" where H is wider than its registers: BLAS then.
    assert step_product(problem.w_hh, size[1]) in (
        {tuning, "blas"} if tuning == "small" else {tuning}
    )
    check_parity(problem, nonlinearity)


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize("size", [(4, 1, 3, 5), (4, 3, 5, 20), (3, 9, 4, 13)], ids=size_id)
def test_small_product_at_each_simd_level(level, size, dtype, nonlinearity):
    """The small product forced, on sizes that fit its registers at every level (at most 20
    columns: 10 float64 vectors of the baseline level)."""
    with KERNELS.tuned(step_product="small"):
        problem = make_problem(np.random.default_rng(sum(size)), *size, dtype)
        with simd_level(level):
            assert step_product(problem.w_hh, size[1]) == "small"
            check_parity(problem, nonlinearity)


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
def test_threshold_sizes_reach_every_product(level, dtype):
    """Under the measured rule, THRESHOLD_SIZES put steps on each of the four products (the dot
    form at B=1 where BLAS would run)."""
    with simd_level(level):
        reached = {step_product(np.zeros((s[3], s[3]), dtype), s[1]) for s in THRESHOLD_SIZES}
    assert reached == {"blas", "small", "panel", "dot"}


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize(
    "size",
    [
        *[(3, 1, 4, 5), (3, 7, 5, 33), (3, 6, 4, 64), (3, 5, 4, 128), (3, 13, 6, 100)],
        *[(2, 9, 3, 145), (40, 9, 40, 100)],  # the last: packed w_hh held in dx's memory
    ],
    ids=size_id,
)
def test_panel_product_at_each_simd_level(level, size, dtype, nonlinearity):
    """Every block height (a partial last block of rows) and panel width (whole and partial
    last vectors, last panels of 1 to 3 vectors) of the panel product, at each SIMD level's
    register blocking; backward's packed w_hh in memory of its own or of an output written
    after the time loop."""
    with KERNELS.tuned(step_product="panel"):
        problem = make_problem(np.random.default_rng(sum(size)), *size, dtype)
        with simd_level(level):
            check_parity(problem, nonlinearity)


def _step_layers(rng, D: int, H: int, layers: int, bias: bool, dtype) -> tuple:
    params, d_in = [], D
    for _ in range(layers):
        w_ih, w_hh = (rng.uniform(-0.5, 0.5, shape).astype(dtype) for shape in ((H, d_in), (H, H)))
        b_ih, b_hh = (rng.uniform(-0.5, 0.5, H).astype(dtype) if bias else None for _ in "ih")
        params.append((w_ih, w_hh, b_ih, b_hh))
        d_in = H
    return tuple(params)


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize(
    "B,D,H",
    [
        *[(1, 1, 1), (1, 3, 17), (2, 32, 128), (3, 65, 100), (4, 16, 40), (1, 40, 7)],
        *[(7, 64, 33), (16, 5, 20), (17, 9, 40)],  # groups of 4, 2 and 1 rows; B=17: GEMM
    ],
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_streaming_step_at_each_simd_level(level, B, D, H, bias, dtype, nonlinearity):
    """The compiled step, two layers, against the reference: the dot-form product (B up to
    STEP_DOT_MAX_BATCH = 16) on whole and partial blocks of output units, rows shorter than a
    vector, partial last vectors (read by masked loads), and GEMM above; h given and None."""
    assert KERNELS.get_tuning()["step_dot_max_batch"] == 16
    rng = np.random.default_rng(B * 10_000 + D * 100 + H)
    params = _step_layers(rng, D, H, 2, bias, dtype)
    x = rng.standard_normal((B, D)).astype(dtype)
    for h in (rng.standard_normal((2, B, H)).astype(dtype), None):
        expected = rnnfast.functional.rnn_step(
            x, h, params, nonlinearity=nonlinearity, backend="numpy"
        )
        with simd_level(level):
            got = KERNELS.rnn_step(x, h, params, nonlinearity)
        assert got is not None  # the compiled path, not the validating fallback
        for name, a, e in zip(("output", "h_new"), got, expected, strict=True):
            assert a.dtype == np.dtype(dtype)
            assert_close(a, e, RTOL[np.dtype(dtype)], name)


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize("B,D,H", [(7, 32, 128), (16, 65, 100), (11, 128, 33)])
def test_streaming_step_rows_keep_their_bits_in_any_batch(level, B, D, H, dtype):
    """The step takes the rows of a batch in groups of up to 4 that share each load of the
    weights: every row's result must be bit-identical to that row stepped alone."""
    rng = np.random.default_rng(B + D + H)
    params = _step_layers(rng, D, H, 2, True, dtype)
    x, h = rng.standard_normal((B, D)).astype(dtype), rng.standard_normal((2, B, H)).astype(dtype)
    with simd_level(level):
        output, h_new = KERNELS.rnn_step(x, h, params, "tanh")
        for row in range(B):
            alone = KERNELS.rnn_step(x[row : row + 1], h[:, row : row + 1].copy(), params, "tanh")
            np.testing.assert_array_equal(alone[0][0], output[row])
            np.testing.assert_array_equal(alone[1][:, 0], h_new[:, row])


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize("B,D,H", [(1, 32, 128), (1, 65, 100), (7, 9, 40), (3, 128, 33)])
def test_streaming_step_gives_the_same_bits_on_every_call(level, B, D, H, dtype):
    """Each pass over the weights (a layer's group of rows) runs in the direction opposite to
    the pass before, in whatever call (the units past the last whole block first when
    backward). Between two calls on the same arguments, a step of one pass (B=1, one layer)
    turns every pass of the second call around: both must agree to the last bit, and with
    the reference."""
    rng = np.random.default_rng(B * D * H)
    params = _step_layers(rng, D, H, 2, True, dtype)
    x, h = rng.standard_normal((B, D)).astype(dtype), rng.standard_normal((2, B, H)).astype(dtype)
    one_pass = (_step_layers(rng, 3, 5, 1, True, dtype), rng.standard_normal((1, 3)).astype(dtype))
    expected = rnnfast.functional.rnn_step(x, h, params, nonlinearity="tanh", backend="numpy")
    calls = []
    with simd_level(level):
        for _ in range(2):
            calls.append(KERNELS.rnn_step(x, h, params, "tanh"))
            KERNELS.rnn_step(one_pass[1], None, one_pass[0], "tanh")
    for output, h_new in calls[1:]:
        np.testing.assert_array_equal(output, calls[0][0])
        np.testing.assert_array_equal(h_new, calls[0][1])
    assert_close(calls[0][1], expected[1], RTOL[np.dtype(dtype)], "h_new")


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize("H", [7, 40, 100], ids=lambda h: f"H{h}")
def test_streaming_step_keeps_a_nan_weight_in_its_own_row(level, H, dtype):
    """A NaN in one row of w_hh makes exactly that unit's output NaN: the summing network and
    the masked tails send every row's sum to its own unit and read nothing of another row."""
    rng = np.random.default_rng(H)
    params = _step_layers(rng, 9, H, 1, True, dtype)
    x, h = rng.standard_normal((1, 9)).astype(dtype), rng.standard_normal((1, 1, H)).astype(dtype)
    for row in {0, H // 2, H - 1}:
        w_hh = params[0][1].copy()
        w_hh[row, -1] = np.nan
        with simd_level(level):
            output, _ = KERNELS.rnn_step(x, h, ((params[0][0], w_hh, *params[0][2:]),), "tanh")
        np.testing.assert_array_equal(np.flatnonzero(np.isnan(output[0])), [row])


def _placed(a: np.ndarray, lanes: int) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts ``lanes`` elements past a 64-byte
    boundary."""
    per_line = 64 // a.itemsize
    base = np.empty(a.size + 2 * per_line, a.dtype)
    start = (-base.ctypes.data % 64 // a.itemsize + lanes) % per_line
    out = base[start : start + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == lanes * a.itemsize
    return out


@pytest.mark.parametrize("level", SIMD_LEVELS, ids=str)
@pytest.mark.parametrize("B,D,H", [(1, 32, 128), (3, 64, 64), (2, 5, 100), (1, 128, 33)])
def test_streaming_step_gives_the_same_bits_wherever_the_weights_sit(level, B, D, H, dtype):
    """The step reads weights whose rows all start off a cache line with aligned loads and
    rotates the sums back (AVX-512): the result must not depend on the weights' addresses, to
    the last bit, and must match the reference."""
    rng = np.random.default_rng(D * H)
    ((w_ih, w_hh, b_ih, b_hh),) = _step_layers(rng, D, H, 1, True, dtype)
    x, h = rng.standard_normal((B, D)).astype(dtype), rng.standard_normal((1, B, H)).astype(dtype)
    expected = rnnfast.functional.rnn_step(
        x, h, ((w_ih, w_hh, b_ih, b_hh),), nonlinearity="tanh", backend="numpy"
    )[1]
    results = []
    with simd_level(level):
        per_line = 64 // np.dtype(dtype).itemsize
        for lanes in range(per_line):
            other = (3 * lanes + 1) % per_line  # w_ih and w_hh off by different amounts
            params = ((_placed(w_ih, lanes), _placed(w_hh, other), b_ih, b_hh),)
            results.append(KERNELS.rnn_step(_placed(x, other), _placed(h, lanes), params, "tanh"))
    for output, h_new in results:
        np.testing.assert_array_equal(h_new, results[0][1])
        np.testing.assert_array_equal(output, results[0][0])
    assert_close(results[0][1], expected, RTOL[np.dtype(dtype)], "h_new")


# ---------------------------------------------------------------------------------------------
# Overlap: a helper thread does the GEMMs around the time loop, a chunk of steps at a time
# (tuned(overlap=mode, overlap_chunk_rows=rows)).


@contextmanager
def overlap(mode: str, chunk_rows: int | None = None):
    fields = {"overlap": mode}
    if chunk_rows is not None:
        fields["overlap_chunk_rows"] = chunk_rows
    with KERNELS.tuned(**fields):
        yield


def overlap_setting() -> tuple[str, int]:
    tuning = KERNELS.get_tuning()
    return tuning["overlap"], tuning["overlap_chunk_rows"]


def test_set_overlap_returns_previous_values_and_checks_them():
    assert overlap_setting() == ("auto", 48)
    with overlap("on", 7):
        assert overlap_setting() == ("on", 7)
    assert overlap_setting() == ("auto", 48)
    assert KERNELS.set_tuning(overlap="on", overlap_chunk_rows=7) == {
        "overlap": "auto",
        "overlap_chunk_rows": 48,
    }
    KERNELS.set_tuning(overlap="auto", overlap_chunk_rows=48)
    with pytest.raises(ValueError, match="overlap must be one of"):
        KERNELS.set_tuning(overlap="sometimes")
    with pytest.raises(ValueError, match="overlap_chunk_rows must be >= 1"):
        KERNELS.set_tuning(overlap_chunk_rows=0)


def test_overlap_rule():
    """Auto: a helper for the mid-sized grid rows when BLAS may use two threads; never for tiny
    calls, for steps on BLAS (which threads them itself) or within a single chunk."""
    two_threads = (rnnfast.get_num_threads() or 1) >= 2
    assert (KERNELS.overlap_steps(100, 8, 64, 128, 4) > 0) == two_threads
    assert (KERNELS.overlap_steps(100, 32, 128, 256, 4) > 0) == two_threads
    # 48 rows a chunk: one step of 32
    assert KERNELS.overlap_steps(100, 32, 128, 256, 4) == (1 if two_threads else 0)
    assert KERNELS.overlap_steps(25, 1, 65, 100, 4) == 0  # too small to pay for a thread
    assert KERNELS.overlap_steps(50, 64, 1024, 4200, 4) == 0  # BLAS steps: w_hh 71 MB > 64 MiB
    assert KERNELS.overlap_steps(50, 300, 64, 256, 4) == 0  # BLAS steps: B > 256
    assert KERNELS.overlap_steps(6, 8, 64, 1024, 4) == 0  # one chunk of 6 steps
    with threadpoolctl.threadpool_limits(1):
        assert KERNELS.overlap_steps(100, 8, 64, 128, 4) == 0
    with overlap("on"):
        assert KERNELS.overlap_steps(25, 1, 65, 100, 4) == 0  # 48 steps a chunk: T < 2 chunks
        # B=1 H=64 steps use the small product, hence a helper; below AVX2 (16 vectors of 4
        # floats, more than the baseline holds in registers) they are BLAS steps, hence none
        small = step_product(np.zeros((64, 64), np.float32), 1) != "blas"
        assert KERNELS.overlap_steps(100, 1, 32, 64, 4) == (48 if small else 0)
        assert KERNELS.overlap_steps(50, 64, 1024, 4200, 4) == 0  # still BLAS steps
    with overlap("off"):
        assert KERNELS.overlap_steps(100, 8, 64, 128, 4) == 0


OVERLAP_SIZES = [(20, 1, 3, 5), (40, 4, 5, 12), (33, 8, 7, 20), (12, 3, 4, 130), (12, 3, 1, 40)]


@pytest.mark.parametrize("product", ["small", "panel"])
@pytest.mark.parametrize("chunk_rows", [1, 5, 16])
@pytest.mark.parametrize("size", OVERLAP_SIZES, ids=size_id)
def test_parity_with_overlap(product, chunk_rows, size, dtype, nonlinearity):
    """Every chunk split (one step, several, a partial last chunk), both products, backward's
    packed w_hh in dx's memory and in its own (the last size: dx is too small)."""
    with KERNELS.tuned(step_product=product), overlap("on", chunk_rows):
        T, B = size[:2]
        assert 0 < KERNELS.overlap_steps(*size, np.dtype(dtype).itemsize) < T or (
            product == "small" and step_product(np.zeros((size[3],) * 2, dtype), B) == "blas"
        )
        problem = make_problem(np.random.default_rng(chunk_rows + sum(size)), *size, dtype)
        check_parity(problem, nonlinearity)


SPLIT_SIZES = [(9, 3, 5, 100), (7, 5, 9, 96), (6, 2, 4, 50), (5, 4, 1, 130)]


@pytest.mark.parametrize("size", SPLIT_SIZES, ids=size_id)
def test_parity_with_overlap_split_forward_steps(size, dtype, nonlinearity):
    """A forward whose steps are split by columns between the caller and the helper (forced
    here at small sizes): whole and partial last panels, the helper's share ending on a panel
    boundary, h0 given and None, bias and none; then backward as usual."""
    with KERNELS.tuned(step_product="panel", split_min_step_macs=0), overlap("on", 1):
        panels = KERNELS.split_panels(*size, np.dtype(dtype).itemsize)
        assert panels >= 2  # the split path, not whole steps on one thread
        for given in (True, False):  # h0 and bias
            rng = np.random.default_rng(sum(size))
            problem = make_problem(rng, *size, dtype, bias=given, h0=given)
            check_parity(problem, nonlinearity)


def test_overlap_split_results_do_not_depend_on_which_thread_takes_what(dtype):
    """A split forward shares out its items at run time (each step's panels to whichever thread
    asks first), so the threads' shares change from call to call, the more so with a third
    thread busy on the cores: the bits must not."""
    problem = make_problem(np.random.default_rng(4), 40, 8, 24, 200, dtype)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(1000))

    rival = threading.Thread(target=busy)
    try:
        with KERNELS.tuned(step_product="panel", split_min_step_macs=0), overlap("on", 8):
            assert KERNELS.split_panels(40, 8, 24, 200, np.dtype(dtype).itemsize) >= 2
            runs = [problem.forward("tanh", "cython") for _ in range(5)]
            rival.start()
            runs += [problem.forward("tanh", "cython") for _ in range(5)]
    finally:
        stop.set()
        if rival.is_alive():
            rival.join()
    for h in runs[1:]:
        np.testing.assert_array_equal(h, runs[0])


def test_overlap_split_rule():
    """Auto: large panel-product steps split their columns, and from an eighth of that size
    batches up to 16 with H >= 256; the rest do not."""
    with overlap("on"):
        assert KERNELS.split_panels(50, 64, 512, 512, 4) > 0
        assert KERNELS.split_panels(50, 16, 512, 512, 4) > 0  # 4.2M multiply-adds a step
        assert KERNELS.split_panels(100, 32, 128, 256, 4) == 0  # 2.1M
        assert KERNELS.split_panels(100, 16, 64, 256, 4) > 0  # 1M, a small batch, H >= 256
        assert KERNELS.split_panels(100, 8, 64, 256, 8) > 0  # 512K
        assert KERNELS.split_panels(100, 4, 64, 256, 4) == 0  # 256K
        assert KERNELS.split_panels(100, 64, 64, 128, 4) == 0  # 1M, but H < 256
        # Rounds (T + 1 of them) must not wrap in the word the two threads share.
        assert KERNELS.split_panels(2**24 - 2, 64, 512, 512, 4) > 0
        assert KERNELS.split_panels(2**24 - 1, 64, 512, 512, 4) == 0
    with overlap("off"):
        assert KERNELS.split_panels(50, 64, 512, 512, 4) == 0


def test_overlap_results_do_not_depend_on_timing(dtype):
    """The chunks are fixed by the sizes, not by which thread gets where first: repeated calls
    give the same bits."""
    problem = make_problem(np.random.default_rng(3), 60, 8, 16, 64, dtype)
    with overlap("on", 8):
        runs = []
        for _ in range(5):
            h = problem.forward("tanh", "cython")
            runs.append([h, *problem.backward(h, "tanh", "cython")])
    for run in runs[1:]:
        for a, e in zip(run, runs[0], strict=True):
            np.testing.assert_array_equal(a, e)
