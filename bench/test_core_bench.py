"""Forward + backward timings, compiled kernels vs the NumPy reference, in the same run.

Run:
    pytest bench/ --benchmark-only --benchmark-group-by=param:size,param:dtype \
        --benchmark-columns=median,iqr,rounds

Sizes are (T, B, D, H). Compare the medians within a group: the ratio is what counts, as the
machine is shared and noisy.
"""

import numpy as np
import pytest

import rnnfast

SIZES = {
    "small (25,1,65,100)": (25, 1, 65, 100),  # a classic char-RNN step
    "medium (100,32,128,256)": (100, 32, 128, 256),
}
BACKENDS = ["cython", "numpy"] if rnnfast.HAVE_COMPILED else ["numpy"]


def make_problem(T, B, D, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)
    return {
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "h0": rng.standard_normal((B, H)).astype(dtype),
        "w_ih": rng.uniform(-bound, bound, (H, D)).astype(dtype),
        "w_hh": rng.uniform(-bound, bound, (H, H)).astype(dtype),
        "b": rng.uniform(-bound, bound, H).astype(dtype),
        "dh": rng.standard_normal((T, B, H)).astype(dtype),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", list(SIZES))
def test_forward_backward(benchmark, size, backend, dtype):
    p = make_problem(*SIZES[size], np.dtype(dtype))

    def forward_backward():
        h = rnnfast.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b"], backend=backend)
        return rnnfast.rnn_backward(
            p["dh"], p["x"], p["h0"], h, p["w_ih"], p["w_hh"], backend=backend
        )

    grads = benchmark(forward_backward)
    assert grads.dw_hh.dtype == np.dtype(dtype)
