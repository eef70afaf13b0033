"""The vectorized tanh of _simd_impl.h against numpy.tanh, at every SIMD level this CPU has.

tanh is reached through the forward kernel itself: with D = H = 1, w_ih = 1, w_hh = 0 and no
bias, h[0, b, 0] = tanh(x[0, b, 0]).
"""

import numpy as np
import pytest
from conftest import require_compiled


def _kernel_tanh(values: np.ndarray) -> np.ndarray:
    from rnnfast import _kernels

    dtype = values.dtype
    x = values.reshape(1, -1, 1)
    one, zero = np.ones((1, 1), dtype), np.zeros((1, 1), dtype)
    return _kernels.rnn_forward(x, None, one, zero, None, "tanh").ravel()


def _grid(dtype) -> np.ndarray:
    tiny = np.geomspace(np.finfo(dtype).tiny, 30, 100_001)
    return np.concatenate(
        [np.linspace(-25, 25, 400_001), tiny, -tiny, [0.625, -0.625, 0.6249999, 20.0, 10.0]]
    ).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_is_within_two_ulp_of_numpy_at_every_simd_level(dtype):
    require_compiled()
    from rnnfast import _kernels

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
            got = _kernel_tanh(values).astype(np.float64)
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
