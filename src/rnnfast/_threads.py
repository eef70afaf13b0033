"""Thread control: the BLAS threads that do rnnfast's work.

The kernels' GEMMs run on the BLAS behind ``scipy.linalg.cython_blas`` (SciPy's OpenBLAS);
NumPy's own BLAS does the layers' small products (Linear, losses). The kernels' own loops run
on the calling thread, with at most one helper thread beside the time loop for the GEMMs
around it, started only when this BLAS may use two threads. ``set_num_threads(n)`` caps every
BLAS and OpenMP pool of the process (through threadpoolctl), and ``set_num_threads(1)`` also
keeps the helper from starting; ``OPENBLAS_NUM_THREADS``, read at start-up, does the same from
outside.

The kernels also decide per call: a time step too small to split well runs its recurrent GEMM
on one thread, because waking a second BLAS thread 2 * T times costs more than it saves, and
stalls outright when the other cores are busy; and a call with a helper thread runs every GEMM
on one. OpenBLAS keeps one thread count for the whole process (its
``openblas_set_num_threads_local`` sets that same count), so concurrent calls share one
single-threaded section and the last to leave restores the count (``_overlap.h``).

The BLAS is found by looking for SciPy's OpenBLAS among the loaded libraries (Linux); with
another BLAS only ``OMP_NUM_THREADS``-style controls of that BLAS apply.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from rnnfast import _backend
from rnnfast._validation import check_int

__all__ = ["blas_library", "get_num_threads", "set_num_threads"]


def _loaded_libraries() -> list[str]:
    """Paths of the shared libraries mapped into this process (Linux), else []."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split(None, 5)[-1] for line in maps.splitlines() if line.count(" ") >= 5}
    return sorted(p for p in paths if ".so" in p and os.path.isfile(p))


def _find_scipy_openblas() -> tuple[str, ctypes.CDLL] | None:
    """SciPy's OpenBLAS (the one cython_blas calls), if it is loaded."""
    import scipy
    import scipy.linalg.cython_blas  # loads the library

    scipy_dir = str(Path(scipy.__file__).resolve().parent)
    candidates = [p for p in _loaded_libraries() if "openblas" in Path(p).name.lower()]
    # SciPy's own copy first (wheels keep it in scipy.libs beside the package).
    candidates.sort(key=lambda p: not str(Path(p).resolve()).startswith(scipy_dir))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            if hasattr(lib, f"{prefix}openblas_set_num_threads"):
                return path, lib
    return None


_found = _find_scipy_openblas()
_lib = None if _found is None else _found[1]


def _symbol(*names: str) -> ctypes._CFuncPtr | None:
    for name in names:
        if _lib is not None and hasattr(_lib, name):
            return getattr(_lib, name)
    return None


_blas_get = _symbol("scipy_openblas_get_num_threads", "openblas_get_num_threads")
_blas_set_local = _symbol("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local")
for _fn in (_blas_get, _blas_set_local):
    if _fn is not None:
        _fn.restype = ctypes.c_int
if _blas_set_local is not None and _blas_get is not None and _backend.HAVE_COMPILED:
    _blas_set_local.argtypes = [ctypes.c_int]
    _backend.set_blas_thread_functions(
        *(ctypes.cast(fn, ctypes.c_void_p).value for fn in (_blas_set_local, _blas_get))
    )


def blas_library() -> str | None:
    """Path of the BLAS whose threads rnnfast controls, or None if it was not found."""
    return None if _found is None else _found[0]


def get_num_threads() -> int | None:
    """The kernels' BLAS thread count (None if their BLAS was not found).

    The count as set from outside: while a kernel call in another thread holds BLAS at one
    thread, the count it will restore.
    """
    if _blas_get is None:
        return None
    outside = _backend.blas_threads() if _backend.HAVE_COMPILED else 0
    return outside if outside > 0 else int(_blas_get())


def set_num_threads(n: int) -> int | None:
    """Use at most ``n`` threads in every BLAS (and OpenMP) pool of the process.

    That is SciPy's OpenBLAS (the kernels' GEMMs), NumPy's (the layers' small products) and
    any OpenMP runtime another library brought. Returns the kernels' previous BLAS thread
    count, as :func:`get_num_threads`.

    Raises:
        TypeError, ValueError: ``n`` is not an integer >= 1.
    """
    n = check_int("n", n, 1)
    import threadpoolctl

    previous = get_num_threads()
    threadpoolctl.threadpool_limits(limits=n)
    # The kernels' single-threaded section would otherwise restore the count it saved on entry
    # and undo this setting when another thread's call leaves it.
    if _blas_set_local is not None and _blas_get is not None and _backend.HAVE_COMPILED:
        _backend.set_outside_blas_threads(n)
    return previous
