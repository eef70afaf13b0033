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

The CPUs really available (the affinity mask, a cgroup v1 or v2 CPU quota, as loky reads them)
cap both: at import the kernels' BLAS is lowered to them unless ``OPENBLAS_NUM_THREADS`` or
``OMP_NUM_THREADS`` says otherwise, the helper thread starts only with two, and
``set_num_threads(n)`` above them warns once and uses them. docs/guide/threads.md says more.
"""

from __future__ import annotations

import ctypes
import math
import os
import warnings
from pathlib import Path

from rnnfast import _backend
from rnnfast._validation import check_int

__all__ = ["available_cpus", "blas_library", "get_num_threads", "set_num_threads", "thread_stats"]


def _cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``), rounded up; None without a quota."""
    try:
        fields = Path(root, "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return max(1, math.ceil(int(fields[0]) / int(fields[1])))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
        period = int(Path(root, "cpu", "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """The CPUs this process may use: the smallest of ``os.cpu_count()``, its affinity mask
    and a cgroup CPU quota (a container's ``--cpus``)."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    quota = _cgroup_cpu_limit()
    if quota is not None:
        counts.append(quota)
    return max(1, min(counts))


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

_available = available_cpus()
if _backend.HAVE_COMPILED:
    _backend.set_available_cpus(_available)
# OpenBLAS sizes its pool from the affinity mask but not from a cgroup quota: a container
# limited to one CPU would run two BLAS threads on it. An explicit setting is the user's.
if (
    _blas_set_local is not None
    and _blas_get is not None
    and not any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
    and int(_blas_get()) > _available
):
    if _backend.HAVE_COMPILED:
        _backend.set_outside_blas_threads(_available)
    else:
        _blas_set_local(_available)
_warned_above_available = False


def thread_stats() -> dict[str, int]:
    """Diagnostics of the kernels' threads: ``available_cpus``, ``calls_in_flight`` now, and
    since start ``helpers_started`` and ``helpers_declined`` (a call that could have used the
    helper thread ran alone: another call was in flight, or fewer than two CPUs). Empty
    without the compiled kernels."""
    return dict(_backend.thread_stats()) if _backend.HAVE_COMPILED else {}


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

    ``n`` above the CPUs available to the process (:func:`available_cpus`) warns once and is
    capped at them.

    That is SciPy's OpenBLAS (the kernels' GEMMs), NumPy's (the layers' small products) and
    any OpenMP runtime another library brought. Returns the kernels' previous BLAS thread
    count, as :func:`get_num_threads`.

    Raises:
        TypeError, ValueError: ``n`` is not an integer >= 1.
    """
    global _available, _warned_above_available
    n = check_int("n", n, 1)
    import threadpoolctl

    _available = available_cpus()
    if _backend.HAVE_COMPILED:
        _backend.set_available_cpus(_available)
    if n > _available:
        if not _warned_above_available:
            _warned_above_available = True
            warnings.warn(
                f"set_num_threads({n}): only {_available} CPU(s) available to this process "
                f"(affinity or CPU quota); using {_available}",
                RuntimeWarning,
                stacklevel=2,
            )
        n = _available

    previous = get_num_threads()
    threadpoolctl.threadpool_limits(limits=n)
    # The kernels' single-threaded section would otherwise restore the count it saved on entry
    # and undo this setting when another thread's call leaves it.
    if _blas_set_local is not None and _blas_get is not None and _backend.HAVE_COMPILED:
        _backend.set_outside_blas_threads(n)
    return previous
