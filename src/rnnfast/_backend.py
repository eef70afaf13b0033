"""Which implementation runs a call: the compiled core or the NumPy reference.

The only importer of :mod:`rnnfast._core`. Backends: ``"cython"`` (compiled kernels),
``"numpy"`` (``_reference.py``) and ``"auto"``: compiled if the extension imported, else the
reference with one warning. The environment variable ``RNNFAST_BACKEND`` (``auto``, ``cython``
or ``numpy``) sets what ``"auto"`` means, read at every call (programs and tests change it), so
``RNNFAST_BACKEND=numpy`` runs a whole program on the reference. ``RNNFAST_SIMD`` (one of the
kernels' ``SIMD_LEVELS``) caps the vector instructions, applied once at import.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import numpy as np

from rnnfast import _reference
from rnnfast._validation import check_choice

try:
    from rnnfast._core import blas, kernels
except ImportError as _exc:  # a source checkout without a build, or a broken wheel
    kernels = None
    COMPILED_IMPORT_ERROR: ImportError | None = _exc
    BLAS_INT_MAX = int(np.iinfo(np.int32).max)
else:
    COMPILED_IMPORT_ERROR = None
    BLAS_INT_MAX = int(blas.BLAS_INT_MAX)

HAVE_COMPILED: bool = kernels is not None
"""True when the compiled kernels imported."""

BACKENDS = ("auto", "cython", "numpy")

if kernels is not None:
    # The kernels' hooks for the BLAS thread count (rnnfast._threads gives them OpenBLAS's).
    set_blas_thread_functions = kernels.set_blas_thread_functions
    blas_threads = kernels.blas_threads
    set_outside_blas_threads = kernels.set_outside_blas_threads
    set_available_cpus = kernels.set_available_cpus
    thread_stats = kernels.thread_stats
    reset_thread_stats = kernels.reset_thread_stats

_warned_fallback = False


def _apply_simd_environment() -> None:
    """Cap the kernels' SIMD level at RNNFAST_SIMD. A value the CPU or the build does not have
    warns and keeps the best level: a typo in a variable should not make the package
    unimportable."""
    wanted = os.environ.get("RNNFAST_SIMD")
    if kernels is None or not wanted:
        return
    try:
        kernels.set_simd_level(wanted.strip().lower())
    except ValueError as exc:
        warnings.warn(
            f"RNNFAST_SIMD={wanted!r} ignored: {exc}; using the best level this CPU has "
            f"({kernels.simd_level()})",
            RuntimeWarning,
            stacklevel=2,
        )


_apply_simd_environment()

# RNNFAST_BACKEND as os.environ stores it, and the dict behind os.environ (which it keeps
# current: assignments, putenv, monkeypatch.setenv). A lookup in that dict costs a twentieth of
# os.environ.get's microsecond, which the streaming step notices. Measure with:
#   python -m timeit -s "import os" "os.environ.get('RNNFAST_BACKEND')"
#   python -m timeit -s "import os; d = os.environ._data" "b'RNNFAST_BACKEND' in d"
# Where os.environ has no such dict, a dict that always holds the key sends every call to
# resolve().
ENV_KEY: object = "RNNFAST_BACKEND"
ENVIRON: dict = {ENV_KEY: None}
if hasattr(os.environ, "encodekey") and isinstance(getattr(os.environ, "_data", None), dict):
    ENV_KEY, ENVIRON = os.environ.encodekey("RNNFAST_BACKEND"), os.environ._data

AUTO = "auto"


def compiled(backend: object) -> ModuleType | None:
    """The kernels module if ``backend`` selects the compiled core, else None (the reference).

    The common case is decided first, without a call: ``backend`` is the string ``"auto"``
    (compared by identity: the interned literal of every default and call site; an equal string
    built at run time gets the same answer from :func:`resolve`), RNNFAST_BACKEND is unset and
    the extension imported.

    Raises:
        ValueError, RuntimeError: as :func:`resolve`.
    """
    if backend is AUTO and ENV_KEY not in ENVIRON and kernels is not None:
        return kernels
    impl = resolve(backend)[1]
    return impl if impl is kernels else None


def _environment_backend() -> str:
    """RNNFAST_BACKEND, normalized (unset or empty: "auto")."""
    return os.environ.get("RNNFAST_BACKEND", "").strip().lower() or "auto"


def resolve(backend: str) -> tuple[str, ModuleType]:
    """Turn a backend name into ("cython" | "numpy", implementing module).

    Raises:
        ValueError: an unknown backend, or RNNFAST_BACKEND holds one.
        RuntimeError: "cython" was asked for (or by RNNFAST_BACKEND) without the extension.
    """
    global _warned_fallback
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        backend = _environment_backend()
        if backend not in BACKENDS:
            raise ValueError(
                f"environment variable RNNFAST_BACKEND must be one of {BACKENDS}, "
                f"got {os.environ['RNNFAST_BACKEND']!r}"
            )
    if backend == "numpy":
        return "numpy", _reference
    if kernels is not None:
        return "cython", kernels
    if backend == "cython":
        raise RuntimeError(
            "backend='cython' was requested but rnnfast's compiled extension did not import "
            f"({COMPILED_IMPORT_ERROR}); reinstall with `pip install .` or use backend='numpy'"
        )
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            "rnnfast's compiled extension did not import "
            f"({COMPILED_IMPORT_ERROR}); using the NumPy reference, which is slower",
            RuntimeWarning,
            stacklevel=4,
        )
    return "numpy", _reference
