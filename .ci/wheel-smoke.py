"""Smoke test of an installed rnnfast (a wheel in a fresh venv): import and parity.

Run it with the venv's python, from a directory outside the source tree::

    cd /tmp && /path/to/venv/bin/python /path/to/rnnfast/.ci/wheel-smoke.py [--quick]

Checks that rnnfast imports from site-packages (not from a checkout), that the compiled
extension is there and used, and that it agrees with the NumPy reference on the forward pass
and all gradients for both dtypes and both nonlinearities. Uses only NumPy and rnnfast.
``--quick`` runs one tiny problem (for valgrind). Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny problem")
    args = parser.parse_args(argv)

    import rnnfast
    from rnnfast import benchmark
    from rnnfast._core import kernels as _kernels

    location = Path(rnnfast.__file__).resolve()
    print(f"rnnfast {rnnfast.__version__} from {location}")
    assert "site-packages" in location.parts, f"not an installed rnnfast: {location}"
    checkout = Path(__file__).resolve().parents[1] / "src"
    assert checkout not in location.parents, f"imported from the source tree {checkout}"
    assert rnnfast.HAVE_COMPILED, rnnfast._backend.COMPILED_IMPORT_ERROR
    assert Path(_kernels.__file__).suffix == ".so", _kernels.__file__

    sizes = [(3, 2, 4, 5)] if args.quick else [(1, 1, 1, 1), (7, 3, 5, 8), (20, 16, 32, 64)]
    rng = np.random.default_rng(0)
    checked = 0
    for T, B, D, H in sizes:
        for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
            for nonlinearity in ("tanh", "relu"):
                p = benchmark.make_problem(benchmark.Case(T, B, D, H, dtype.__name__), rng)
                x, h0, w_ih, w_hh, b, dh = (p[k] for k in ("x", "h0", "w_ih", "w_hh", "b", "dh"))
                results = {}
                for backend in ("cython", "numpy"):
                    h = rnnfast.rnn_forward(
                        x, h0, w_ih, w_hh, b, nonlinearity=nonlinearity, backend=backend
                    )
                    g = rnnfast.rnn_backward(
                        dh, x, h0, h, w_ih, w_hh, nonlinearity=nonlinearity, backend=backend
                    )
                    results[backend] = (h, *g)
                for name, a, e in zip(
                    ("h", *rnnfast.RNNGrads._fields),
                    results["cython"],
                    results["numpy"],
                    strict=True,
                ):
                    assert a.dtype == np.dtype(dtype), (name, a.dtype)
                    err = float(np.max(np.abs(a.astype(np.float64) - e), initial=0.0))
                    scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
                    assert err <= rtol * scale, f"{name} {dtype.__name__} {nonlinearity}: {err}"
                checked += 1
    print(f"wheel smoke test passed: {checked} problems, compiled == reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
