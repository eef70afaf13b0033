"""The vectorized tanh of _simd_impl.h against numpy.tanh, at every SIMD level this CPU has.

tanh is reached through the forward kernel itself: one step with w_ih the identity, w_hh = 0
and no bias gives h = tanh(x). With D = H = 1 each row is one element, shorter than a vector,
which the compiled loop takes through a zero-padded vector; with D = H = 71 each row runs
through its whole vectors and then its last partial one (computed as the row's last whole
window), at each level's width.
"""

import numpy as np
import pytest
from conftest import require_compiled


def _kernel_tanh(values: np.ndarray, width: int = 1) -> np.ndarray:
    """tanh of every value through rnn_forward, ``width`` values a row (x @ I is exact)."""
    from rnnfast._core import kernels as _kernels

    dtype = values.dtype
    padded = np.zeros(-(-values.size // width) * width, dtype)
    padded[: values.size] = values
    x = padded.reshape(1, -1, width)
    eye, zero = np.eye(width, dtype=dtype), np.zeros((width, width), dtype)
    return _kernels.rnn_forward(x, None, eye, zero, None, "tanh").ravel()[: values.size]


def _grid(dtype) -> np.ndarray:
    tiny = np.geomspace(np.finfo(dtype).tiny, 30, 100_001)
    return np.concatenate(
        [np.linspace(-25, 25, 400_001), tiny, -tiny, [0.625, -0.625, 0.6249999, 20.0, 10.0]]
    ).astype(dtype)


@pytest.mark.parametrize("width", [1, 71], ids=["scalar_rows", "vector_rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_is_within_two_ulp_of_numpy_at_every_simd_level(dtype, width):
    require_compiled()
    from rnnfast._core import kernels as _kernels

    values = _grid(dtype)
    exact = np.tanh(values.astype(np.float64))  # float64 tanh: the float32 reference
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    previous = _kernels.simd_level()
    try:
        for level in _kernels.SIMD_LEVELS:
            try:
                _kernels.set_simd_level(level)
            except ValueError:
                continue  # this CPU cannot run it
            got = _kernel_tanh(values, width).astype(np.float64)
            err = np.abs(got - exact) / ulp
            assert err.max() <= 2.0, (level, values[np.argmax(err)], err.max())
            assert np.all(np.abs(got) <= 1.0), level
            assert np.all(np.sign(got) == np.sign(values)), level
    finally:
        _kernels.set_simd_level(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_special_values(dtype):
    require_compiled()
    got = _kernel_tanh(np.array([np.nan, np.inf, -np.inf, 0.0, 1e6, -1e6], dtype))
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], np.array([1, -1, 0, 1, -1], dtype))


def _sigmoid_grid(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    big = 110.0 if dtype == np.float32 else 760.0  # past the underflow of sigmoid(-x)
    mag = np.geomspace(info.smallest_subnormal, big, 200_001)
    return np.concatenate(
        [np.linspace(-big, big, 400_001), mag, -mag, [0.0, -0.0, 1e30, -1e30, info.max,
                                                       -info.max, 104.0, 746.0, -745.1]]
    ).astype(dtype)


@pytest.mark.parametrize("length", [1, 3, 7, 1001], ids=lambda n: f"rows_of_{n}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_sigmoid_is_within_two_ulp_of_a_long_double_oracle_at_every_simd_level(dtype, length):
    """Every level, both dtypes, whole vectors and the padded rest (arrays of ``length``)."""
    require_compiled()
    from rnnfast._core import kernels as _kernels

    values = _sigmoid_grid(dtype)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-values.astype(np.longdouble)))
    # the ulp of the exact value in the kernel's dtype (the smallest subnormal at 0)
    ulp = np.spacing(exact.astype(dtype)).astype(np.longdouble)
    previous = _kernels.simd_level()
    try:
        for level in _kernels.SIMD_LEVELS:
            try:
                _kernels.set_simd_level(level)
            except ValueError:
                continue  # this CPU cannot run it
            pad = -values.size % length
            rows = np.concatenate([values, np.zeros(pad, dtype)]).reshape(-1, length)
            got = np.concatenate([_kernels.sigmoid(row) for row in rows[:2000]]
                                 + [_kernels.sigmoid(rows[2000:].ravel())])[: values.size]
            assert got.dtype == dtype
            err = np.abs(got.astype(np.longdouble) - exact) / ulp
            worst = int(np.argmax(err))
            assert err.max() <= 2.0, (level, values[worst], float(err.max()))
            assert np.all((got >= 0) & (got <= 1)), level
            assert np.all(np.isfinite(got)), level
    finally:
        _kernels.set_simd_level(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_sigmoid_special_values_at_every_simd_level(dtype):
    require_compiled()
    from rnnfast._core import kernels as _kernels

    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e6, -1e6, -np.nan, 0.0], dtype)
    previous = _kernels.simd_level()
    try:
        for level in _kernels.SIMD_LEVELS:
            try:
                _kernels.set_simd_level(level)
            except ValueError:
                continue
            for n in (1, 2, 3, len(values)):  # NaN in a padded rest and in a whole vector
                got = _kernels.sigmoid(np.resize(values, 16 * n)[: 16 * n])
                ref = np.resize(values, 16 * n)[: 16 * n]
                assert np.array_equal(np.isnan(got), np.isnan(ref)), level
                fin = ~np.isnan(ref)
                want = np.where(ref[fin] > 0, 1.0, np.where(ref[fin] < 0, 0.0, 0.5))
                np.testing.assert_array_equal(got[fin], want.astype(dtype))
            with pytest.raises(TypeError):
                _kernels.sigmoid(np.zeros(3, np.int64))
    finally:
        _kernels.set_simd_level(previous)
