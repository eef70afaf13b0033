"""Shared helpers of the rnnfast test suite: problems, tolerances and backends.

Test modules import the plain helpers from here (``from conftest import ...``); the fixtures
below are found by pytest.

Setting ``RNNFAST_BACKEND=numpy`` runs the suite on the NumPy reference. Tests name their backend
explicitly, so comparisons of ``backend="cython"`` with ``backend="numpy"`` still run whenever
the extension is built; only when it is missing *and* that variable is set are the compiled-only
tests skipped. A missing extension otherwise fails them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

import rnnfast
from rnnfast import RNNGrads, benchmark
from rnnfast.benchmark import Case

BACKENDS = ("cython", "numpy")
NONLINEARITIES = ("tanh", "relu")
DTYPES = (np.float32, np.float64)

# Parity tolerances (see assert_close): what separates two correct implementations.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def reference_only_run() -> bool:
    """True when the environment asks for the whole suite to run on the NumPy reference."""
    return os.environ.get("RNNFAST_BACKEND", "").strip().lower() == "numpy"


def require_compiled() -> None:
    """Fail the calling test if the extension is missing (skip if RNNFAST_BACKEND=numpy)."""
    if rnnfast.HAVE_COMPILED:
        return
    reason = (
        f"rnnfast's compiled extension did not import: {rnnfast._backend.COMPILED_IMPORT_ERROR}"
    )
    if reference_only_run():
        pytest.skip(f"{reason} (RNNFAST_BACKEND=numpy: running on the reference only)")
    pytest.fail(f"{reason}; build it with `pip install -e . --no-build-isolation`")


def assert_close(actual, expected, rtol: float, name: str = "array") -> None:
    """Assert ``max|actual - expected| <= rtol * max(1, max|expected|)``, shapes equal.

    The error is measured in float64, and any NaN in either array fails the check.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    err = float(np.max(diff))
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert err <= rtol * scale, (
        f"{name}: max|actual - expected| = {err:.3e} exceeds {rtol:.1e} * {scale:.3e} "
        f"(worst at index {np.unravel_index(np.argmax(diff), diff.shape)})"
    )


def assert_grads_close(actual: RNNGrads, expected: RNNGrads, rtol: float) -> None:
    """assert_close on each of the five gradients, by name."""
    for name, a, e in zip(RNNGrads._fields, actual, expected, strict=True):
        assert_close(a, e, rtol, name)


@dataclass
class Problem:
    """One RNN problem: forward arguments plus an upstream gradient ``dh`` of the states."""

    x: np.ndarray
    h0: np.ndarray | None
    w_ih: np.ndarray
    w_hh: np.ndarray
    b: np.ndarray | None
    dh: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    def forward(self, nonlinearity: str, backend: str) -> np.ndarray:
        return rnnfast.rnn_forward(
            self.x,
            self.h0,
            self.w_ih,
            self.w_hh,
            self.b,
            nonlinearity=nonlinearity,
            backend=backend,
        )

    def backward(self, h: np.ndarray, nonlinearity: str, backend: str) -> RNNGrads:
        return rnnfast.rnn_backward(
            self.dh,
            self.x,
            self.h0,
            h,
            self.w_ih,
            self.w_hh,
            nonlinearity=nonlinearity,
            backend=backend,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the problem that is not None, by argument name."""
        names = ("x", "h0", "w_ih", "w_hh", "b", "dh")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def step_product(w_hh: np.ndarray, B: int) -> str:
    """Which product the compiled kernels use for this w_hh's time steps at batch B, under the
    current rule and SIMD level: "blas", "small", "panel" or "dot"."""
    from rnnfast._core import kernels

    kind = kernels.step_operands(w_hh, B, True)[0]
    return ("blas", "small", "panel", "dot", "gate panels", "dot")[kind]  # 5: the sliced dot form


def make_problem(
    rng: np.random.Generator,
    T: int,
    B: int,
    D: int,
    H: int,
    dtype=np.float64,
    bias: bool = True,
    h0: bool = True,
) -> Problem:
    """A random problem (rnnfast.benchmark.make_problem's draw): weights and bias like PyTorch's
    init, x, h0 and dh standard normal."""
    case = Case(T, B, D, H, np.dtype(dtype).name)
    return Problem(**benchmark.make_problem(case, rng, bias=bias, h0=h0))


@pytest.fixture(scope="session")
def compiled() -> None:
    """Use in tests that need the compiled extension (see require_compiled)."""
    require_compiled()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    """Each backend by name; "cython" requires the compiled extension."""
    if request.param == "cython":
        require_compiled()
    return request.param


@pytest.fixture(params=NONLINEARITIES)
def nonlinearity(request) -> str:
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request) -> np.dtype:
    return np.dtype(request.param)


def pytest_report_header(config) -> list[str]:
    return [
        f"rnnfast: HAVE_COMPILED={rnnfast.HAVE_COMPILED}, "
        f"RNNFAST_BACKEND={os.environ.get('RNNFAST_BACKEND', '<unset>')}"
    ]


# ---------------------------------------------------------------------------------------------
# Reliability helpers (test_fuzz, test_reliability, test_threads, test_memory, bench/).


def assert_close_nonfinite(actual, expected, rtol: float, name: str = "array") -> None:
    """Like assert_close, for arrays that may hold NaN and Inf: the NaN positions and the
    positions and signs of the infinities must be identical, the finite values close."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{name}: NaN")
    for sign in (1, -1):
        np.testing.assert_array_equal(
            actual == sign * np.inf, expected == sign * np.inf, err_msg=f"{name}: {sign:+}Inf"
        )
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], rtol, name)


