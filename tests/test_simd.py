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