def forward_backward(p: Problem, nonlinearity: str, backend: str) -> tuple[np.ndarray, RNNGrads]:
    """One forward and one backward pass of ``p``: (h, grads)."""
    h = p.forward(nonlinearity, backend)
    return h, p.backward(h, nonlinearity, backend)


def blas_threads(limit: int):
    """A context manager capping BLAS and OpenMP pools at ``limit`` threads with threadpoolctl,
    or doing nothing when threadpoolctl is not installed (it is optional)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(limits=limit)


def compiled_kernels():
    """The compiled kernels module (require_compiled's failure or skip without it)."""
    require_compiled()
    from rnnfast._core import kernels

    return kernels


def runnable_simd_levels() -> list[str]:
    """The compiled kernels' SIMD levels this CPU can run (none without the extension)."""
    kernels = rnnfast._backend.kernels
    if kernels is None:
        return []
    levels, original = [], kernels.simd_level()
    try:
        for level in kernels.SIMD_LEVELS:
            try:
                kernels.set_simd_level(level)
            except ValueError:
                continue
            levels.append(level)
    finally:
        kernels.set_simd_level(original)
    return levels


def results_under_contention(run):
    """``run()`` with BLAS at one thread (the expected result), then three times each with BLAS
    at 1 and 2 threads, three times beside a busy Python thread, and four times from two threads
    at once: ``(expected, results)``, for tests that the bits do not depend on which thread ran
    which chunk (call it inside the tuning the test forces)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(1000))

    rival = threading.Thread(target=busy)
    with blas_threads(1):
        expected = run()
    results = []
    try:
        for threads in (1, 2):
            with blas_threads(threads):
                results += [run() for _ in range(3)]
        rival.start()
        results += [run() for _ in range(3)]
    finally:
        stop.set()
        if rival.is_alive():
            rival.join()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results += list(pool.map(lambda _: run(), range(4)))
    return expected, results


def one_cpu_then_repeated(kernels, rules: dict, alone, call, calls: int):
    """``alone()`` under the tuning ``rules`` with every helper declined (one CPU available:
    whole steps on the calling thread), then ``call(i)`` for i < ``calls`` under the same rules
    with the CPUs restored: ``(expected, results)``, for tests that the bits do not depend on
    whether a helper ran."""
    cpus = kernels.thread_stats()["available_cpus"]
    kernels.set_available_cpus(1)
    try:
        with kernels.tuned(**rules):
            expected = alone()
    finally:
        kernels.set_available_cpus(cpus)
    with kernels.tuned(**rules):
        return expected, [call(i) for i in range(calls)]


def finite_difference_gradient(loss, arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``loss()`` with respect to every element of ``arr``, which is
    perturbed in place and restored (so ``loss`` must read ``arr`` itself, e.g. a parameter)."""
    grad = np.empty(arr.shape, dtype=np.float64)
    for idx in np.ndindex(arr.shape):
        original = arr[idx]
        arr[idx] = original + eps
        plus = loss()
        arr[idx] = original - eps
        minus = loss()
        arr[idx] = original
        grad[idx] = (plus - minus) / (2 * eps)
    return grad
