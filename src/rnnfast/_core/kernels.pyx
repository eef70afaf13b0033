"""Compiled forward pass, backpropagation through time and streaming step of recurrent layers.

Compute only: the arrays come checked and kernel-ready from rnnfast (C-contiguous, one float
dtype, every size > 0, every shape agreeing), so these loops run without bounds checks; the
``*_plain`` entry points and ``rnn_step`` admit arrays that are already exactly right and return
None for anything else. No environment variable is read here. The signatures of rnn_forward and
rnn_backward are those of rnnfast._reference, the NumPy oracle.

Layout (time-major, PyTorch's weight shapes), for a cell with G gate rows per unit (Elman: 1):
  x (T, B, D), h0 (B, H) or None, w_ih (G*H, D), w_hh (G*H, H), b (G*H,) or None,
  h / dh (T, B, H).

The file, top to bottom: SIMD level; tuning; BLAS threads; cells (the pointwise part of a
step: the only cell-specific code); the per-step recurrent product (three implementations);
the time-loop engine (input projection, recursion, helper thread, weight gradients); the entry
points; the streaming step; admission (the C-level checks of the fast path). The design, the
measurements behind each rule and how a new cell plugs in: docs/design/kernels.md.
"""
from cython cimport floating
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

import contextlib
import operator

import numpy as np

cimport numpy as cnp
from cpython.pyport cimport PY_SSIZE_T_MAX

from rnnfast._core.blas cimport BLAS_Trans, NoTrans, Trans
from rnnfast._core.blas cimport gemm as _blas_gemm
from rnnfast._core.native cimport *

cnp.import_array()


# ---- SIMD level (simd.h) ---------------------------------------------------------------------

SIMD_LEVELS = tuple(rnnfast_simd_levels[i].name.decode() for i in range(RNNFAST_SIMD_NLEVELS))


def simd_level():
    """The instruction set the vector loops run with: 'avx512', 'avx2' or 'baseline'."""
    return rnnfast_simd.name.decode()


def set_simd_level(name=None):
    """Run the vector loops with ``name`` (one of SIMD_LEVELS; None: the widest the CPU has).

    Returns the previous level's name. Process-wide; for tests, benchmarks and RNNFAST_SIMD.
    """
    previous = simd_level()
    level = -1 if name is None else SIMD_LEVELS.index(name) if name in SIMD_LEVELS else -2
    if level == -2:
        raise ValueError(f"SIMD level must be one of {SIMD_LEVELS} or None, got {name!r}")
    if rnnfast_simd_select(level) < 0:
        raise ValueError(f"this CPU cannot run SIMD level {name!r}")
    return previous


set_simd_level(None)  # the widest level this CPU has


def sigmoid(x):
    """1 / (1 + exp(-x)) of a float32 or float64 array (a new C-contiguous array), by the
    gated cells' vector loop at the level in use (simd_elementwise.h); for tests."""
    cdef cnp.ndarray a = np.array(x, order="C")
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"sigmoid takes float32 or float64, got {a.dtype}")
    cdef Py_ssize_t n = a.size
    if a.dtype == np.float32:
        rnnfast_simd.sigmoid_f32(<float*>cnp.PyArray_DATA(a), <const float*>cnp.PyArray_DATA(a), n)
    else:
        rnnfast_simd.sigmoid_f64(<double*>cnp.PyArray_DATA(a), <const double*>cnp.PyArray_DATA(a),
                                 n)
    return a


# ---- tuning: the size rules (tuning.h), one struct, read and changed from Python ---------------

STEP_PRODUCTS = ("auto", "blas", "small", "panel")  # step_product's values: RF_PRODUCT_*
OVERLAP_MODES = ("auto", "off", "on")  # overlap's values: RF_OVERLAP_*
_CHOICES = {"step_product": STEP_PRODUCTS, "overlap": OVERLAP_MODES}
# Divisors must not be zero; any other field may be 0.
_MINIMUM = {"overlap_chunk_rows": 1, "split_chunk_rows": 1, "overlap_single_steps": 1}


cdef dict _tuning_dict(rf_tuning tuning):
    cdef dict fields = tuning
    for name, choices in _CHOICES.items():
        fields[name] = choices[fields[name]]
    return fields


DEFAULT_TUNING = _tuning_dict(rf_tuning_defaults)


def get_tuning():
    """The size rules in force, as a dict of every field (the names of DEFAULT_TUNING).

    ``step_product`` ("auto", "blas", "small" or "panel") and ``overlap`` ("auto", "off" or
    "on") are names; the other fields are int thresholds (see tuning.h).
    """
    return _tuning_dict(rf_tuning_now)


def set_tuning(**fields):
    """Change some size rules, process-wide; returns the previous values of the fields given.

    ``step_product``: "auto" (the measured rule) or one product for every time step ("small"
    only where the output width fits its registers; BLAS elsewhere). ``overlap``: "auto",
    "off" or "on" (a helper thread whenever the steps use the kernels' own products and T
    spans two chunks). Every other field is an int >= 0 (``overlap_chunk_rows`` and
    ``split_chunk_rows`` >= 1). Raises TypeError for an unknown field or a value of the wrong
    type, ValueError for a value out of range; then nothing changes.
    """
    new = get_tuning()
    previous = {}
    for name, value in fields.items():
        if name not in new:
            raise TypeError(f"set_tuning() got an unknown field {name!r}; the fields are "
                            f"{', '.join(DEFAULT_TUNING)}")
        if name in _CHOICES:
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
            if value not in _CHOICES[name]:
                raise ValueError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")
        else:
            if isinstance(value, bool) or not hasattr(type(value), "__index__"):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            value = operator.index(value)
            minimum = _MINIMUM.get(name, 0)
            if not minimum <= value <= PY_SSIZE_T_MAX:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        previous[name] = new[name]
        new[name] = value
    for name, choices in _CHOICES.items():
        new[name] = choices.index(new[name])
    cdef rf_tuning* now = &rf_tuning_now
    now[0] = new
    return previous


@contextlib.contextmanager
def tuned(**fields):
    """``with tuned(step_product="panel"): ...``: set_tuning for the block, restored after."""
    previous = set_tuning(**fields)
    try:
        yield
    finally:
        set_tuning(**previous)


# ---- BLAS threads (threads.h) ----------------------------------------------------------------
# Small GEMMs run on one BLAS thread: a second thread's wake-up costs more than it saves, and on
# a machine whose other core is busy it can wait a scheduler tick. rnnfast's thread module finds
# OpenBLAS's thread-local setter and installs it here; without it BLAS decides alone.

def set_blas_thread_functions(size_t set_local_address, size_t get_address):
    """Install OpenBLAS's openblas_set_num_threads_local and openblas_get_num_threads (their
    addresses; 0 to remove)."""
    rf_use_blas_threads(<rf_set_threads_fn>set_local_address, <rf_get_threads_fn>get_address)


def blas_threads():
    """BLAS's thread count as set from outside (0: its functions are not installed)."""
    return rf_blas_threads()


def set_available_cpus(int n):
    """The CPUs this process may use (affinity, cgroup quota: rnnfast._threads reads them); a
    helper thread starts only if there are at least two."""
    global rf_available_cpus
    rf_available_cpus = max(1, n)


def thread_stats():
    """Diagnostics: CPUs available, kernel calls in flight now, and since the process began
    helper threads started, declined (another call was in flight, fewer than two CPUs, the
    pool busy, or a late helper's back-off), found late (threads.h, RF_LATE_NS) and stepped
    aside, and projection chunks a forward loop took ahead of its helper (_await_chunk)."""
    return {"available_cpus": rf_available_cpus, "calls_in_flight": rf_calls,
            "helpers_started": rf_helpers_started, "helpers_declined": rf_helpers_declined,
            "helpers_late": rf_helpers_late, "helpers_stepped_aside": rf_helpers_stepped_aside,
            "chunks_projected_ahead": rf_chunks_projected_ahead}


def reset_thread_stats():
    """Zero thread_stats' counters and forget a late helper's back-off (tests)."""
    global rf_helpers_started, rf_helpers_declined, rf_helpers_late, rf_helper_skip
    global rf_helper_backoff, rf_helpers_stepped_aside, rf_chunks_projected_ahead
    rf_helpers_started = rf_helpers_declined = rf_helpers_late = rf_helpers_stepped_aside = 0
    rf_chunks_projected_ahead = 0
    rf_helper_skip = rf_helper_backoff = 0


cdef inline void gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, Py_ssize_t m, Py_ssize_t n,
                      Py_ssize_t k, floating alpha, const floating* a, Py_ssize_t lda,
                      const floating* b, Py_ssize_t ldb,
                      floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """Every BLAS call of the kernels: through the gate that exit and fork close (threads.h)."""
    rf_blas_call_begin()
    _blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    rf_blas_call_end()


def set_outside_blas_threads(int n):
    """Make ``n`` the BLAS thread count set from outside, even while calls in other threads
    hold BLAS at one (they restore ``n`` when the last leaves)."""
    rf_blas_set_outside(n)


cdef inline bint _serial_blas_begin(bint serial) noexcept nogil:
    """Make BLAS calls single-threaded if ``serial`` (process-wide: see rf_serial_enter);
    returns what to pass to _serial_blas_end."""
    if serial:
        rf_serial_enter()
    return serial


cdef inline void _serial_blas_end(bint entered) noexcept nogil:
    if entered:
        rf_serial_leave()


cdef inline void _bulk_gemm(BLAS_Trans trans_a, BLAS_Trans trans_b,
                            Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            floating alpha, const floating* a, Py_ssize_t lda,
                            const floating* b, Py_ssize_t ldb,
                            floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """gemm, on one BLAS thread when it is small (tuning: serial_gemm_max_macs)."""
    cdef bint saved = _serial_blas_begin(m * n * k < rf_tuning_now.serial_gemm_max_macs)
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    _serial_blas_end(saved)


# ---- cells: the pointwise part of a step -----------------------------------------------------
# Everything cell-specific is here. The engine below computes, per step, the gate
# pre-activations x[t] @ w_ih.T + h[t-1] @ w_hh.T over G*H columns, and hands them to the
# cell's pointwise forward; backward, it hands the gradient of the step's output to the cell's
# pointwise backward, which turns it into the gradient of the gate pre-activations, and does
# every product and weight gradient itself. The functions switch on the cell code once per
# step (or per call), never per element. Only the Elman cell exists (G = 1, and its gate
# pre-activations are written in place into h: no workspace); docs/design/kernels.md says what
# an LSTM (G = 4) or GRU (G = 3) adds.

cdef enum:
    # An Elman cell's code is its activation, as the vector loops take it (0 tanh, 1 relu).
    CELL_ELMAN_TANH = 0
    CELL_ELMAN_RELU = 1
    # LSTM (G = 4): gates i, f, g, o; its own pointwise functions below
    CELL_LSTM = 2
    # GRU (G = 3): gates r, z, n; its section at the end of the file
    CELL_GRU = 3


cdef struct Cell:
    int code          # selects the pointwise functions
    Py_ssize_t gates  # G: gate rows per hidden unit


cdef Cell _elman_cell(str nonlinearity) except *:
    cdef Cell cell
    cell.gates = 1
    if nonlinearity == "tanh":
        cell.code = CELL_ELMAN_TANH
    elif nonlinearity == "relu":
        cell.code = CELL_ELMAN_RELU
    else:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return cell


cdef Cell _lstm_cell() noexcept nogil:
    cdef Cell cell
    cell.code, cell.gates = CELL_LSTM, 4
    return cell


cdef inline void _bias_act(floating* a, const floating* b, Py_ssize_t rows, Py_ssize_t n,
                           Py_ssize_t ld, int act) noexcept nogil:
    """a = act(a + b) in place, for rows x n, rows ld apart (b NULL: no bias). On one thread:
    OpenMP workers for it stalled the BLAS threads of the next step."""
    if floating is float:
        rnnfast_simd.bias_act_f32(a, b, rows, n, ld, act)
    else:
        rnnfast_simd.bias_act_f64(a, b, rows, n, ld, act)


cdef inline void _mul_act_grad(floating* g, const floating* h, Py_ssize_t n,
                               int act) noexcept nogil:
    """g *= act'(pre-activation), written in terms of the output h = act(pre-activation)."""
    if floating is float:
        rnnfast_simd.mul_act_grad_f32(g, h, n, act)
    else:
        rnnfast_simd.mul_act_grad_f64(g, h, n, act)


cdef inline void _cell_forward(const Cell* cell, floating* gates, const floating* bias,
                               floating* h, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld,
                               const floating* c_prev, floating* c) noexcept nogil:
    """A step's output columns h (rows x n, rows ld apart) from its gate pre-activations
    ``gates`` (bias not yet added; NULL: none). Elman: h = act(gates + bias), in place (gates
    is h), so a block of columns can be done alone (the split forward relies on it). LSTM
    (whole rows: n = H, gates rows of 4H): the gates become their activations in place, and
    c (rows, H) the cell state from c_prev (NULL: zeros)."""
    if cell.code == CELL_ELMAN_TANH or cell.code == CELL_ELMAN_RELU:
        _bias_act(h, bias, rows, n, ld, cell.code)
    elif cell.code == CELL_LSTM:
        if floating is float:
            rnnfast_simd.lstm_forward_f32(gates, bias, c_prev, c, h, rows, n, 0, n)
        else:
            rnnfast_simd.lstm_forward_f64(gates, bias, c_prev, c, h, rows, n, 0, n)


cdef inline void _lstm_backward_step(floating* d, const floating* dh, floating* dc,
                                     const floating* dc_ext, const floating* act,
                                     const floating* c, const floating* c_prev, Py_ssize_t rows,
                                     Py_ssize_t H) noexcept nogil:
    """LSTM: the step's gate pre-activation gradient d (rows, 4H) from dh (rows, H) into its
    h, the carried dc (replaced by the carry into the step before), dc_ext (NULL: none), its
    saved activations and cell states (simd_elementwise.h)."""
    if floating is float:
        rnnfast_simd.lstm_backward_f32(d, dh, dc, dc_ext, act, c, c_prev, rows, H)
    else:
        rnnfast_simd.lstm_backward_f64(d, dh, dc, dc_ext, act, c, c_prev, rows, H)


cdef inline void _cell_backward(const Cell* cell, floating* d, const floating* h,
                                Py_ssize_t n) noexcept nogil:
    """A step's gradient d of its n output values, made the gradient of its gate
    pre-activations, from the forward's output h. Elman: d *= act'(pre-activation), in place."""
    if cell.code == CELL_ELMAN_TANH or cell.code == CELL_ELMAN_RELU:
        _mul_act_grad(d, h, n, cell.code)


# ---- the per-step recurrent product ----------------------------------------------------------
# out (B, n) += a (B, k) @ op(w_hh): forward h[t-1] @ w_hh.T (k = H, n = G*H), backward
# dgates[t+1] @ w_hh (k = G*H, n = H). Four implementations, chosen once per call by
# _step_kind from the tuning rules:
# - BLAS GEMM (large batches or weights);
# - at a batch of 1 where BLAS would run, the streaming step's dot form (simd_dot.h) on the rows
#   of op(w_hh).T: w_hh as stored forward; backward the small product below on w_hh itself
#   while a row of n = H fits in registers, else the dot form on one copy of w_hh.T a call.
#   OpenBLAS's M = 1 products took 3.5 us a forward step at D=65 H=100 LSTM f32;
# - the small product (simd_small.h): whole output rows held in vector registers, on op(w_hh)
#   laid out (k, n), for batches of 1 while w_hh is small and small batches of narrow rows;
# - the panel product (simd_panel.h): op(w_hh) packed once per call into column panels that
#   every step reads in order (OpenBLAS packs w_hh again on every step), for batches of 4 to 32
#   while a step's operands fit, and up to 256 with the helper thread taking the GEMMs around
#   the loop. Measure with `python bench/tune_step_product.py` and `python
#   bench/tune_overlap.py --panel-vs-blas`.

cdef enum:
    STEP_BLAS = 0   # = RF_PRODUCT_BLAS - 1, and so on
    STEP_SMALL = 1
    STEP_PANEL = 2
    STEP_DOT = 3    # (automatic only)
    # The panel product on the LSTM forward's gate panels (simd_panel.h): a panel per block of
    # units holds their four gates' columns, so that a block's pointwise step follows its own
    # product alone and a split forward (_split_columns) can share the blocks out. The sums
    # run as in STEP_PANEL's.
    STEP_GATE_PANEL = 4
    # A forward's dot form at a batch of one, while w_hh is at most step_sliced_max_weight_bytes:
    # op(w_hh) = w_hh.T copied once a call, rows padded to whole vectors, and read by the small
    # product in column slices (simd_small.h: sliced_addmm).
    STEP_SLICED = 5


cdef struct StepProduct:
    # How a call's steps add a @ op(w_hh) (see above): `tail` holds the small product's last
    # rows of op(w_hh) zero-padded to whole vectors; `packed` the panel product's panels;
    # `stage` their staging buffer.
    int kind
    const void* tail
    Py_ssize_t tail_rows
    const void* packed
    void* stage
    # The sliced product's w_hh as stored, when the time loop makes its copy of w_hh.T (the
    # loop's op(w) operand) itself (_forward_prologue); else NULL.
    const void* source


cdef bint _helper_available() noexcept nogil:
    """May a call start a helper thread? Forced, or: threads exist, and BLAS, whose thread
    count we know and can hold at one, may use two."""
    if rf_tuning_now.overlap != RF_OVERLAP_AUTO:
        return rf_tuning_now.overlap == RF_OVERLAP_ON
    return RF_HAVE_THREADS and rf_available_cpus >= 2 and rf_blas_threads() >= 2


cdef int _step_kind(Py_ssize_t B, Py_ssize_t H, Py_ssize_t N, Py_ssize_t itemsize):
    """Which product a call's steps use (STEP_*), for w_hh (N, H), N = G*H gate rows."""
    cdef Py_ssize_t vector_len = rnnfast_simd.vector_bytes // itemsize
    cdef Py_ssize_t vectors = (N + vector_len - 1) // vector_len
    cdef bint small_fits = vectors <= rnnfast_simd.max_vectors
    cdef Py_ssize_t weight_bytes = N * H * itemsize
    cdef int forced = rf_tuning_now.step_product
    if forced != RF_PRODUCT_AUTO:  # "small" only where it fits
        if forced == RF_PRODUCT_SMALL and not small_fits:
            return STEP_BLAS
        return forced - 1
    if small_fits and B <= rf_tuning_now.small_max_batch and (
            (B == 1 and weight_bytes <= rf_tuning_now.small_max_weight_bytes)
            or vectors <= rf_tuning_now.small_max_vectors_batched):
        return STEP_SMALL
    if B >= rf_tuning_now.panel_min_batch and (
            (B <= rf_tuning_now.panel_max_batch
             and B * weight_bytes <= rf_tuning_now.panel_max_step_bytes)
            or (B <= rf_tuning_now.panel_helped_max_batch
                and weight_bytes <= rf_tuning_now.panel_helped_max_weight_bytes
                and _helper_available())):
        return STEP_PANEL
    if B == 1:
        return STEP_DOT
    return STEP_BLAS


def step_operands(w_hh, Py_ssize_t B, bint transposed, tuple scratch=(), Py_ssize_t gates=1,
                  bint fill=True):
    """(kind, w_in_out, tail, packed, stage): what a call's recurrent products need.

    kind: 0 BLAS, 1 small, 2 panel, 3 dot form (``packed``: w_hh.T when not ``transposed``;
    ``stage``: a row of the product), 4 gate panels (below), 5 sliced (a batch of one's
    forward in place of the dot form, on ``w_in_out`` = w_hh.T with rows padded to whole
    vectors, 64-byte aligned). The product is ``a @ op(w_hh)``, op(w_hh) = w_hh.T when
    ``transposed`` (forward), else w_hh (backward). The small product reads op(w_hh) laid out
    (in, out), ``w_in_out`` (None when that is w_hh itself), with its last rows zero-padded in
    ``tail``; the panel product reads it ``packed`` into column panels. ``stage``: their
    staging buffer. ``scratch``: arrays of w_hh's dtype whose memory is free until the time
    loop ends (outputs written after it); the packed panels and their stage go in the first
    large enough, so that they cost no memory. ``gates=4`` (the LSTM forward, ``transposed``):
    a panel product becomes 4, the gate panels; ``gates=3`` (a GRU forward that splits) alike,
    its panels the r, z, n columns of a block of units (run by gru_panel_forward only).
    ``fill=False``: the sliced product's copy is left for the time loop to make (_forward and
    _gru_forward do, beside the helper).
    """
    cdef Py_ssize_t N = w_hh.shape[0], H = w_hh.shape[1], itemsize = w_hh.dtype.itemsize
    cdef int kind = _step_kind(B, H, N, itemsize)
    cdef Py_ssize_t vector_len = rnnfast_simd.vector_bytes // itemsize
    # op(w_hh) is (k, n)
    cdef Py_ssize_t k = H if transposed else N, n = N if transposed else H
    cdef Py_ssize_t padded_len = (n + vector_len - 1) // vector_len * vector_len, tail_rows
    cdef cnp.ndarray packed = None
    w_in_out = tail = stage = None
    if kind == STEP_DOT and not transposed and padded_len // vector_len <= rnnfast_simd.max_vectors:
        kind = STEP_SMALL  # on w_hh as it is: no copy
    if (kind == STEP_DOT and transposed and B == 1
            and k * n * itemsize <= rf_tuning_now.step_sliced_max_weight_bytes):
        kind = STEP_SLICED
    if kind == STEP_SLICED:  # w_hh.T (k, padded_len), 64-byte aligned
        room = np.empty(k * padded_len + 64 // itemsize, dtype=w_hh.dtype)
        offset = (64 - <size_t>cnp.PyArray_DATA(room) % 64) % 64 // itemsize
        w_in_out = room[offset:offset + k * padded_len].reshape(k, padded_len)
        if fill and itemsize == 4:
            _transpose_operand[float](<float*>cnp.PyArray_DATA(w_in_out),
                                      <const float*>cnp.PyArray_DATA(w_hh), n, k)
        elif fill:
            _transpose_operand[double](<double*>cnp.PyArray_DATA(w_in_out),
                                       <const double*>cnp.PyArray_DATA(w_hh), n, k)
        stage = np.empty(rnnfast_simd.max_vectors * vector_len, dtype=w_hh.dtype)
    elif kind == STEP_DOT:
        if not transposed:  # w_hh.T (n, k), in scratch memory as the panels below
            room = next((a.reshape(-1) for a in scratch if a.size >= k * n), None)
            packed = np.empty(k * n, dtype=w_hh.dtype) if room is None else room[:k * n]
            np.copyto(packed.reshape(n, k), w_hh.T)
        stage = np.empty(B * n, dtype=w_hh.dtype)
    elif kind == STEP_SMALL:
        w_in_out = np.ascontiguousarray(w_hh.T) if transposed else None  # one copy a call
        m = w_hh if w_in_out is None else w_in_out
        # The rows whose whole-vector reads would run past the end of m (often one); `stage`
        # has room for a 4-row block.
        tail_rows = min(k, (padded_len - n + n - 1) // n)
        tail = np.zeros((tail_rows, padded_len), dtype=w_hh.dtype)
        tail[:, :n] = m[k - tail_rows:]
        stage = np.empty(4 * padded_len, dtype=w_hh.dtype)
    elif kind == STEP_PANEL:
        if (gates == 4 or gates == 3) and transposed:
            kind = STEP_GATE_PANEL
            padded_len = gates * ((N // gates + vector_len - 1) // vector_len * vector_len)
        stage_len = rnnfast_simd.panel_rows * max(4, rnnfast_simd.panel_vectors) * vector_len
        room = next((a.reshape(-1) for a in scratch if a.size >= k * padded_len + stage_len),
                    None)
        if room is None:
            room = np.empty(k * padded_len + stage_len, dtype=w_hh.dtype)
        packed, stage = room[:k * padded_len], room[k * padded_len:k * padded_len + stage_len]
        if kind == STEP_GATE_PANEL and gates == 3:
            if itemsize == 4:
                rnnfast_simd.pack_unit_panels_f32(<float*>cnp.PyArray_DATA(packed),
                                                  <const float*>cnp.PyArray_DATA(w_hh), k, N // 3,
                                                  3)
            else:
                rnnfast_simd.pack_unit_panels_f64(<double*>cnp.PyArray_DATA(packed),
                                                  <const double*>cnp.PyArray_DATA(w_hh), k,
                                                  N // 3, 3)
        elif kind == STEP_GATE_PANEL:
            if itemsize == 4:
                rnnfast_simd.pack_gate_panels_f32(<float*>cnp.PyArray_DATA(packed),
                                                  <const float*>cnp.PyArray_DATA(w_hh), k, N // 4)
            else:
                rnnfast_simd.pack_gate_panels_f64(<double*>cnp.PyArray_DATA(packed),
                                                  <const double*>cnp.PyArray_DATA(w_hh), k,
                                                  N // 4)
        elif itemsize == 4:
            rnnfast_simd.pack_panels_f32(<float*>cnp.PyArray_DATA(packed),
                                         <const float*>cnp.PyArray_DATA(w_hh), k, n, H,
                                         transposed)
        else:
            rnnfast_simd.pack_panels_f64(<double*>cnp.PyArray_DATA(packed),
                                         <const double*>cnp.PyArray_DATA(w_hh), k, n, H,
                                         transposed)
    return kind, w_in_out, tail, packed, stage


cdef StepProduct _step_product(int kind, const floating[:, ::1] tail,
                               const floating[::1] packed, floating[::1] stage):
    cdef StepProduct how
    how.kind = kind
    how.tail_rows = 0 if tail is None else tail.shape[0]
    how.tail = NULL if how.tail_rows == 0 else &tail[0, 0]
    how.packed = NULL if packed is None else &packed[0]
    how.stage = NULL if stage is None else &stage[0]
    how.source = NULL
    return how


cdef inline Py_ssize_t _whole_vectors(Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """n rounded up to whole vectors of this SIMD level."""
    cdef Py_ssize_t vector_len = rnnfast_simd.vector_bytes // itemsize
    return (n + vector_len - 1) // vector_len * vector_len


cdef inline void _add_matmul(floating* out, const floating* a, const floating* w,
                             BLAS_Trans trans_w, StepProduct* how, Py_ssize_t rows,
                             Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """out (rows, n) += a (rows, k) @ op(w), w being w_hh (G*H, H) as stored for BLAS; for the
    small product ``w`` must already be op(w) laid out (k, n); the panel product ignores it
    for how.packed."""
    if how.kind == STEP_BLAS:
        gemm(NoTrans, trans_w, rows, n, k, <floating>1, a, k, w, k if trans_w == Trans else n,
             <floating>1, out, n)
    elif how.kind == STEP_PANEL or how.kind == STEP_GATE_PANEL:
        _panel_columns(out, a, how, rows, k, n, 0, n)
    elif how.kind == STEP_SLICED:  # w: op(w) (k, n), rows padded to whole vectors
        if floating is float:
            rnnfast_simd.sliced_addmm_f32(out, a, rows, k, n, w, _whole_vectors(n, 4),
                                          <float*>how.stage)
        else:
            rnnfast_simd.sliced_addmm_f64(out, a, rows, k, n, w, _whole_vectors(n, 8),
                                          <double*>how.stage)
    elif how.kind == STEP_DOT:
        # the dot form's weight rows are op(w)'s columns: w itself when op transposes it; out
        # rides as the bias (out + the product, as BLAS adds) into the stage, then back
        if floating is float:
            rnnfast_simd.step_dot_f32(<float*>how.stage, a,
                                      w if trans_w == Trans else <const float*>how.packed, k,
                                      NULL, NULL, 0, out, rows, n)
        else:
            rnnfast_simd.step_dot_f64(<double*>how.stage, a,
                                      w if trans_w == Trans else <const double*>how.packed, k,
                                      NULL, NULL, 0, out, rows, n)
        memcpy(out, how.stage, rows * n * sizeof(floating))
    elif floating is float:
        rnnfast_simd.small_addmm_f32(out, a, rows, k, n, w, n, <const float*>how.tail,
                                     how.tail_rows, <float*>how.stage)
    else:
        rnnfast_simd.small_addmm_f64(out, a, rows, k, n, w, n, <const double*>how.tail,
                                     how.tail_rows, <double*>how.stage)


cdef inline void _panel_columns(floating* out, const floating* a, StepProduct* how,
                                Py_ssize_t rows, Py_ssize_t k, Py_ssize_t n, Py_ssize_t q0,
                                Py_ssize_t q1) noexcept nogil:
    """The panel product's columns of panels q0 .. q1 - 1 only (gate panels: of unit blocks);
    a q1 past the last panel (n will do) means up to the end."""
    if how.kind == STEP_GATE_PANEL:
        if floating is float:
            rnnfast_simd.panel_gates_addmm_f32(out, a, rows, k, n // 4, <const float*>how.packed,
                                               <float*>how.stage, q0, q1)
        else:
            rnnfast_simd.panel_gates_addmm_f64(out, a, rows, k, n // 4,
                                               <const double*>how.packed, <double*>how.stage,
                                               q0, q1)
    elif floating is float:
        rnnfast_simd.panel_addmm_f32(out, a, rows, k, n, <const float*>how.packed,
                                     <float*>how.stage, q0, q1)
    else:
        rnnfast_simd.panel_addmm_f64(out, a, rows, k, n, <const double*>how.packed,
                                     <double*>how.stage, q0, q1)


cdef inline void _dot_product(floating* out, const floating* a, const floating* w,
                              const floating* bias, Py_ssize_t B, Py_ssize_t k,
                              Py_ssize_t n) noexcept nogil:
    """out (B, n) = a (B, k) @ w.T + bias, w (n, k) as stored (a NULL: bias only; bias NULL:
    none): the dot form for small batches, else one GEMM on the BLAS threads in force."""
    cdef Py_ssize_t r, i
    if a != NULL and B <= rf_tuning_now.step_dot_max_batch:
        if floating is float:
            rnnfast_simd.step_dot_f32(out, a, w, k, NULL, NULL, 0, bias, B, n)
        else:
            rnnfast_simd.step_dot_f64(out, a, w, k, NULL, NULL, 0, bias, B, n)
        return
    for r in range(B):
        for i in range(n):
            out[r * n + i] = 0 if bias == NULL else bias[i]
    if a != NULL:
        _bulk_gemm(NoTrans, Trans, B, n, k, <floating>1, a, k, w, k, <floating>1, out, n)


# ---- the time-loop engine --------------------------------------------------------------------
# Forward: one GEMM projects all T*B input rows into the gate pre-activations before the loop;
# each step adds h[t-1] @ w_hh.T and runs the cell's pointwise forward. Backward: only the
# recursion is sequential (the step's output gradient dh[t] + dgates[t+1] @ w_hh, then the
# cell's pointwise backward); dw_ih, dw_hh and dx are one GEMM each over all steps after it,
# and db one reduction.
#
# The helper thread (threads.h). The GEMMs around the recursion need only finished steps. So
# when the steps use the kernels' own products (no BLAS inside the loop) and the call is large
# enough, a helper thread does them beside the loop, a chunk of steps at a time: forward, the
# input projection of the chunks ahead; backward, dw_ih, dw_hh and db of the chunks behind
# (the caller then does dx and dh0, and then takes the gradient chunks the helper has not
# reached). Every GEMM then runs on one BLAS thread, so that the two cores do different work
# instead of waking BLAS's pool 2 * T times. Chunks are fixed by T and B, not by timing, and
# each gradient's chunks run in one order whichever thread runs them: the results are the same
# on every run. Measure with `python bench/tune_overlap.py`.
#
# The split forward. Where the panel product's steps are large, a helper projecting ahead sits
# idle for most of the loop; instead both threads share every step's column panels (product,
# then the cell's pointwise forward on those columns), each step once the one before is done,
# after sharing out the input projection in chunks. Items go to whichever thread asks
# (rf_round_claim), not in fixed halves, so a thread whose core is shared takes fewer instead
# of holding the other up. Only for cells whose output columns depend on their own gate
# columns alone (Elman).

cdef enum:
    # The weight gradients' two chunk sequences, which either thread may continue.
    GRAD_IH = 0
    GRAD_HH = 1


cdef struct Loop:
    # One call's time loop: sizes, operands, product and cell, and the helper's share.
    bint is_double
    bint backward
    Py_ssize_t T, B, D, H
    Py_ssize_t N        # G * H: gate rows
    Py_ssize_t chunk    # steps per hand-over to the helper (0: no helper)
    Py_ssize_t block    # forward: steps per GEMM of the projection (_projection_block)
    # Steps handed over: forward, the end of the last chunk the helper projected; backward,
    # steps finished by the caller, from the end.
    Py_ssize_t progress
    # Forward: claimed[0] is the next projection chunk to claim. The helper claims them in
    # order; the caller projects chunk 0, and any chunk its loop reaches still unclaimed.
    # Backward: dw_ih and dw_hh are each a sequence of per-chunk GEMMs, chunk 0 the last steps.
    # The helper runs them as the chunks arrive; the caller, once its own work is done, claims
    # the chunks still unclaimed in order. claimed[g]: the next chunk of sequence g to claim;
    # done[g]: chunks of it finished (a claimer waits for the one before, as both add to one
    # matrix).
    Py_ssize_t claimed[2]
    Py_ssize_t done[2]
    const void* x
    const void* w_ih
    void* gates     # forward: (T, B, N) gate pre-activations (Elman: out itself)
    Py_ssize_t gates_ld  # ... their row length: N, or a GRU's 4H (projected into its workspace)
    void* out       # forward: the output h (T, B, H)
    const void* h   # backward: the forward's output
    const void* da  # backward: (T, B, N) gradient of the gate pre-activations
    # backward: the gradient that dw_hh and db_hh sum (da itself, but for a GRU, whose n rows
    # are scaled by r on the recurrent side), and db_hh (NULL: db is the only bias gradient)
    const void* da_hh
    void* db_hh
    # backward: the row length of da and da_hh (N; a GRU's 4H: both live in its workspace),
    # and where the input side's gate columns are: da's columns [0, da_cut), then the rest
    # from column da_rest (a GRU's dn after r dn: 2H and 3H); da_cut = N for all N in place
    Py_ssize_t da_ld, da_cut, da_rest
    const void* h0
    void* dw_ih
    void* dw_hh
    void* db
    # Split forward (_split_share): round 0 shares out the input projection in split_chunks
    # blocks of steps (job.block), round t + 1 the split_panels column panels (panel_width columns each)
    # of step t, through the word `claims`; `finished` counts the items done in all rounds.
    bint split
    Py_ssize_t split_chunks, split_panels, panel_width
    # The two words both threads write, each alone on its cache line (64 bytes): the fields
    # they read in every step stay cached.
    char _pad0[64]
    uint64_t claims
    char _pad1[64]
    Py_ssize_t finished
    char _pad2[64]
    StepProduct how
    const void* bias
    const void* bias_n  # GRU forward: b_hn (H) (NULL: none); bias the folded bx (3H)
    Cell cell
    void* c         # LSTM forward: the cell states (T, B, Hc)
    const void* c0  # ... and the initial one (NULL: zeros)
    # LSTM with a projection (NULL: none): w_hr (H, Hc), H = P the state's width, and m (B, Hc)
    # a step's o * tanh(c) before it
    const void* w_hr
    void* m
    # ... the projection's per-step product (forward h = m @ w_hr.T, backward dm = d_out @
    # w_hr), run as w_hh's: w_hr is then its operand as step_operands returned it
    StepProduct how_r
    # ... backward with a helper: dw_hr (P, Hc) summed in dw_hh's chunks (_projection_steps)
    # from dhs (T, B, P) the steps' output gradients and m then every step's o * tanh(c)
    # (T, B, Hc)
    void* dw_hr
    const void* dhs


cdef bint _single_row_chunks(int kind, Py_ssize_t T, Py_ssize_t B,
                             Py_ssize_t macs) noexcept nogil:
    """A batch of one: the GEMMs around the loop cost as much as its steps, which stream the
    weights from L2 on one core; a helper takes them in short chunks (overlap_single_steps)."""
    return (B == 1 and kind != STEP_BLAS and rf_tuning_now.overlap == RF_OVERLAP_AUTO
            and rf_tuning_now.overlap_single_min_macs <= macs < rf_tuning_now.overlap_min_macs
            and T > rf_tuning_now.overlap_single_steps)


cdef Py_ssize_t _rule_chunk(int kind, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D,
                            Py_ssize_t H, Py_ssize_t N) noexcept nogil:
    """The overlap's chunk (steps per hand-over) under the rules alone, whatever the threads;
    0: the rules hand nothing over."""
    cdef Py_ssize_t macs = T * B * N * (D + H)
    cdef Py_ssize_t chunk = max(1, rf_tuning_now.overlap_chunk_rows // B)
    if _single_row_chunks(kind, T, B, macs):
        return rf_tuning_now.overlap_single_steps
    if (kind == STEP_BLAS or T <= chunk or rf_tuning_now.overlap == RF_OVERLAP_OFF
            or (rf_tuning_now.overlap == RF_OVERLAP_AUTO
                and macs < rf_tuning_now.overlap_min_macs)):
        return 0  # (auto: starting a thread costs more than it saves)
    return chunk


cdef Py_ssize_t _overlap_chunk(int kind, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D,
                               Py_ssize_t H, Py_ssize_t N) noexcept nogil:
    """Steps per hand-over if this call overlaps, else 0."""
    cdef Py_ssize_t chunk = _rule_chunk(kind, T, B, D, H, N)
    if _single_row_chunks(kind, T, B, T * B * N * (D + H)):
        # A batch of one: its chunks also run in the same order without a helper.
        return chunk
    return chunk if chunk > 0 and _helper_available() else 0


cdef bint _start_helper(rf_thread* helper, Loop* job) noexcept nogil:
    """Hand the helper's share of a chunked loop to the helper thread, if a helper may run
    (a batch of one runs in chunks at any thread count, _overlap_chunk); False if none
    started (the caller then does it, in the same chunks)."""
    if not _helper_available():
        helper.running = 0
        return False
    return rf_thread_start(helper, _helper_main, job)


cdef void _project_steps(floating* dummy, Loop* job, Py_ssize_t t0,
                         Py_ssize_t t1) noexcept nogil:
    """gates[t0:t1] = x[t0:t1] @ w_ih.T (the forward's input projection of those steps), in
    GEMMs of job.block steps (_projection_block) from t0, a multiple of it (t1 too, or T)."""
    cdef Py_ssize_t B = job.B, D = job.D, N = job.N, ld = job.gates_ld, t, t_end
    cdef bint saved
    if job.x == NULL:
        return  # no x: the caller filled the gates with the projection (gathered rows)
    if job.block == 0:
        _bulk_gemm(NoTrans, Trans, (t1 - t0) * B, N, D, <floating>1,
                   <const floating*>job.x + t0 * B * D, D, <const floating*>job.w_ih, D,
                   <floating>0, <floating*>job.gates + t0 * B * ld, ld)
        return
    saved = _serial_blas_begin(True)
    t = t0
    while t < t1:
        t_end = min(t1, t + job.block)
        gemm(NoTrans, Trans, (t_end - t) * B, N, D, <floating>1,
             <const floating*>job.x + t * B * D, D, <const floating*>job.w_ih, D,
             <floating>0, <floating*>job.gates + t * B * ld, ld)
        t = t_end
    _serial_blas_end(saved)


cdef void _grad_steps(floating* dummy, Loop* job, int which, Py_ssize_t t0, Py_ssize_t t1,
                      bint first) noexcept nogil:
    """dw_ih (which = GRAD_IH) or dw_hh (GRAD_HH) of steps t0..t1-1, set by the ``first``
    chunk and added to by the rest."""
    cdef Py_ssize_t B = job.B, D = job.D, H = job.H, N = job.N, ld = job.da_ld
    cdef Py_ssize_t gstep = B * ld, hstep = B * H, cut = job.da_cut
    cdef const floating* da = <const floating*>job.da
    cdef floating beta = 0 if first else 1
    cdef Py_ssize_t hh0 = max(t0, 1)  # dw_hh pairs da[t] with h[t-1]; step 0 with h0
    cdef const floating* x_rows = <const floating*>job.x + t0 * B * D
    if which == GRAD_IH:
        if job.dw_ih == NULL:
            return  # no dw_ih wanted: the caller derives it from da (a scatter-add by input id)
        _bulk_gemm(Trans, NoTrans, cut, D, (t1 - t0) * B, <floating>1, da + t0 * gstep, ld,
                   x_rows, D, beta, <floating*>job.dw_ih, D)
        if cut < N:  # the rest of the gate columns, apart
            _bulk_gemm(Trans, NoTrans, N - cut, D, (t1 - t0) * B, <floating>1,
                       da + t0 * gstep + job.da_rest, ld, x_rows, D, beta,
                       <floating*>job.dw_ih + cut * D, D)
        return
    da = <const floating*>job.da_hh
    if first or t1 > hh0:  # with no rows (T = 1), the first GEMM still sets dw_hh to zero
        _bulk_gemm(Trans, NoTrans, N, H, max(0, t1 - hh0) * B, <floating>1, da + hh0 * gstep,
                   ld, <const floating*>job.h + (hh0 - 1) * hstep, H, beta,
                   <floating*>job.dw_hh, H)
    if t0 == 0 and job.h0 != NULL:
        _bulk_gemm(Trans, NoTrans, N, H, B, <floating>1, da, ld, <const floating*>job.h0, H,
                   <floating>1, <floating*>job.dw_hh, H)


cdef inline void _add_col_sums(floating* out, const floating* a, Py_ssize_t rows,
                               Py_ssize_t n, Py_ssize_t ld) noexcept nogil:
    """out (n) += the column sums of a (rows, n), rows ld apart."""
    cdef Py_ssize_t r, count = 1 if ld != n else rows  # rows apart: one at a time
    if rows <= 0:
        return
    for r in range(rows // count):
        if floating is float:
            rnnfast_simd.add_col_sums_f32(out, a + r * ld, count, n)
        else:
            rnnfast_simd.add_col_sums_f64(out, a + r * ld, count, n)


cdef void _bias_grad_steps(floating* dummy, Loop* job, Py_ssize_t t0, Py_ssize_t t1,
                           bint first) noexcept nogil:
    """db of steps t0..t1-1: the sum of their rows of da (set by the ``first`` chunk); and
    db_hh, from da_hh, if the cell has one."""
    cdef Py_ssize_t N = job.N, ld = job.da_ld, cut = job.da_cut, rows = (t1 - t0) * job.B, i
    cdef floating* db = <floating*>job.db
    cdef floating* db_hh = <floating*>job.db_hh
    cdef const floating* da = <const floating*>job.da + t0 * job.B * ld
    if first:
        for i in range(N):
            db[i] = 0
            if db_hh != NULL:
                db_hh[i] = 0
    _add_col_sums(db, da, rows, cut, ld)
    if cut < N:
        _add_col_sums(db + cut, da + job.da_rest, rows, N - cut, ld)
    if db_hh != NULL:
        _add_col_sums(db_hh, <const floating*>job.da_hh + t0 * job.B * ld, rows, N, ld)


cdef inline void _chunk_steps(Loop* job, Py_ssize_t k, Py_ssize_t* t0,
                              Py_ssize_t* t1) noexcept nogil:
    """Backward chunk k: steps t0..t1-1 (chunk 0 holds the last steps)."""
    t1[0] = job.T - k * job.chunk
    t0[0] = max(0, t1[0] - job.chunk)


cdef bint _run_grad_chunk(floating* dummy, Loop* job, int which, Py_ssize_t k) noexcept nogil:
    """Chunk k of weight-gradient sequence ``which``, if this thread claims it; True if it did.
    The chunk of dw_hh also sums the bias gradients of its steps: so they too run once each,
    in order, on whichever thread (a helper may step aside between two chunks)."""
    cdef Py_ssize_t t0, t1
    if not rf_claim(&job.claimed[which], k):
        return False
    rf_wait_for(&job.done[which], k)  # the chunk before, maybe on the other thread
    _chunk_steps(job, k, &t0, &t1)
    _grad_steps(dummy, job, which, t0, t1, k == 0)
    if which == GRAD_HH:
        _bias_grad_steps(dummy, job, t0, t1, k == 0)
        _projection_steps(dummy, job, t0, t1, k == 0)
    rf_publish(&job.done[which], k + 1)
    return True


cdef void _finish_grads(floating* dummy, Loop* job) noexcept nogil:
    """The caller, after the time loop: run the weight-gradient chunks nobody has claimed."""
    cdef Py_ssize_t chunks = (job.T + job.chunk - 1) // job.chunk, k
    cdef int which
    for which in range(2):
        k = rf_load(&job.claimed[which])
        while k < chunks:
            _run_grad_chunk(dummy, job, which, k)  # if the helper took k, it is past it now
            k = rf_load(&job.claimed[which])
        rf_wait_for(&job.done[which], chunks)


cdef Py_ssize_t _split_rule(Loop* job, int kind, size_t itemsize,
                            Py_ssize_t* width_out) noexcept nogil:
    """The column panels (their width in width_out) that the rules share out at every step of
    this forward between two threads, whether or not a helper starts (the overlap's rules
    aside, _rule_chunk); 0: whole steps. An LSTM's or a GRU's: its gate panels, each a block
    of units."""
    cdef Py_ssize_t width = rnnfast_simd.panel_vectors * (rnnfast_simd.vector_bytes // itemsize)
    cdef Py_ssize_t units = job.N  # the output columns an item's pointwise step covers
    cdef Py_ssize_t macs = job.B * job.N * job.H
    cdef Py_ssize_t min_macs = rf_tuning_now.split_min_step_macs
    cdef Py_ssize_t panels
    if job.cell.code == CELL_LSTM and kind == STEP_GATE_PANEL and job.w_hr == NULL:
        # a block of units with its four gates' columns: its pointwise step needs no other
        width, units = rnnfast_simd.vector_bytes // itemsize, job.N // 4
    elif job.cell.code == CELL_GRU and kind == STEP_GATE_PANEL:
        # as the LSTM's: a block of units with its r, z, n columns
        width, units = rnnfast_simd.vector_bytes // itemsize, job.H
    elif job.cell.gates != 1 or kind != STEP_PANEL:
        return 0  # a gated cell's output columns need all its gates' columns
    panels = (units + width - 1) // width
    if panels < 2 or panels > RF_MAX_ITEMS or job.T >= RF_MAX_ROUNDS:
        return 0
    # Small batches split from an eighth of the size, where H is wide enough that each
    # thread's panels are worth the other's half of h[t-1] to fetch.
    if macs < min_macs and not (job.B <= rf_tuning_now.split_small_max_batch
                                and job.H >= rf_tuning_now.split_small_min_hidden
                                and macs >= min_macs // 8):
        return 0
    width_out[0] = width
    return panels


cdef Py_ssize_t _projection_block(Loop* job, int kind, size_t itemsize) noexcept nogil:
    """Steps per GEMM of a forward's input projection, fixed by the rules alone and kept in
    every path (whole steps or split, a helper or none: declined, late, one CPU), each GEMM on
    one BLAS thread (_project_steps): OpenBLAS's last bits of an output depend on the shape of
    the call that computes it (its edge kernels for the last N mod 16 columns, its threads'
    shares), so a call cut otherwise, or on two BLAS threads, gives other bits. A split's: an
    even number of blocks of about split_chunk_rows rows (two threads at the same speed take
    half each); else the overlap's chunk; 0 (the rules hand nothing over): one GEMM of every
    step, as BLAS runs it."""
    cdef Py_ssize_t T = job.T, width, chunks
    cdef Py_ssize_t chunk = _rule_chunk(kind, T, job.B, job.D, job.H, job.N)
    if kind == STEP_PANEL and job.cell.gates > 1:
        kind = STEP_GATE_PANEL  # (a GRU steps on plain panels where no helper may split it)
    if chunk == 0 or _split_rule(job, kind, itemsize, &width) == 0:
        return chunk
    chunks = min(T, 2 * max(1, T * job.B // (2 * rf_tuning_now.split_chunk_rows)),
                 RF_MAX_ITEMS - 1)
    return (T + chunks - 1) // chunks


cdef bint _split_columns(Loop* job, int kind, size_t itemsize) noexcept nogil:
    """Should this forward share every step's columns between the two threads (_split_rule)?
    If so, set up the rounds of _split_share: the projection's blocks (job.block, from
    _projection_block), then the panels."""
    cdef Py_ssize_t width = 0
    cdef Py_ssize_t panels = _split_rule(job, kind, itemsize, &width)
    if panels == 0:
        return False
    job.split_chunks = (job.T + job.block - 1) // job.block
    job.split_panels, job.panel_width = panels, width
    job.claims = rf_round_word(0, 0, job.split_chunks)
    job.finished = 0
    return True


cdef void _split_share(floating* dummy, Loop* job, bint from_last,
                       bint may_leave=False) noexcept nogil:
    """One thread's part of a split forward; both threads run it, one taking each round's items
    from the first, the other ``from_last``: the projection's chunks, then step by step the
    column panels' products and pointwise forward, each step once the one before is done.
    ``may_leave`` (the helper): stop between two rounds once another call is in flight; the
    other thread then takes every item (it holds none on leaving)."""
    cdef Py_ssize_t T = job.T, B = job.B, H = job.H, N = job.N, step = job.B * job.N
    cdef Py_ssize_t chunks = job.split_chunks, panels = job.split_panels
    cdef Py_ssize_t width = job.panel_width, item, t, c0, done = chunks
    cdef Cell cell = job.cell
    cdef StepProduct how = job.how
    cdef floating* out = <floating*>job.out  # Elman: the gates, in place (G = 1)
    cdef const floating* bias = <const floating*>job.bias
    cdef floating* h_t
    cdef const floating* h_prev
    cdef bint lstm = cell.code == CELL_LSTM, gru = cell.code == CELL_GRU
    cdef Py_ssize_t hstep = B * H, gstep = B * N, j1
    cdef floating* g_t
    cdef floating* c_t
    cdef const floating* c_prev
    item = rf_round_claim(&job.claims, 0, from_last)
    while item >= 0:  # a block of the projection (_projection_block)
        _project_steps(dummy, job, item * job.block, min(T, (item + 1) * job.block))
        rf_count(&job.finished)
        item = rf_round_claim(&job.claims, 0, from_last)
    for t in range(T):
        if may_leave and rf_crowded():
            rf_count(&rf_helpers_stepped_aside)
            return
        rf_wait_for(&job.finished, done)  # every item of the round before
        rf_round_open(&job.claims, t + 1, panels)
        h_t = out + t * step
        h_prev = <const floating*>job.h0 if t == 0 else h_t - step
        if lstm:  # (step = B * N is the gates' step, h's is B * H)
            g_t = <floating*>job.gates + t * gstep
            h_t = out + t * hstep
            h_prev = <const floating*>job.h0 if t == 0 else h_t - hstep
            c_t = <floating*>job.c + t * hstep
            c_prev = <const floating*>job.c0 if t == 0 else c_t - hstep
        item = rf_round_claim(&job.claims, t + 1, from_last)
        while item >= 0:
            if gru:  # a block of units: its product and pointwise step
                _gru_blocks(dummy, job, t, item, item + 1)
                rf_count(&job.finished)
                item = rf_round_claim(&job.claims, t + 1, from_last)
                continue
            c0 = item * width
            if lstm:  # units c0 .. j1 - 1: their gates' product, then their pointwise step
                j1 = min(H, c0 + width)
                if h_prev != NULL:
                    _panel_columns(g_t, h_prev, &how, B, H, N, item, item + 1)
                if floating is float:
                    rnnfast_simd.lstm_forward_f32(g_t, bias, c_prev, c_t, h_t, B, H, c0, j1)
                else:
                    rnnfast_simd.lstm_forward_f64(g_t, bias, c_prev, c_t, h_t, B, H, c0, j1)
                rf_count(&job.finished)
                item = rf_round_claim(&job.claims, t + 1, from_last)
                continue
            if h_prev != NULL:
                _panel_columns(h_t, h_prev, &how, B, H, N, item, item + 1)
            _cell_forward(&cell, h_t + c0, NULL if bias == NULL else bias + c0, h_t + c0, B,
                          min(width, N - c0), N, <const floating*>NULL, <floating*>NULL)
            rf_count(&job.finished)
            item = rf_round_claim(&job.claims, t + 1, from_last)
        done += panels


cdef void _helper_work(floating* dummy, Loop* job, bint may_leave=False) noexcept nogil:
    """The helper's share of a call (or, if no thread started, the caller's after its loop).
    ``may_leave`` (the helper thread): step aside at the next chunk boundary once another call
    is in flight, so that the two calls run on one thread each; every chunk it leaves is
    claimed by its caller (_await_chunk, _split_share, _finish_grads), in the same order."""
    cdef Py_ssize_t T = job.T, chunk = job.chunk, t0, t1, k
    if job.split:
        _split_share(dummy, job, False, may_leave)
        return
    if not job.backward:
        # The projection's chunks in order, each unless the caller has taken it (_await_chunk).
        k = rf_load(&job.claimed[0])
        while k * chunk < T:
            if may_leave and rf_crowded():
                rf_count(&rf_helpers_stepped_aside)
                return
            if rf_claim(&job.claimed[0], k):
                _project_steps(dummy, job, k * chunk, min(T, (k + 1) * chunk))
                rf_publish(&job.progress, min(T, (k + 1) * chunk))
            k = rf_load(&job.claimed[0])
        return
    k = 0
    while k * chunk < T:
        _chunk_steps(job, k, &t0, &t1)
        if not may_leave:
            rf_wait_for(&job.progress, T - t0)
        elif not rf_wait_uncrowded(&job.progress, T - t0):
            rf_count(&rf_helpers_stepped_aside)
            return
        _run_grad_chunk(dummy, job, GRAD_IH, k)
        _run_grad_chunk(dummy, job, GRAD_HH, k)  # and the bias gradients of its steps
        k += 1


cdef void* _helper_main(void* arg) noexcept nogil:
    """The helper thread's body; the caller keeps BLAS on one thread until it has joined."""
    cdef Loop* job = <Loop*>arg
    if job.is_double:
        _helper_work[double](NULL, job, True)
    else:
        _helper_work[float](NULL, job, True)
    return NULL


cdef Py_ssize_t _await_chunk(floating* dummy, Loop* job, Py_ssize_t t) noexcept nogil:
    """The forward loop is at step t, the first of a chunk whose projection the helper has
    not finished: project the chunk here if the helper has not claimed it yet (its core may be
    shared, or it may not have started), else project the next chunk while the helper finishes
    this one (a helper this loop catches up with is the slower of the two), then wait. Returns
    the step after the chunks known projected."""
    cdef Py_ssize_t end = min(job.T, t + job.chunk), after
    if rf_load(&job.progress) >= end:
        return end
    if rf_claim(&job.claimed[0], t // job.chunk):
        _project_steps(dummy, job, t, end)
        return end
    if (end < job.T and job.chunk * job.B * job.N * job.D
            >= rf_tuning_now.overlap_take_next_min_macs
            and rf_claim(&job.claimed[0], t // job.chunk + 1)):
        after = min(job.T, end + job.chunk)
        _project_steps(dummy, job, end, after)
        rf_count(&rf_chunks_projected_ahead)
        rf_wait_for(&job.progress, end)
        return after
    rf_wait_for(&job.progress, end)
    return end


cdef Py_ssize_t _forward_prologue(floating* gates, Loop* job, StepProduct* how,
                                  const floating* w_op, rf_thread* helper,
                                  bint* saved) noexcept nogil:
    """Start a forward's time loop (_forward_steps, _gru_forward_steps): the helper and the
    first chunk's projection if job.chunk > 0, else every step's; and the sliced product's
    copy of w_hh.T into w_op if how.source is set, which with chunks the caller makes while
    the helper may take the first chunk. Returns the steps known projected; ``saved``: the
    BLAS section to end after the loop."""
    cdef bint copy = how.source != NULL
    if job.chunk > 0:
        saved[0] = _serial_blas_begin(True)
        job.claimed[0] = 0 if copy else 1  # chunk 0 is this thread's unless it copies first
        if copy:
            job.progress = 0
        _start_helper(helper, job)  # if none starts, the loop projects
        if not copy:
            _project_steps(gates, job, 0, job.chunk)
            return job.chunk
        _transpose_operand(<floating*>w_op, <const floating*>how.source, job.N, job.H)
        return _await_chunk(gates, job, 0)
    _project_steps(gates, job, 0, job.T)  # every step at once: (T*B, N) = x @ w_ih.T
    if copy:
        _transpose_operand(<floating*>w_op, <const floating*>how.source, job.N, job.H)
    saved[0] = _serial_blas_begin(how.kind == STEP_BLAS
                                  and job.B * job.N * job.H < rf_tuning_now.serial_step_max_macs)
    return job.T


cdef inline void _transpose_operand(floating* dst, const floating* w, Py_ssize_t n,
                                    Py_ssize_t k) noexcept nogil:
    """The sliced product's operand: dst (k, n rounded up to whole vectors) = w (n, k).T."""
    if floating is float:
        rnnfast_simd.transpose_pad_f32(dst, _whole_vectors(n, 4), w, n, k)
    else:
        rnnfast_simd.transpose_pad_f64(dst, _whole_vectors(n, 8), w, n, k)


cdef void _forward_steps(floating* gates, floating* out, Loop* job, const floating* h0_ptr,
                         const floating* b_ptr, const floating* w_op,
                         StepProduct* how) noexcept nogil:
    """The forward's time loop on this thread, with the helper projecting chunks ahead if
    job.chunk > 0 (else the projection of every step at once first)."""
    cdef Py_ssize_t T = job.T, B = job.B, H = job.H, N = job.N, t
    cdef Py_ssize_t Hc = N // job.cell.gates  # the cell's units (H but with a projection)
    cdef Py_ssize_t gstep = B * N, hstep = B * H, cstep = B * Hc
    cdef Cell cell = job.cell
    cdef const floating* w_hr = <const floating*>job.w_hr
    cdef floating* m = <floating*>job.m
    # Steps whose projection is done, as far as this loop knows (all of them without chunks).
    cdef Py_ssize_t ready
    # The helper's projected rows reach this core a step early (see rf_prefetch), where a step
    # is a small part of L1, so that its rows do not push the weights out.
    cdef bint prefetch = job.chunk > 0 and (
        <Py_ssize_t>(gstep * sizeof(floating)) <= rf_tuning_now.prefetch_max_step_bytes)
    cdef floating* g_t
    cdef floating* h_t
    cdef const floating* h_prev
    cdef floating* c = <floating*>job.c  # LSTM only
    cdef floating* c_t = NULL
    cdef const floating* c_prev = NULL
    cdef bint saved
    cdef rf_thread helper
    ready = _forward_prologue(gates, job, how, w_op, &helper, &saved)
    for t in range(T):
        g_t = gates + t * gstep
        h_t = out + t * hstep
        if t == ready:  # the first step of a chunk not known to be projected
            ready = _await_chunk(gates, job, t)
        h_prev = h0_ptr if t == 0 else h_t - hstep
        if prefetch and (t + 1 < ready or (t + 1 < T and rf_load(&job.progress) > t + 1)):
            rf_prefetch(g_t + gstep, gstep * sizeof(floating))  # the next step's projection
        if h_prev != NULL:  # a None h0 is zeros: nothing to add at t = 0
            _add_matmul(g_t, h_prev, w_op, Trans, how, B, H, N)
        if c != NULL:
            c_t = c + t * cstep
            c_prev = <const floating*>job.c0 if t == 0 else c_t - cstep
        if w_hr == NULL:
            _cell_forward(&cell, g_t, b_ptr, h_t, B, Hc, Hc, c_prev, c_t)
        else:  # h[t] (B, P) = m (B, Hc) @ w_hr.T
            _cell_forward(&cell, g_t, b_ptr, m, B, Hc, Hc, c_prev, c_t)
            memset(h_t, 0, hstep * sizeof(floating))
            _add_matmul(h_t, m, w_hr, Trans, &job.how_r, B, Hc, H)
    if job.chunk > 0:
        rf_thread_join_or_cancel(&helper)  # every chunk is done; the helper may not have begun
    _serial_blas_end(saved)


cdef bint _split_forward(floating* dummy, Loop* job, int kind) noexcept nogil:
    """Run the forward split (_split_share, this thread and a helper) if _split_columns says
    so and a helper starts; False: not run (job.chunk then 0 if no helper started), the
    caller runs whole steps."""
    cdef bint saved
    cdef rf_thread helper
    job.split = job.chunk > 0 and _split_columns(job, kind, sizeof(floating))
    if job.split:
        saved = _serial_blas_begin(True)
        if rf_thread_start(&helper, _helper_main, job):
            _split_share(dummy, job, True)
            rf_thread_join_or_cancel(&helper)  # a helper not begun claimed nothing
        else:  # no thread: whole steps, on this one
            job.split = False
            job.chunk = job.progress = 0
        _serial_blas_end(saved)
    return job.split


cdef void _forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                   const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                   const floating[::1] b, floating[:, :, ::1] h, Cell cell,
                   int kind, const floating[:, ::1] w_hh_t, const floating[:, ::1] tail,
                   const floating[::1] packed, floating[::1] stage,
                   floating[:, :, ::1] gates_ws=None, const floating[:, ::1] c0=None,
                   floating[:, :, ::1] c=None, const floating[:, ::1] w_hr=None,
                   floating[:, ::1] m=None, const StepProduct* how_r=NULL) noexcept:
    """Elman: the gates are h itself. LSTM: ``gates_ws`` (T, B, 4Hc) the gates (left holding
    their activations), ``c`` (T, B, Hc) the cell states, ``c0`` (B, Hc) or None; with a
    projection (h and w_hh then have P columns) ``how_r`` its product and ``w_hr`` its operand,
    as step_operands(w_hr (P, Hc), B, True) gave them, and ``m`` (B, Hc) a step's scratch.
    ``x`` and ``w_ih`` None: the gates come filled with the input projection."""
    cdef Py_ssize_t T = h.shape[0], B = h.shape[1], D = 0 if x is None else x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0]
    cdef Py_ssize_t H = w_hh.shape[1]
    cdef StepProduct how = _step_product(kind, tail, packed, stage)
    # BLAS takes w_hh with a transpose flag; the small product wants w_hh.T laid out.
    cdef const floating* w_op = &w_hh[0, 0] if w_hh_t is None else &w_hh_t[0, 0]
    cdef const floating* h0_ptr = NULL if h0 is None else &h0[0, 0]
    cdef const floating* b_ptr = NULL if b is None else &b[0]
    cdef floating* out = &h[0, 0, 0]
    # Elman (G = 1): the pre-activations become h in place
    cdef floating* gates = out if gates_ws is None else &gates_ws[0, 0, 0]
    cdef bint shared
    cdef Loop job
    if kind == STEP_SLICED:  # the loop copies w_hh.T into w_op (_forward_prologue)
        how.source = &w_hh[0, 0]
    job.is_double, job.backward = floating is double, False
    job.T, job.B, job.D, job.H, job.N = T, B, D, H, N
    job.gates, job.out = gates, out
    job.x = NULL if x is None else &x[0, 0, 0]
    job.w_ih = NULL if w_ih is None else &w_ih[0, 0]
    job.gates_ld = N
    job.how, job.bias, job.cell, job.h0 = how, b_ptr, cell, h0_ptr
    job.c = NULL if c is None else &c[0, 0, 0]
    job.c0 = NULL if c0 is None else &c0[0, 0]
    job.w_hr = NULL if w_hr is None else &w_hr[0, 0]
    job.m = NULL if m is None else &m[0, 0]
    if how_r != NULL:
        job.how_r = how_r[0]
    with nogil:
        # Another call in flight (another Python thread): this one starts no helper
        # (rf_thread_start) and keeps BLAS at one thread, the cores being the callers'.
        shared = _serial_blas_begin(rf_call_enter() > 1)
        job.chunk = job.progress = _overlap_chunk(kind, T, B, D, H, N)
        job.block = _projection_block(&job, kind, sizeof(floating))
        if not _split_forward(out, &job, kind):
            if job.x == NULL:  # the gates came filled: no projection for a helper to run ahead
                job.chunk = job.progress = 0
            _forward_steps(gates, out, &job, h0_ptr, b_ptr, w_op, &how)
        _serial_blas_end(shared)
        rf_call_leave()


cdef void _backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                    const floating[:, ::1] h0, const floating[:, :, ::1] h,
                    const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                    floating[:, :, ::1] da, floating[:, :, ::1] dx, floating[:, ::1] dh0,
                    floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
                    Cell cell, int kind, const floating[:, ::1] tail,
                    const floating[::1] packed, floating[::1] stage,
                    Py_ssize_t chunk, const floating[:, :, ::1] dc_ext=None,
                    const floating[:, ::1] c0=None, const floating[:, :, ::1] c=None,
                    const floating[:, :, ::1] act=None, floating[:, ::1] dc=None,
                    floating[:, ::1] dh_t=None, const floating[:, ::1] w_hr=None,
                    const floating[:, ::1] w_hr_t=None, floating[:, :, ::1] dhs=None,
                    floating[:, ::1] dw_hr=None, const StepProduct* how_r=NULL,
                    floating[:, :, ::1] ms=None) noexcept:
    """``chunk`` > 0: overlap the weight gradients in chunks of that many steps (the caller
    decided, with _overlap_chunk, before placing the packed w_hh in dx's memory only).

    LSTM: ``act`` (T, B, 4H) the forward's gate activations, ``c`` (T, B, H) its cell states,
    ``c0`` (B, H) or None, ``dc_ext`` (T, B, H) or None the gradient into c from outside;
    ``dc`` (B, H), zeros on entry, carries the gradient into c[t-1] and ends as dc0; ``dh_t``
    (B, H) holds a step's output gradient. With a projection (H = P the state's width, Hc the
    cell's): ``how_r`` the product dm = d_out @ w_hr and ``w_hr_t`` its operand, as
    step_operands(w_hr.T (Hc, P), B, True) gave them; ``dhs`` (T, B, P) keeps every step's
    output gradient and ``ms`` (T, B, Hc) its o * tanh(c), rebuilt from ``act`` before the step
    writes its gate gradients over them (``da`` is ``act``, as without a projection), for dw_hr
    (P, Hc): with a helper (``chunk`` > 0) summed in dw_hh's chunks, else one GEMM after the
    loop; ``dh_t`` (B, Hc) then holds a step's gradient into o * tanh(c). ``x``, ``w_ih``, ``dx`` and ``dw_ih`` None (the
    forward's gates came filled): neither dx nor dw_ih is computed, ``da`` is left holding the
    gate gradients."""
    cdef Py_ssize_t T = dh.shape[0], B = dh.shape[1], D = 0 if x is None else x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0]
    cdef Py_ssize_t H = w_hh.shape[1], Hc = N // cell.gates
    cdef Py_ssize_t gstep = B * N, hstep = B * H, cstep = B * Hc, t
    cdef StepProduct how = _step_product(kind, tail, packed, stage)
    cdef const floating* w_hh_ptr = &w_hh[0, 0]
    cdef floating* da_ptr = &da[0, 0, 0]
    cdef floating* da_t
    cdef bint lstm = cell.code == CELL_LSTM
    cdef floating* dh_ptr = NULL if dh_t is None else &dh_t[0, 0]
    cdef floating* dc_ptr = NULL if dc is None else &dc[0, 0]
    cdef const floating* dce_ptr = NULL if dc_ext is None else &dc_ext[0, 0, 0]
    cdef const floating* act_ptr = NULL if act is None else &act[0, 0, 0]
    cdef const floating* c_ptr = NULL if c is None else &c[0, 0, 0]
    cdef const floating* c0_ptr = NULL if c0 is None else &c0[0, 0]
    cdef const floating* w_hr_t_ptr = NULL if w_hr_t is None else &w_hr_t[0, 0]
    cdef floating* dhs_ptr = NULL if dhs is None else &dhs[0, 0, 0]
    cdef floating* ms_ptr = NULL if ms is None else &ms[0, 0, 0]
    cdef floating* d_out  # LSTM: the step's output gradient
    cdef bint saved, shared
    cdef Loop job
    cdef rf_thread helper
    job.is_double, job.backward, job.split = floating is double, True, False
    job.T, job.B, job.D, job.H, job.N, job.chunk, job.progress = T, B, D, H, N, chunk, 0
    job.claimed[0] = job.claimed[1] = job.done[0] = job.done[1] = 0
    job.h, job.da, job.cell = &h[0, 0, 0], da_ptr, cell
    job.x = NULL if x is None else &x[0, 0, 0]
    job.da_hh, job.db_hh = da_ptr, NULL
    job.da_ld = job.da_cut = job.da_rest = N
    job.h0 = NULL if h0 is None else &h0[0, 0]
    job.dw_hh, job.db = &dw_hh[0, 0], &db[0]
    job.dw_ih = NULL if dw_ih is None else &dw_ih[0, 0]
    job.dw_hr = NULL  # (set below for dw_hh's chunks to sum dw_hr too)
    if how_r != NULL:
        job.how_r = how_r[0]
        if chunk > 0:
            job.dw_hr, job.dhs, job.m = &dw_hr[0, 0], dhs_ptr, ms_ptr
    with nogil:
        shared = _serial_blas_begin(rf_call_enter() > 1)  # as in _forward
        if chunk > 0:
            saved = _serial_blas_begin(True)
            _start_helper(&helper, &job)
        else:
            saved = _serial_blas_begin(kind == STEP_BLAS
                                       and B * N * H < rf_tuning_now.serial_step_max_macs)
        # The recursion. Elman (G = 1): the step's output gradient dh[t] + da[t+1] @ w_hh is
        # built in da[t] itself, which the cell then turns into its own gradient in place.
        for t in range(T - 1, -1, -1):
            da_t = da_ptr + t * gstep
            if lstm:  # the output gradient in its own (B, H) buffer, dc carried in another
                d_out = dh_ptr if dhs_ptr == NULL else dhs_ptr + t * hstep
                memcpy(d_out, &dh[t, 0, 0], hstep * sizeof(floating))
                if t < T - 1:
                    _add_matmul(d_out, da_t + gstep, w_hh_ptr, NoTrans, &how, B, N, H)
                if dhs_ptr != NULL:  # through the projection: dm (B, Hc) = d_out @ w_hr
                    memset(dh_ptr, 0, cstep * sizeof(floating))
                    _add_matmul(dh_ptr, d_out, w_hr_t_ptr, Trans, &job.how_r, B, H, Hc)
                    _projection_m(ms_ptr + t * cstep, act_ptr + t * gstep, c_ptr + t * cstep,
                                  B, Hc)
                _lstm_backward_step(da_t, dh_ptr, dc_ptr,
                                    NULL if dce_ptr == NULL else dce_ptr + t * cstep,
                                    act_ptr + t * gstep, c_ptr + t * cstep,
                                    c0_ptr if t == 0 else c_ptr + (t - 1) * cstep, B, Hc)
            else:
                memcpy(da_t, &dh[t, 0, 0], hstep * sizeof(floating))
                if t < T - 1:
                    _add_matmul(da_t, da_t + gstep, w_hh_ptr, NoTrans, &how, B, N, H)
                _cell_backward(&cell, da_t, &h[t, 0, 0], hstep)
            if chunk > 0 and ((T - t) % chunk == 0 or t == 0):
                rf_publish(&job.progress, T - t)
        if chunk == 0:
            _serial_blas_end(saved)
            # dw_ih (N, D) = da^T @ x, dw_hh (N, H) = da[1:]^T @ h[:-1] (+ da[0]^T @ h0), db:
            # each one GEMM or reduction over all steps.
            _grad_steps(da_ptr, &job, GRAD_IH, 0, T, True)
            _grad_steps(da_ptr, &job, GRAD_HH, 0, T, True)
            _bias_grad_steps(da_ptr, &job, 0, T, True)
        elif not helper.running:
            _helper_work(da_ptr, &job)  # no thread: the chunks now, in the same order
        # Rows of da are (t, b) pairs. dh0 (B, H) = da[0] @ w_hh
        _bulk_gemm(NoTrans, NoTrans, B, H, N, <floating>1, da_ptr, N, w_hh_ptr, H,
                   <floating>0, &dh0[0, 0], H)
        # dx (T*B, D) = da (T*B, N) @ w_ih (N, D)
        if dx is not None:
            _bulk_gemm(NoTrans, NoTrans, T * B, D, N, <floating>1, da_ptr, N, &w_ih[0, 0], D,
                       <floating>0, &dx[0, 0, 0], D)
        if chunk > 0:
            _finish_grads(da_ptr, &job)  # help with the weight gradients the helper has left
            if helper.running:  # every chunk is done (_finish_grads); it may not have begun
                rf_thread_join_or_cancel(&helper)
            _serial_blas_end(saved)
        if dhs_ptr != NULL and chunk == 0:
            _projection_grad(ms_ptr, dhs_ptr, &dw_hr[0, 0], T * B, Hc, H, True)
        _serial_blas_end(shared)
        rf_call_leave()


cdef void _projection_m(floating* m, const floating* act, const floating* c, Py_ssize_t rows,
                        Py_ssize_t Hc) noexcept nogil:
    """m (rows, Hc) = o * tanh(c) rebuilt from the forward's gate activations ``act``
    (rows, 4Hc) and cells ``c`` (rows, Hc), row by row (the same bits in any batching)."""
    cdef Py_ssize_t r, j
    cdef const floating* o
    memcpy(m, c, rows * Hc * sizeof(floating))
    _bias_act(m, <const floating*>NULL, rows, Hc, Hc, CELL_ELMAN_TANH)
    for r in range(rows):
        o = act + r * 4 * Hc + 3 * Hc
        for j in range(Hc):
            m[r * Hc + j] *= o[j]


cdef void _projection_grad(const floating* m, const floating* dhs, floating* dw_hr,
                           Py_ssize_t rows, Py_ssize_t Hc, Py_ssize_t P,
                           bint first) noexcept nogil:
    """dw_hr (P, Hc) = dhs (rows, P).T @ m (rows, Hc), set if ``first``, else added to."""
    _bulk_gemm(Trans, NoTrans, P, Hc, rows, <floating>1, dhs, P, m, Hc,
               <floating>(0 if first else 1), dw_hr, Hc)


cdef void _projection_steps(floating* dummy, Loop* job, Py_ssize_t t0, Py_ssize_t t1,
                            bint first) noexcept nogil:
    """dw_hr of steps t0..t1-1 (set by the ``first`` chunk), if this backward sums it in
    dw_hh's chunks: on whichever thread runs them, in their one order, so that it is the
    same whichever thread ran which (and the helper's BLAS calls all stay on one thread)."""
    cdef Py_ssize_t B = job.B, P = job.H, Hc = job.N // 4, r0 = t0 * B
    if job.cell.code != CELL_LSTM or job.dw_hr == NULL:  # (only _backward sets dw_hr)
        return
    _projection_grad(<const floating*>job.m + r0 * Hc, <const floating*>job.dhs + r0 * P,
                     <floating*>job.dw_hr, (t1 - t0) * B, Hc, P, first)


# ---- entry points ----------------------------------------------------------------------------

def rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity):
    """Compiled forward pass; see rnnfast.functional.rnn_forward for the contract."""
    cdef Cell cell = _elman_cell(nonlinearity)
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], H = w_hh.shape[1]
    kind, w_hh_t, tail, packed, stage = step_operands(w_hh, B, True, fill=False)
    h = np.empty((T, B, H), dtype=x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, h0, w_ih, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage)
    else:
        _forward[double](x, h0, w_ih, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage)
    return h


def rnn_backward(dh, x, h0, h, w_ih, w_hh, nonlinearity):
    """Compiled BPTT; returns (dx, dh0, dw_ih, dw_hh, db). See rnnfast.functional.rnn_backward."""
    cdef Cell cell = _elman_cell(nonlinearity)
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = x.dtype
    da = np.empty((T, B, N), dtype=dtype)  # the one (T, B, G*H) workspace
    dx = np.empty((T, B, D), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    dw_ih = np.empty((N, D), dtype=dtype)
    dw_hh = np.empty((N, H), dtype=dtype)
    db = np.empty(N, dtype=dtype)
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, H, N, dtype.itemsize), T, B, D, H, N)
    # dx is written only after the time loop, and so are dw_ih and dw_hh unless a helper
    # thread writes them beside it: until then their memory can hold the packed w_hh (the
    # peak extra memory stays the one workspace).
    kind, _, tail, packed, stage = step_operands(w_hh, B, False,
                                                 (dx,) if chunk else (dx, dw_ih, dw_hh))
    if dtype == np.float32:
        _backward[float](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db,
                         cell, kind, tail, packed, stage, chunk)
    else:
        _backward[double](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db,
                          cell, kind, tail, packed, stage, chunk)
    return dx, dh0, dw_ih, dw_hh, db


# LSTM (G = 4, gates i, f, g, o). Workspace: `gates` (T, B, 4H), the gate activations after
# the training forward (in PyTorch's order), handed back to lstm_backward with h and c.

def lstm_forward(x, h0, c0, w_ih, w_hh, b, w_hr, training):
    """Compiled LSTM forward: (h (T, B, S), c (T, B, H), gates (T, B, 4H) or None).

    x (T, B, D), h0 (B, S) and c0 (B, H) or None (zeros), w_ih (4H, D), w_hh (4H, S), b (4H,)
    or None (b_ih + b_hh), w_hr (P, H) or None: S = P with a projection, else H. ``gates``:
    the gate activations i, f, g, o when ``training``, else None.
    """
    cdef Cell cell = _lstm_cell()
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], N = w_ih.shape[0], S = w_hh.shape[1]
    cdef Py_ssize_t H = N // 4
    kind, w_hh_t, tail, packed, stage = step_operands(w_hh, B, True, gates=4, fill=False)
    gates = np.empty((T, B, N), dtype=x.dtype)
    h = np.empty((T, B, S), dtype=x.dtype)
    c = np.empty((T, B, H), dtype=x.dtype)
    m = w_hr_op = r_tail = r_packed = r_stage = None
    cdef StepProduct how_r
    cdef StepProduct* how_r_ptr = NULL
    if w_hr is not None:  # h[t] = m @ w_hr.T a step, by the step products of w_hh's rule
        m = np.empty((B, H), dtype=x.dtype)
        r_kind, w_hr_op, r_tail, r_packed, r_stage = step_operands(w_hr, B, True)
        w_hr_op = w_hr if w_hr_op is None else w_hr_op
        how_r_ptr = &how_r
    if x.dtype == np.float32:
        if how_r_ptr != NULL:
            how_r = _step_product[float](r_kind, r_tail, r_packed, r_stage)
        _forward[float](x, h0, w_ih, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage,
                        gates, c0, c, w_hr_op, m, how_r_ptr)
    else:
        if how_r_ptr != NULL:
            how_r = _step_product[double](r_kind, r_tail, r_packed, r_stage)
        _forward[double](x, h0, w_ih, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage,
                         gates, c0, c, w_hr_op, m, how_r_ptr)
    return h, c, (gates if training else None)


def lstm_backward(dh, dc, x, h0, c0, h, c, gates, w_ih, w_hh, w_hr):
    """Compiled LSTM BPTT: (dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr), dw_hr None without w_hr.

    dh (T, B, S) the gradient from outside into every h[t]; dc (T, B, H) or None into every
    c[t]; h, c, gates what the training forward returned. db is the gradient of the folded
    bias (b_ih and b_hh each receive it). ``gates`` is used up: step t's gate gradients
    overwrite its activations (the peak extra memory stays the one (T, B, 4H) workspace; with
    a projection plus (T, B, P + H) for dw_hr: the steps' output gradients and o * tanh(c)).
    """
    if gates is None:
        raise ValueError("lstm_backward needs the gates of a training forward")
    cdef Cell cell = _lstm_cell()
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0], S = w_hh.shape[1], H = N // 4
    dtype = x.dtype
    da = gates
    dx = np.empty((T, B, D), dtype=dtype)
    dh0 = np.empty((B, S), dtype=dtype)
    dc0 = np.zeros((B, H), dtype=dtype)  # the carry of dc, from zero at the last step
    dh_t = np.empty((B, H), dtype=dtype)
    dw_ih = np.empty((N, D), dtype=dtype)
    dw_hh = np.empty((N, S), dtype=dtype)
    db = np.empty(N, dtype=dtype)
    w_hr_op = dhs = dw_hr = ms = r_tail = r_packed = r_stage = None
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, S, N, dtype.itemsize), T, B, D, S, N)
    cdef StepProduct how_r
    cdef StepProduct* how_r_ptr = NULL
    if w_hr is not None:  # dm = d_out @ w_hr = d_out @ (w_hr.T).T a step, as w_hh's products
        w_hr_t = np.ascontiguousarray(w_hr.T)
        r_kind, w_hr_op, r_tail, r_packed, r_stage = step_operands(w_hr_t, B, True)
        w_hr_op = w_hr_t if w_hr_op is None else w_hr_op
        how_r_ptr = &how_r
        dhs = np.empty((T, B, S), dtype=dtype)  # every step's output gradient, for dw_hr
        dw_hr = np.empty((S, H), dtype=dtype)
        ms = np.empty((T, B, H), dtype=dtype)  # every step's o * tanh(c), for dw_hr
    kind, _, tail, packed, stage = step_operands(w_hh, B, False,
                                                 (dx,) if chunk else (dx, dw_ih, dw_hh))
    if dtype == np.float32:
        if how_r_ptr != NULL:
            how_r = _step_product[float](r_kind, r_tail, r_packed, r_stage)
        _backward[float](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db,
                         cell, kind, tail, packed, stage, chunk, dc, c0, c, gates, dc0, dh_t,
                         w_hr, w_hr_op, dhs, dw_hr, how_r_ptr, ms)
    else:
        if how_r_ptr != NULL:
            how_r = _step_product[double](r_kind, r_tail, r_packed, r_stage)
        _backward[double](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db,
                          cell, kind, tail, packed, stage, chunk, dc, c0, c, gates, dc0, dh_t,
                          w_hr, w_hr_op, dhs, dw_hr, how_r_ptr, ms)
    return dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr


def overlap_steps(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t itemsize):
    """Steps per hand-over to a helper thread in an Elman call of these sizes (0: no helper),
    under the current rules and BLAS thread count."""
    return _overlap_chunk(_step_kind(B, H, H, itemsize), T, B, D, H, H)


def split_panels(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t itemsize,
                 Py_ssize_t gates=1):
    """Column panels of every step an Elman forward (``gates=4``: an LSTM forward, ``gates=3``
    a GRU forward, their blocks of units) of these sizes shares between its two threads (0: no
    split), under the current rules and BLAS thread count."""
    cdef Loop job
    cdef Py_ssize_t N = gates * H
    cdef int kind = _step_kind(B, H, N, itemsize)
    job.T, job.B, job.H, job.N, job.w_hr = T, B, H, N, NULL
    job.cell.gates, job.cell.code = 1, CELL_ELMAN_TANH
    if gates == 4 or gates == 3:
        job.cell = _lstm_cell() if gates == 4 else _gru_cell()
        kind = STEP_GATE_PANEL if kind == STEP_PANEL else kind
    job.D = D
    job.block = _projection_block(&job, kind, itemsize)
    if _overlap_chunk(kind, T, B, D, H, N) == 0 or not _split_columns(&job, kind, itemsize):
        return 0
    return job.split_panels


# ---- the streaming step ----------------------------------------------------------------------
# One step of a stack of layers for streaming inference, called once per time step from
# Python: per-call overhead is what counts. Batches up to step_dot_max_batch use the dot-form
# product (simd_dot.h) on the weights as stored; larger ones GEMM, which packs the weights
# again on every call. Measure with `python bench/tune_step_batch.py`.

# The split step. Where a layer's weights are large (an LSTM's or GRU's at D=32 H=128: 246 to
# 328 KB a step, read from L2 at its read rate), a batch of one shares the rows of its products
# with the step's helper thread (threads.h): the caller computes the first rows, the thread the
# rest, so that each core reads its part of the weights from its own L2, the same part at every
# call. The caller's part is the larger, as the thread starts a few cache-line transfers later.
# A row's sum is the same expression whichever thread computes it (simd_dot.h), so the results
# do not depend on the split. The caller never waits for a thread that has not begun (it then
# does the thread's part too), only for a part the thread has claimed. A thread that kept it
# waiting (descheduled: its core is busy) sends the steps alone for 64 times that wait, so such
# waits cost at most about 1/65 of the time; one that missed many calls in a row (asleep, or
# its core taken), for a while that doubles each time (1 ms to 1 s). And the steps share only
# while that measures faster: both ways' wall times are kept (a few calls in 1024 probe the
# way not taken), since on a loaded machine a thread on time can still cost the caller its
# core. The pointwise part follows on the caller.

cdef enum:
    _SPLIT_ROWS = 16  # the parts' boundary: a multiple of this many rows (an f32 vector block)
    _SPLIT_CALLER_SIXTEENTHS = 9  # the caller's share of the rows
    _SPLIT_LATE_NS = 20000  # a wait longer than this at the end: the thread was descheduled
    _SPLIT_LATE_FACTOR = 64  # ... then the steps run alone this many times as long
    _SPLIT_MISSES = 64  # calls in a row whose thread never began: its core is taken
    _SPLIT_PROBE_EVERY = 1024  # calls, of which the first _SPLIT_PROBE_CALLS try the other way
    _SPLIT_PROBE_CALLS = 32

# The weight bytes per product from which a step of one row splits (set_step_split, for tests:
# 0 splits every step), and the back-off (one caller at a time posts, the others run alone).
# Per product: the GRU's two products (x's and h's) lose at 246 and 442 KB in all and win at
# 884 KB, the LSTM's and Elman's one product win from about 288 KB, lose at 196 KB (D=32 H=96,
# 128, 192, 256, 384: `python bench/step_cost.py --cell gru --threads 1 2`).
cdef Py_ssize_t _split_min_bytes = 256 * 1024
cdef uint64_t _split_resume_ns = 0, _split_backoff_ns = 0
cdef Py_ssize_t _split_misses = 0, _split_shared = 0
cdef Py_ssize_t _split_late = 0, _split_missed = 0  # diagnostics: late waits, missed posts
# The wall time of a step's products alone [0] and shared [1] (moving averages, 0: none yet),
# and the way that is faster (1: shared), which the steps take but for probes of the other.
cdef double _split_wall_ns[2]
_split_wall_ns[0] = _split_wall_ns[1] = 0
cdef Py_ssize_t _split_calls = 0
cdef int _split_mode = 1


def set_step_split(Py_ssize_t min_bytes=-1):
    """Set the weight bytes per product from which a streaming step of one row shares its
    products with the step's helper thread (-1: keep); return the previous value and the
    number of steps the thread has shared, waited for (late) and missed (not begun) so far.
    Setting a value also starts the choice afresh: no back-off, the shared way first."""
    global _split_min_bytes, _split_resume_ns, _split_backoff_ns, _split_misses, _split_mode
    previous = (_split_min_bytes, _split_shared, _split_late, _split_missed)
    if min_bytes >= 0:
        _split_min_bytes = min_bytes
        _split_resume_ns = _split_backoff_ns = _split_misses = 0
        _split_mode = 1
        _split_wall_ns[0] = _split_wall_ns[1] = 0
    return previous


cdef struct StepPart:
    # out (n,) = a @ wa.T + c @ wc.T + bias (a NULL: bias only; c, bias NULL: none), rows of w
    # as stored (n, ka) and (n, kc); any float type (SplitStep.itemsize)
    void* out
    const void* a
    const void* wa
    const void* c
    const void* wc
    const void* bias
    Py_ssize_t ka, kc


cdef struct SplitStep:
    StepPart part[2]
    int parts, itemsize
    Py_ssize_t n, n1  # rows of each part; the caller's are 0 .. n1 - 1, the thread's the rest


cdef void _part_rows(floating* dummy, StepPart* p, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """Rows i0 .. i1 - 1 of one product of a batch of one."""
    cdef floating* out = <floating*>p.out + i0
    cdef const floating* bias = NULL if p.bias == NULL else <const floating*>p.bias + i0
    cdef const floating* c = <const floating*>p.c
    cdef Py_ssize_t i
    if p.a == NULL:
        for i in range(i1 - i0):
            out[i] = 0 if bias == NULL else bias[i]
    elif floating is float:
        rnnfast_simd.step_dot_f32(out, <const float*>p.a, <const float*>p.wa + i0 * p.ka, p.ka,
                                  c, NULL if c == NULL else <const float*>p.wc + i0 * p.kc,
                                  p.kc, bias, 1, i1 - i0)
    else:
        rnnfast_simd.step_dot_f64(out, <const double*>p.a, <const double*>p.wa + i0 * p.ka, p.ka,
                                  c, NULL if c == NULL else <const double*>p.wc + i0 * p.kc,
                                  p.kc, bias, 1, i1 - i0)


cdef void _split_rows(SplitStep* s, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """Rows i0 .. i1 - 1 of every product of s."""
    cdef Py_ssize_t k
    for k in range(s.parts):
        if s.itemsize == 4:
            _part_rows(<float*>NULL, &s.part[k], i0, i1)
        else:
            _part_rows(<double*>NULL, &s.part[k], i0, i1)


cdef void _split_thread_part(void* arg) noexcept nogil:
    cdef SplitStep* s = <SplitStep*>arg
    _split_rows(s, s.n1, s.n)


cdef void _split_products(SplitStep* s) noexcept nogil:
    """Compute the products of s, sharing their rows with the step's thread if it may help."""
    global _split_resume_ns, _split_backoff_ns, _split_misses, _split_shared, _split_late
    global _split_missed, _split_calls, _split_mode
    cdef uint64_t waited, start
    cdef Py_ssize_t bytes_ = 0, k, job = 0
    cdef int mode
    for k in range(s.parts):
        bytes_ += s.n * (s.part[k].ka + (0 if s.part[k].c == NULL else s.part[k].kc))
    s.n1 = (s.n * _SPLIT_CALLER_SIXTEENTHS // 16 + _SPLIT_ROWS - 1) // _SPLIT_ROWS * _SPLIT_ROWS
    if bytes_ * s.itemsize < _split_min_bytes * s.parts or s.n1 >= s.n:
        _split_rows(s, 0, s.n)
        return
    _split_calls += 1
    mode = _split_mode
    if _split_calls % _SPLIT_PROBE_EVERY < _SPLIT_PROBE_CALLS:
        mode = 1 - mode  # a probe of the other way
    start = rf_clock_ns()
    if (rf_call_enter() == 1 and mode == 1 and _helper_available()
            and (_split_resume_ns == 0 or start >= _split_resume_ns)):
        job = rf_step_post(_split_thread_part, s)
    _split_rows(s, 0, s.n1)
    if job == 0:
        _split_rows(s, s.n1, s.n)
    elif rf_step_finish(job, &waited):
        _split_misses = _split_backoff_ns = 0
        _split_shared += 1
        if waited > _SPLIT_LATE_NS:  # alone for 64 times that wait: at most 1/65 of it lost
            _split_late += 1
            _split_resume_ns = rf_clock_ns() + _SPLIT_LATE_FACTOR * waited
    else:  # the thread had not begun: its part here too
        _split_rows(s, s.n1, s.n)
        _split_misses += 1
        _split_missed += 1
        if _split_misses >= _SPLIT_MISSES:  # alone for 1 ms, then twice as long each time
            _split_backoff_ns = min(max(2 * _split_backoff_ns, 1000000), 1000000000)
            _split_resume_ns, _split_misses = rf_clock_ns() + _split_backoff_ns, 0
    rf_call_leave()
    if mode == 0 or job != 0:  # (a call that meant to share and posted nothing: neither way)
        _split_wall_ns[mode] += (<double>(rf_clock_ns() - start) - _split_wall_ns[mode]) / 8
        if _split_wall_ns[0] > 0 and _split_wall_ns[1] > 0:
            _split_mode = _split_wall_ns[1] < _split_wall_ns[0]


cdef inline void _set_part(StepPart* p, void* out, const void* a, const void* wa, Py_ssize_t ka,
                           const void* c, const void* wc, Py_ssize_t kc,
                           const void* bias) noexcept nogil:
    p.out, p.a, p.wa, p.ka, p.c, p.wc, p.kc, p.bias = out, a, wa, ka, c, wc, kc, bias


cdef void _step_gates(floating* out, const floating* inp, const floating* h_prev,
                      const floating* w_ih, const floating* w_hh, const floating* b_hh,
                      Py_ssize_t B, Py_ssize_t D, Py_ssize_t S, Py_ssize_t N) noexcept nogil:
    """out (B, N) = inp @ w_ih.T + h_prev @ w_hh.T + b_hh: a step's gate pre-activations
    (N = G * H) from the state h_prev (B, S) (NULL: zeros) and b_hh (NULL: none)."""
    cdef Py_ssize_t r, i
    cdef SplitStep split
    if B == 1 and B <= rf_tuning_now.step_dot_max_batch:
        _set_part(&split.part[0], out, inp, w_ih, D, h_prev, w_hh, S, b_hh)
        split.parts, split.itemsize, split.n = 1, sizeof(floating), N
        _split_products(&split)
    elif B <= rf_tuning_now.step_dot_max_batch:
        if floating is float:
            rnnfast_simd.step_dot_f32(out, inp, w_ih, D, h_prev, w_hh, S, b_hh, B, N)
        else:
            rnnfast_simd.step_dot_f64(out, inp, w_ih, D, h_prev, w_hh, S, b_hh, B, N)
    else:
        for r in range(B):
            for i in range(N):
                out[r * N + i] = 0 if b_hh == NULL else b_hh[i]
        _bulk_gemm(NoTrans, Trans, B, N, D, <floating>1, inp, D, w_ih, D, <floating>1, out, N)
        if h_prev != NULL:
            _bulk_gemm(NoTrans, Trans, B, N, S, <floating>1, h_prev, S, w_hh, S, <floating>1,
                       out, N)


cdef void _step_layer(floating* out, const floating* inp, const floating* h_prev,
                      const floating* w_ih, const floating* w_hh, const floating* b_ih,
                      const floating* b_hh, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                      const Cell* cell) noexcept nogil:
    """out (B, H) = the cell's output from inp @ w_ih.T + h_prev @ w_hh.T + b_hh + b_ih.

    ``h_prev`` NULL means zeros; ``b_hh`` and ``b_ih`` NULL mean no bias.
    """
    _step_gates(out, inp, h_prev, w_ih, w_hh, b_hh, B, D, H, H)
    _cell_forward(cell, out, b_ih, out, B, H, H, <const floating*>NULL, <floating*>NULL)


cdef void _layer_step(const Cell* cell, floating* h_out, floating* c_out, floating* scratch,
                      const floating* inp, const floating* h_prev, const floating* c_prev,
                      const floating* w_ih, const floating* w_hh, const floating* b_ih,
                      const floating* b_hh, const floating* w_hr, Py_ssize_t B, Py_ssize_t D,
                      Py_ssize_t H, Py_ssize_t S) noexcept nogil:
    """One layer's step of the cell (scratch: LSTM (B, 5H), GRU (2, B, 3H), Elman none)."""
    if cell.code == CELL_LSTM:
        _lstm_step_layer(h_out, c_out, scratch, scratch + B * 4 * H, inp, h_prev, c_prev, w_ih,
                         w_hh, b_ih, b_hh, w_hr, B, D, H, S)
    elif cell.code == CELL_GRU:
        _gru_step_layer(h_out, scratch, inp, h_prev, w_ih, w_hh, b_ih, b_hh, B, D, H)
    else:
        _step_layer(h_out, inp, h_prev, w_ih, w_hh, b_ih, b_hh, B, D, H, cell)


cdef void _stack_step(const Cell* cell, floating* h_new, floating* c_new, floating* scratch,
                      const floating* inp, const floating* h_ptr, const floating* c_ptr,
                      tuple params, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t S,
                      bint release_gil):
    """Run an admitted stack step (_stack_admit): layer k writes h_new[k] (B, S) (and an
    LSTM's c_new[k] (B, H)) from h[k], c[k] (NULL: zeros)."""
    cdef Py_ssize_t L = len(params), k, d_in = D
    cdef tuple layer
    cdef object b_ih, b_hh, w_hr
    cdef const floating* b_ih_ptr
    cdef const floating* b_hh_ptr
    cdef const floating* w_hr_ptr
    cdef const floating* w_ih_ptr
    cdef const floating* w_hh_ptr
    cdef const floating* h_prev
    cdef const floating* c_prev
    cdef floating* c_out
    for k in range(L):
        layer = <tuple>params[k]
        b_ih, b_hh = layer[2], layer[3]
        w_hr = layer[4] if cell.code == CELL_LSTM else None
        b_ih_ptr = NULL if b_ih is None else <const floating*>_data(b_ih)
        b_hh_ptr = NULL if b_hh is None else <const floating*>_data(b_hh)
        w_hr_ptr = NULL if w_hr is None else <const floating*>_data(w_hr)
        w_ih_ptr = <const floating*>_data(layer[0])
        w_hh_ptr = <const floating*>_data(layer[1])
        h_prev = NULL if h_ptr == NULL else h_ptr + k * B * S
        c_prev = NULL if c_ptr == NULL else c_ptr + k * B * H
        c_out = NULL if c_new == NULL else c_new + k * B * H
        if release_gil:
            with nogil:
                _layer_step(cell, h_new + k * B * S, c_out, scratch, inp, h_prev, c_prev,
                            w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, w_hr_ptr, B, d_in, H, S)
        else:
            _layer_step(cell, h_new + k * B * S, c_out, scratch, inp, h_prev, c_prev, w_ih_ptr,
                        w_hh_ptr, b_ih_ptr, b_hh_ptr, w_hr_ptr, B, d_in, H, S)
        inp = h_new + k * B * S
        d_in = S


cdef object _stack_call(Cell cell, object x, object h, object c, tuple params,
                        bint nested=False):
    """A stack step of any cell: (output (B, S), h_new (L, B, S)[, c_new (L, B, H)]), or None
    if an operand is not admitted; ``nested``: a gated cell's new states in one tuple,
    (output, (h_new[, c_new]))."""
    cdef bint lstm = cell.code == CELL_LSTM
    cdef Py_ssize_t sizes[5]  # L, B, D, H, S
    cdef Py_ssize_t macs = 0
    cdef int typenum = _stack_admit(x, (h, c) if lstm else (h,), params, cell.gates, lstm, sizes,
                                    &macs)
    if typenum < 0:
        return None
    cdef Py_ssize_t L = sizes[0], B = sizes[1], D = sizes[2], H = sizes[3], S = sizes[4]
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = L, B, S
    # C-API allocations, not np.empty and a slice: no Python-level calls per step.
    h_new = cnp.PyArray_EMPTY(3, dims, typenum, 0)
    output = cnp.PyArray_EMPTY(2, &dims[1], typenum, 0)
    c_new = scratch = None
    dims[2] = H
    if lstm:
        c_new = cnp.PyArray_EMPTY(3, dims, typenum, 0)
    # A gated cell's scratch on the stack while it is small (one allocation less a step).
    cdef double small_scratch[2048]
    cdef void* scratch_ptr = NULL
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(<cnp.ndarray>x)
    if cell.gates > 1:
        dims[2] = 5 * H if lstm else 6 * H
        if B * dims[2] * itemsize <= sizeof(small_scratch):
            scratch_ptr = small_scratch
        else:
            scratch = cnp.PyArray_EMPTY(2, &dims[1], typenum, 0)
            scratch_ptr = _data(scratch)
    cdef bint release_gil = macs >= rf_tuning_now.step_nogil_min_macs
    if typenum == cnp.NPY_FLOAT:
        _stack_step[float](&cell, <float*>_data(h_new),
                           NULL if c_new is None else <float*>_data(c_new), <float*>scratch_ptr,
                           <const float*>_data(x), NULL if h is None else <const float*>_data(h),
                           NULL if c is None else <const float*>_data(c), params, B, D, H, S,
                           release_gil)
    else:
        _stack_step[double](&cell, <double*>_data(h_new),
                            NULL if c_new is None else <double*>_data(c_new),
                            <double*>scratch_ptr, <const double*>_data(x),
                            NULL if h is None else <const double*>_data(h),
                            NULL if c is None else <const double*>_data(c), params, B, D, H, S,
                            release_gil)
    memcpy(_data(output), <char*>_data(h_new) + (L - 1) * B * S * itemsize, B * S * itemsize)
    if nested:
        return output, ((h_new, c_new) if lstm else (h_new,))
    if lstm:
        return output, h_new, c_new
    return output, h_new


def rnn_step(x, h, tuple params, str nonlinearity):
    """One step of a stack of layers: (output (B, H), a copy of h_new[-1]; h_new (L, B, H)),
    or None.

    x (B, D); h (L, B, H) or None for zeros; params: per layer (w_ih, w_hh, b_ih, b_hh) with
    both biases None for no bias. None means an operand is not exactly a C-contiguous array of
    the right dtype and shape: the caller must take the validating path.
    """
    return _stack_call(_elman_cell(nonlinearity), x, h, None, params)


# The LSTM's streaming step: per layer, the (B, 4H) gates by the same dot-form product (or
# GEMM) with b_hh, then the cell's pointwise forward with b_ih, c_prev and the new c; with a
# projection the pointwise forward writes m = o * tanh(c) (B, H) and h = m @ w_hr.T (B, S).

cdef void _lstm_step_layer(floating* h_out, floating* c_out, floating* gates, floating* m,
                           const floating* inp, const floating* h_prev, const floating* c_prev,
                           const floating* w_ih, const floating* w_hh, const floating* b_ih,
                           const floating* b_hh, const floating* w_hr, Py_ssize_t B,
                           Py_ssize_t D, Py_ssize_t H, Py_ssize_t S) noexcept nogil:
    cdef Cell cell = _lstm_cell()
    _step_gates(gates, inp, h_prev, w_ih, w_hh, b_hh, B, D, S, 4 * H)
    if w_hr == NULL:
        _cell_forward(&cell, gates, b_ih, h_out, B, H, H, c_prev, c_out)
    else:
        _cell_forward(&cell, gates, b_ih, m, B, H, H, c_prev, c_out)
        _dot_product(h_out, m, w_hr, <const floating*>NULL, B, H, S)


def lstm_step(x, h, c, tuple params):
    """One LSTM step of a stack of layers: (output (B, S), h_new (L, B, S), c_new (L, B, H)),
    or None.

    x (B, D); h (L, B, S) and c (L, B, H), each None for zeros; params: per layer (w_ih
    (4H, D_in), w_hh (4H, S), b_ih, b_hh, w_hr (S, H) or None: then S = H) with both biases
    None for no bias. None means an operand is not exactly a C-contiguous array of the right
    dtype and shape: the caller validates and retries.
    """
    return _stack_call(_lstm_cell(), x, h, c, params)


# ==============================================================================================
# Admission: the fast path's C-level checks, shared by rnn_forward_plain, rnn_backward_plain
# and rnn_step. They admit arguments that are already exactly what the kernels need (ndarrays
# of one float dtype, C-contiguous, aligned, native byte order, every size > 0, every shape
# agreeing, within the BLAS integer) in about a microsecond, and return "not admitted" for
# anything else (a conversion, a copy, an error message or an empty size is needed): the
# caller then takes rnnfast's validating path. They never raise for bad arguments.
# ==============================================================================================

cdef inline void* _data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t _dim(object a, int i) noexcept:
    return cnp.PyArray_DIM(<cnp.ndarray>a, i)


cdef inline bint _ready(object a, int typenum, int ndim):
    """An ndarray of exactly this dtype and rank, C-contiguous, aligned, native byte order."""
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline bint _shaped(object a, int typenum, Py_ssize_t d0, Py_ssize_t d1=-1,
                         Py_ssize_t d2=-1):
    """_ready, with the given dimensions (-1 ends the shape)."""
    cdef int ndim = 1 if d1 < 0 else 2 if d2 < 0 else 3
    if not _ready(a, typenum, ndim) or _dim(a, 0) != d0:
        return False
    return (ndim < 2 or _dim(a, 1) == d1) and (ndim < 3 or _dim(a, 2) == d2)


cdef int _float_typenum(object x, int ndim):
    """x's typenum if it is a ready float32 or float64 array of this rank, else -1."""
    if _ready(x, cnp.NPY_FLOAT, ndim):
        return cnp.NPY_FLOAT
    if _ready(x, cnp.NPY_DOUBLE, ndim):
        return cnp.NPY_DOUBLE
    return -1


cdef int _plain_sizes(object x, object h0, object w_ih, object w_hh, Py_ssize_t blas_int_max,
                      Py_ssize_t* sizes):
    """Check x, h0, w_ih, w_hh; fill sizes = (T, B, D, H); return the dtype's typenum or -1."""
    cdef int typenum = _float_typenum(x, 3)
    if typenum < 0 or not _ready(w_ih, typenum, 2):
        return -1
    cdef Py_ssize_t T = _dim(x, 0), B = _dim(x, 1), D = _dim(x, 2), H = _dim(w_ih, 0)
    if T == 0 or B == 0 or D == 0 or H == 0 or _dim(w_ih, 1) != D:
        return -1
    if not _shaped(w_hh, typenum, H, H) or not (h0 is None or _shaped(h0, typenum, B, H)):
        return -1
    # The BLAS integer limit (rnnfast words the error on its validating path).
    if max(T * B, H) * max(D, H) > blas_int_max:
        return -1
    sizes[0], sizes[1], sizes[2], sizes[3] = T, B, D, H
    return typenum


cdef int _stack_admit(object x, tuple states, tuple params, Py_ssize_t G, bint lstm,
                      Py_ssize_t* sizes, Py_ssize_t* macs) except -2:
    """Check every operand of a stack step of a cell with G gate blocks: per layer (w_ih
    (G*H, d_in), w_hh (G*H, S), b_ih, b_hh (G*H,) or both None) and, for an LSTM, w_hr (S, H)
    or None (then S = H); ``states`` h (L, B, S) and an LSTM's c (L, B, H), each None or
    ready. Fill sizes = (L, B, D, H, S) and the step's multiply-adds; return the dtype's
    typenum or -1."""
    cdef Py_ssize_t L = len(params), fields = 5 if lstm else 4, k, B, D, H, S, N, d_in
    cdef tuple layer
    cdef object w_ih, w_hh, b_ih, b_hh, w_hr = None
    cdef int typenum = _float_typenum(x, 2) if L > 0 else -1
    if typenum < 0:
        return -1
    if type(params[0]) is not tuple or len(<tuple>params[0]) != fields:
        return -1
    w_hh = (<tuple>params[0])[1]
    if not cnp.PyArray_CheckExact(w_hh) or cnp.PyArray_NDIM(<cnp.ndarray>w_hh) != 2:
        return -1
    B, D, N, S = _dim(x, 0), _dim(x, 1), _dim(w_hh, 0), _dim(w_hh, 1)
    H = N // G
    if B == 0 or H == 0 or D == 0 or S == 0 or N != G * H:
        return -1
    d_in = D
    macs[0] = 0
    for k in range(L):
        if type(params[k]) is not tuple:
            return -1
        layer = <tuple>params[k]
        if len(layer) != fields:
            return -1
        w_ih, w_hh, b_ih, b_hh = layer[0], layer[1], layer[2], layer[3]
        if lstm:
            w_hr = layer[4]
        if w_hr is None:
            if S != H:
                return -1
        elif not _shaped(w_hr, typenum, S, H):
            return -1
        else:
            macs[0] += B * S * H
        if not (_shaped(w_ih, typenum, N, d_in) and _shaped(w_hh, typenum, N, S)):
            return -1
        if (b_ih is None) != (b_hh is None):
            return -1
        if b_ih is not None and not (_shaped(b_ih, typenum, N) and _shaped(b_hh, typenum, N)):
            return -1
        macs[0] += B * N * (d_in + S)
        d_in = S
    for k in range(len(states)):
        if states[k] is not None and not _shaped(states[k], typenum, L, B, S if k == 0 else H):
            return -1
    sizes[0], sizes[1], sizes[2], sizes[3], sizes[4] = L, B, D, H, S
    return typenum


def gated_admit(tuple values, tuple layouts, tuple optional, Py_ssize_t gates,
                Py_ssize_t blas_int_max):
    """The sizes (a dict of the layouts' labels, and H and S) if every array of a gated call
    is admitted, else None (the caller validates).

    ``values[i]`` is checked against ``layouts[i]``, a tuple of labels (its dimensions), in
    order, x first and w_ih (G, ·) second; a value may be None where ``optional[i]`` (an
    empty layout is w_hr's none: the state S then has H features). Every array must be ready
    (see above) and of x's dtype, every label of one size, G a multiple of ``gates``, every
    size > 0 and every GEMM operand within the BLAS integer.
    """
    cdef Py_ssize_t i, j, n = len(values), d
    cdef dict sizes = {}
    cdef tuple labels
    cdef int typenum = _float_typenum(values[0], 3) if n > 0 else -1
    if typenum < 0:
        return None
    for i in range(n):
        value, labels = values[i], <tuple>layouts[i]
        if value is None:
            if not optional[i]:
                return None
            if len(labels) == 2 and labels[0] == "S":  # no projection: the state is h itself
                sizes["S"] = sizes["H"]
            continue
        if not _ready(value, typenum, len(labels)):
            return None
        for j in range(len(labels)):
            d = _dim(value, j)
            if d == 0 or sizes.setdefault(labels[j], d) != d:
                return None
        if i == 1:  # w_ih
            if sizes["G"] % gates:
                return None
            sizes["H"] = sizes["G"] // gates
    if "S" not in sizes:
        sizes["S"] = sizes["H"]
    if sizes["S"] != sizes["H"] and not any(
            values[i] is not None and len(<tuple>layouts[i]) == 2 and layouts[i][0] == "S"
            for i in range(n)):
        return None
    cdef Py_ssize_t rows = sizes["T"] * sizes["B"], G = sizes["G"]
    if max(rows * sizes["D"], rows * G, rows * max(sizes["S"], sizes["H"]), G * sizes["D"],
           G * sizes["S"]) > blas_int_max:
        return None
    return sizes


def rnn_forward_plain(x, h0, w_ih, w_hh, b, nonlinearity, Py_ssize_t blas_int_max):
    """rnn_forward if every argument is admitted (see above), else None."""
    cdef Py_ssize_t sizes[4]  # T, B, D, H
    cdef int typenum = _plain_sizes(x, h0, w_ih, w_hh, blas_int_max, sizes)
    if typenum < 0 or not (b is None or _shaped(b, typenum, sizes[3])):
        return None
    return rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity)


def rnn_backward_plain(dh, x, h0, h, w_ih, w_hh, nonlinearity, Py_ssize_t blas_int_max):
    """rnn_backward if every argument is admitted (see above), else None."""
    cdef Py_ssize_t sizes[4]
    cdef int typenum = _plain_sizes(x, h0, w_ih, w_hh, blas_int_max, sizes)
    if typenum < 0:
        return None
    if not (_shaped(h, typenum, sizes[0], sizes[1], sizes[3])
            and _shaped(dh, typenum, sizes[0], sizes[1], sizes[3])):
        return None
    return rnn_backward(dh, x, h0, h, w_ih, w_hh, nonlinearity)


# ==============================================================================================
# GRU (G = 3, gates r, z, n, PyTorch's form): r = sig(W_ir x + b_ir + W_hr h + b_hr), z alike,
# n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h. On the engine above:
# the input projection of every step in one GEMM (Loop.gates, (T, B, 3H), helper thread
# projecting ahead as for Elman), one recurrent product a step for all 3H rows into its own
# (B, 3H) buffer (the n rows are needed apart, to be scaled by r), the pointwise part in
# simd_gru.h. b_ih and the r, z parts of b_hh are folded into one bias added in the pointwise
# part; b_hn stays inside r * (...). The training forward keeps the workspace (T, B, 4H): per
# row [r, z, n, W_hn h + b_hn]. Backward: the gradients written over it, per row
# [dr, dz, r dn, dn]: da_h = its first 3H columns [dr, dz, r dn] (for dw_hh, dh_prev, db_hh)
# and da_x = [dr, dz, dn] its columns 0..2H and 3H..4H (for dw_ih, dx, db_ih: the products
# split in two), so that the peak is the one workspace; a step's da_h also goes to a (B, 3H)
# buffer for the next step's product. The gradient into h[t-1] is z dh + da_h[t] @ w_hh.
# Where the panel product runs, the forward's panels are gate panels (simd_panel.h): a block of
# units holds its r, z, n columns, so that its product and pointwise step need no other block
# (gru_panel_forward), and a split forward (_split_share) shares a step's blocks between the
# two threads as the LSTM's; each unit's sum and pointwise arithmetic are the same whichever
# blocks a call covers, so the bits do not depend on the split.
# ==============================================================================================

cdef Cell _gru_cell() noexcept nogil:
    cdef Cell cell
    cell.code, cell.gates = CELL_GRU, 3
    return cell


cdef inline void _gru_pointwise_forward(const floating* g, const floating* gh,
                                        const floating* bx, const floating* bhn,
                                        const floating* h_prev, floating* out, floating* ws,
                                        Py_ssize_t rows, Py_ssize_t H) noexcept nogil:
    """out (rows, H) from the projection g and recurrent product gh (rows, 3H, no bias), the
    folded bias bx (3H) and b_hn (H) (NULL: none), h_prev (NULL: zeros); ws (rows, 4H) kept
    unless NULL."""
    if floating is float:
        rnnfast_simd.gru_forward_f32(g, gh, bx, bhn, h_prev, out, ws, rows, H)
    else:
        rnnfast_simd.gru_forward_f64(g, gh, bx, bhn, h_prev, out, ws, rows, H)


cdef inline void _gru_pointwise_backward(floating* d, floating* ws, const floating* h_prev,
                                         floating* da_h, Py_ssize_t rows,
                                         Py_ssize_t H) noexcept nogil:
    """From d = dL/dh' (rows, H), which becomes z d: ws's rows (rows, 4H) [r, z, n, a] become
    [dr, dz, r dn, dn], and da_h (rows, 3H) = [dr, dz, r dn]."""
    if floating is float:
        rnnfast_simd.gru_backward_f32(d, ws, h_prev, da_h, rows, H)
    else:
        rnnfast_simd.gru_backward_f64(d, ws, h_prev, da_h, rows, H)


cdef inline void _gru_blocks(floating* dummy, Loop* job, Py_ssize_t t, Py_ssize_t u0,
                             Py_ssize_t u1) noexcept nogil:
    """Step t's unit blocks u0 .. u1 - 1 on the gate panels (a u1 past the last: to the end):
    their product and pointwise step; training (job.gates_ld = 4H), the projection's rows
    become the workspace's in place."""
    cdef Py_ssize_t B = job.B, H = job.H, ld = job.gates_ld
    cdef floating* g_t = <floating*>job.gates + t * B * ld
    cdef floating* h_t = <floating*>job.out + t * B * H
    cdef const floating* h_prev = <const floating*>job.h0 if t == 0 else h_t - B * H
    cdef floating* ws = NULL if ld == job.N else g_t
    if floating is float:
        rnnfast_simd.gru_panel_forward_f32(g_t, ld, <const float*>job.bias,
                                           <const float*>job.bias_n, h_prev, h_t, ws, B, H,
                                           <const float*>job.how.packed, u0, u1)
    else:
        rnnfast_simd.gru_panel_forward_f64(g_t, ld, <const double*>job.bias,
                                           <const double*>job.bias_n, h_prev, h_t, ws, B, H,
                                           <const double*>job.how.packed, u0, u1)


cdef void _gru_forward_steps(floating* gates, floating* gh, floating* out, Loop* job,
                             const floating* h0_ptr, const floating* bx, const floating* bhn,
                             const floating* w_op, StepProduct* how) noexcept nogil:
    """The GRU forward's time loop (as _forward_steps: the helper projects chunks ahead if
    job.chunk > 0). Training (job.gates_ld = 4H): each row of the projection becomes the
    workspace row [r, z, n, W_hn h + b_hn] in place."""
    cdef Py_ssize_t T = job.T, B = job.B, H = job.H, N = job.N, t, b
    cdef Py_ssize_t ld = job.gates_ld, gstep = B * ld, hstep = B * H
    cdef bint keep = ld != N
    cdef Py_ssize_t ready
    cdef bint prefetch = job.chunk > 0 and (
        <Py_ssize_t>(gstep * sizeof(floating)) <= rf_tuning_now.prefetch_max_step_bytes)
    cdef floating* g_t
    cdef floating* h_t
    cdef const floating* h_prev
    cdef bint saved
    cdef rf_thread helper
    ready = _forward_prologue(gates, job, how, w_op, &helper, &saved)
    for t in range(T):
        g_t = gates + t * gstep
        h_t = out + t * hstep
        if t == ready:
            ready = _await_chunk(gates, job, t)
        h_prev = h0_ptr if t == 0 else h_t - hstep
        if prefetch and (t + 1 < ready or (t + 1 < T and rf_load(&job.progress) > t + 1)):
            rf_prefetch(g_t + gstep, gstep * sizeof(floating))
        if how.kind == STEP_GATE_PANEL:
            _gru_blocks(gates, job, t, 0, H)
            continue
        memset(gh, 0, B * N * sizeof(floating))
        if h_prev != NULL:
            _add_matmul(gh, h_prev, w_op, Trans, how, B, H, N)
        if not keep:
            _gru_pointwise_forward(g_t, gh, bx, bhn, h_prev, h_t, <floating*>NULL, B, H)
        else:  # row by row: a row's projection is read before its workspace is written
            for b in range(B):
                _gru_pointwise_forward(g_t + b * ld, gh + b * N, bx, bhn,
                                       NULL if h_prev == NULL else h_prev + b * H,
                                       h_t + b * H, g_t + b * ld, 1, H)
    if job.chunk > 0:
        rf_thread_join_or_cancel(&helper)  # as in _forward_steps
    _serial_blas_end(saved)


cdef void _gru_forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                       const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                       const floating[::1] bx, const floating[::1] bhn,
                       floating[:, :, ::1] h, floating[:, :, ::1] gates,
                       floating[:, ::1] gh, int kind,
                       const floating[:, ::1] w_hh_t, const floating[:, ::1] tail,
                       const floating[::1] packed, floating[::1] stage) noexcept:
    """``x`` and ``w_ih`` None: the gates' first 3H columns come filled with the projection."""
    cdef Py_ssize_t T = h.shape[0], B = h.shape[1], D = 0 if x is None else x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0]
    cdef Py_ssize_t H = w_hh.shape[1]
    cdef StepProduct how = _step_product(kind, tail, packed, stage)
    cdef const floating* w_op = &w_hh[0, 0] if w_hh_t is None else &w_hh_t[0, 0]
    cdef const floating* h0_ptr = NULL if h0 is None else &h0[0, 0]
    cdef const floating* bx_ptr = NULL if bx is None else &bx[0]
    cdef const floating* bhn_ptr = NULL if bhn is None else &bhn[0]
    cdef bint shared
    cdef Loop job
    if kind == STEP_SLICED:  # as in _forward
        how.source = &w_hh[0, 0]
    job.is_double, job.backward, job.split = floating is double, False, False
    job.T, job.B, job.D, job.H, job.N = T, B, D, H, N
    job.gates, job.out = &gates[0, 0, 0], &h[0, 0, 0]
    job.x = NULL if x is None else &x[0, 0, 0]
    job.w_ih = NULL if w_ih is None else &w_ih[0, 0]
    job.gates_ld = gates.shape[2]  # 4H: the training workspace, the projection in its rows
    job.how, job.bias, job.bias_n, job.cell, job.h0 = how, bx_ptr, bhn_ptr, _gru_cell(), h0_ptr
    with nogil:
        shared = _serial_blas_begin(rf_call_enter() > 1)  # as in _forward
        # (no x: the gates came filled, no projection for a helper to run ahead; nor a split,
        # which was slower than whole steps at CharRNN.fit's B=32 H=512)
        job.chunk = job.progress = (0 if job.x == NULL
                                    else _overlap_chunk(kind, T, B, D, H, N))
        job.block = _projection_block(&job, kind, sizeof(floating))
        if not _split_forward(&h[0, 0, 0], &job, kind):
            _gru_forward_steps(&gates[0, 0, 0], &gh[0, 0], &h[0, 0, 0], &job, h0_ptr, bx_ptr,
                               bhn_ptr, w_op, &how)
        _serial_blas_end(shared)
        rf_call_leave()


cdef void _gru_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                        const floating[:, ::1] h0, const floating[:, :, ::1] h,
                        floating[:, :, ::1] ws, const floating[:, ::1] w_ih,
                        const floating[:, ::1] w_hh, floating[:, ::1] da_step,
                        floating[:, ::1] carry,
                        floating[:, :, ::1] dx, floating[:, ::1] dh0,
                        floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                        floating[::1] db_hh, int kind, const floating[:, ::1] tail,
                        const floating[::1] packed, floating[::1] stage,
                        Py_ssize_t chunk) noexcept:
    """As _backward, for the GRU: the gradients written over the workspace ``ws`` (see the top
    of this section), ``da_step`` (B, 3H) a step's da_h for the next step's product, ``carry``
    (B, H) the gradient into the step's output, dh[t] + z dh_total[t+1] + da_h[t+1] @ w_hh.
    ``x``, ``w_ih``, ``dx`` and ``dw_ih`` None: as in _backward (ws left holding the input-side
    gate gradients)."""
    cdef Py_ssize_t T = dh.shape[0], B = dh.shape[1], D = 0 if x is None else x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0]
    cdef Py_ssize_t H = w_hh.shape[1]
    cdef Py_ssize_t hstep = B * H, wstep = B * 4 * H, t, i
    cdef StepProduct how = _step_product(kind, tail, packed, stage)
    cdef const floating* w_hh_ptr = &w_hh[0, 0]
    cdef floating* wsp = &ws[0, 0, 0]
    cdef floating* dah = &da_step[0, 0]
    cdef floating* d = &carry[0, 0]
    cdef const floating* dh_t
    cdef const floating* h0_ptr = NULL if h0 is None else &h0[0, 0]
    cdef bint saved, shared
    cdef Loop job
    cdef rf_thread helper
    job.is_double, job.backward, job.split = floating is double, True, False
    job.T, job.B, job.D, job.H, job.N, job.chunk, job.progress = T, B, D, H, N, chunk, 0
    job.claimed[0] = job.claimed[1] = job.done[0] = job.done[1] = 0
    job.h, job.da, job.cell = &h[0, 0, 0], wsp, _gru_cell()
    job.x = NULL if x is None else &x[0, 0, 0]
    job.da_hh, job.db_hh, job.h0 = wsp, &db_hh[0], h0_ptr
    job.da_ld, job.da_cut, job.da_rest = 4 * H, 2 * H, 3 * H
    job.dw_hh, job.db = &dw_hh[0, 0], &db_ih[0]
    job.dw_ih = NULL if dw_ih is None else &dw_ih[0, 0]
    with nogil:
        shared = _serial_blas_begin(rf_call_enter() > 1)  # as in _forward
        if chunk > 0:
            saved = _serial_blas_begin(True)
            _start_helper(&helper, &job)
        else:
            saved = _serial_blas_begin(kind == STEP_BLAS
                                       and B * N * H < rf_tuning_now.serial_step_max_macs)
        for t in range(T - 1, -1, -1):
            dh_t = &dh[t, 0, 0]
            if t == T - 1:
                memcpy(d, dh_t, hstep * sizeof(floating))
            else:  # d holds z dh_total[t+1]; da_step, da_h[t+1]
                for i in range(hstep):
                    d[i] += dh_t[i]
                _add_matmul(d, dah, w_hh_ptr, NoTrans, &how, B, N, H)
            _gru_pointwise_backward(d, wsp + t * wstep, h0_ptr if t == 0 else &h[t - 1, 0, 0],
                                    dah, B, H)
            if chunk > 0 and ((T - t) % chunk == 0 or t == 0):
                rf_publish(&job.progress, T - t)
        # dh0 = z dh_total[0] + da_h[0] @ w_hh, by the step product (its packed w_hh may live
        # in dx's memory, written below)
        memcpy(&dh0[0, 0], d, hstep * sizeof(floating))
        _add_matmul(&dh0[0, 0], dah, w_hh_ptr, NoTrans, &how, B, N, H)
        if chunk == 0:
            _serial_blas_end(saved)
            _grad_steps(wsp, &job, GRAD_IH, 0, T, True)
            _grad_steps(wsp, &job, GRAD_HH, 0, T, True)
            _bias_grad_steps(wsp, &job, 0, T, True)
        elif not helper.running:
            _helper_work(wsp, &job)
        # dx (T*B, D) = da_x (T*B, 3H) @ w_ih (3H, D), da_x's columns in two parts
        if dx is not None:
            _bulk_gemm(NoTrans, NoTrans, T * B, D, 2 * H, <floating>1, wsp, 4 * H, &w_ih[0, 0],
                       D, <floating>0, &dx[0, 0, 0], D)
            _bulk_gemm(NoTrans, NoTrans, T * B, D, H, <floating>1, wsp + 3 * H, 4 * H,
                       &w_ih[2 * H, 0], D, <floating>1, &dx[0, 0, 0], D)
        if chunk > 0:
            _finish_grads(wsp, &job)
            if helper.running:  # every chunk is done (_finish_grads); it may not have begun
                rf_thread_join_or_cancel(&helper)
            _serial_blas_end(saved)
        _serial_blas_end(shared)
        rf_call_leave()


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training):
    """Compiled GRU forward: (h (T, B, H), workspace (T, B, 4H) or None).

    x (T, B, D), h0 (B, H) or None (zeros), w_ih (3H, D), w_hh (3H, H), b_ih and b_hh (3H,)
    or both None; gates r, z, n. The workspace (``training``): per (t, b) row
    [r, z, n, W_hn h[t-1] + b_hn], for gru_backward; None when not training.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = x.dtype
    kind, w_hh_t, tail, packed, stage = step_operands(
        w_hh, B, True, gates=_gru_panel_gates(T, B, x.shape[2], H, dtype), fill=False)
    h = np.empty((T, B, H), dtype=dtype)
    # The input projection, in training written into the rows of the workspace (no second
    # (T, B, 3H) buffer)
    gates = np.empty((T, B, 4 * H if training else N), dtype=dtype)
    gh = np.empty((B, N), dtype=dtype)  # a step's recurrent product
    bx, bhn = _gru_biases(b_ih, b_hh, H)
    if dtype == np.float32:
        _gru_forward[float](x, h0, w_ih, w_hh, bx, bhn, h, gates, gh, kind, w_hh_t, tail,
                            packed, stage)
    else:
        _gru_forward[double](x, h0, w_ih, w_hh, bx, bhn, h, gates, gh, kind, w_hh_t, tail,
                             packed, stage)
    return h, (gates if training else None)


cdef Py_ssize_t _gru_panel_gates(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                                 dtype):
    """step_operands' ``gates`` for a GRU forward: 3 (gate panels) where its steps split, else
    1 (plain panels: on one thread 5-10% faster, as their pointwise step runs over whole rows;
    the same bits either way)."""
    return 3 if split_panels(T, B, D, H, dtype.itemsize, 3) else 1


def _gru_biases(b_ih, b_hh, Py_ssize_t H):
    """(bx, bhn): b_ih with b_hh's r and z rows added (3H,), and b_hh's n rows (H,), which
    stay inside the reset's product; both None without biases."""
    if b_ih is None:
        return None, None
    bx = b_ih.copy()
    bx[:2 * H] += b_hh[:2 * H]
    return bx, np.ascontiguousarray(b_hh[2 * H:])


def gru_backward(dh, x, h0, h, workspace, w_ih, w_hh, b_hh):
    """Compiled GRU BPTT: (dx, dh0, dw_ih, dw_hh, db_ih, db_hh), db_* None when b_hh is None.

    dh (T, B, H) the gradient from outside into every h[t]; workspace from gru_forward
    (training=True), whose memory the gate gradients are written over (a second backward
    needs the forward's workspace again).
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = x.dtype
    da_step = np.empty((B, N), dtype=dtype)
    carry = np.empty((B, H), dtype=dtype)
    dx = np.empty((T, B, D), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    dw_ih = np.empty((N, D), dtype=dtype)
    dw_hh = np.empty((N, H), dtype=dtype)
    db_ih = np.empty(N, dtype=dtype)
    db_hh = np.empty(N, dtype=dtype)
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, H, N, dtype.itemsize), T, B, D, H, N)
    kind, _, tail, packed, stage = step_operands(w_hh, B, False,
                                                 (dx,) if chunk else (dx, dw_ih, dw_hh))
    if dtype == np.float32:
        _gru_backward[float](dh, x, h0, h, workspace, w_ih, w_hh, da_step, carry, dx, dh0,
                             dw_ih, dw_hh, db_ih, db_hh, kind, tail, packed, stage, chunk)
    else:
        _gru_backward[double](dh, x, h0, h, workspace, w_ih, w_hh, da_step, carry, dx, dh0,
                              dw_ih, dw_hh, db_ih, db_hh, kind, tail, packed, stage, chunk)
    if b_hh is None:
        return dx, dh0, dw_ih, dw_hh, None, None
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


def gru_overlap_steps(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                      Py_ssize_t itemsize):
    """Steps per hand-over to a helper thread in a GRU call of these sizes (0: no helper)."""
    return _overlap_chunk(_step_kind(B, H, 3 * H, itemsize), T, B, D, H, 3 * H)


# ---- GRU streaming step ----------------------------------------------------------------------

cdef void _gru_step_layer(floating* out, floating* scratch, const floating* inp,
                          const floating* h_prev, const floating* w_ih, const floating* w_hh,
                          const floating* b_ih, const floating* b_hh, Py_ssize_t B,
                          Py_ssize_t D, Py_ssize_t H) noexcept nogil:
    """out (B, H): one GRU layer's step; the biases ride on the two products (the pointwise
    part then takes no bias), scratch (2, B, 3H) holds them."""
    cdef Py_ssize_t N = 3 * H
    cdef SplitStep split
    if B == 1 and B <= rf_tuning_now.step_dot_max_batch:  # the two products' rows shared
        _set_part(&split.part[0], scratch, inp, w_ih, D, NULL, NULL, 0, b_ih)
        _set_part(&split.part[1], scratch + N, h_prev, w_hh, H, NULL, NULL, 0, b_hh)
        split.parts, split.itemsize, split.n = 2, sizeof(floating), N
        _split_products(&split)
    else:
        _dot_product(scratch, inp, w_ih, b_ih, B, D, N)
        _dot_product(scratch + B * N, h_prev, w_hh, b_hh, B, H, N)
    _gru_pointwise_forward(scratch, scratch + B * N, <const floating*>NULL,
                           <const floating*>NULL, h_prev, out, <floating*>NULL, B, H)


def gru_step(x, h, tuple params):
    """One GRU step of a stack of layers: (output (B, H), a copy of h_new[-1]; h_new (L, B, H)),
    or None (an operand is not exactly right: the caller validates and retries).

    x (B, D); h (L, B, H) or None for zeros; params: per layer (w_ih, w_hh, b_ih, b_hh), both
    biases None for none.
    """
    return _stack_call(_gru_cell(), x, h, None, params)


def gated_step(x, states, tuple params):
    """One step of a stack of LSTM (``states`` the tuple (h, c)) or GRU layers (``states``
    (h,)), as lstm_step and gru_step: (output, the new states as a tuple like ``states``), or
    None. The layers' step in one C call: the states as they carry them, no repacking."""
    if type(states) is not tuple:
        return None
    if len(<tuple>states) == 2:
        return _stack_call(_lstm_cell(), x, (<tuple>states)[0], (<tuple>states)[1], params, True)
    if len(<tuple>states) == 1:
        return _stack_call(_gru_cell(), x, (<tuple>states)[0], None, params, True)
    return None


# ---- gathered input projection (a first layer fed token ids) ---------------------------------
# A layer whose input is a row of a table per token id (one-hot: the identity; an embedding:
# its rows) projects it by gathering rows of ``table`` = rows @ w_ih.T (V, G*H) into the gates,
# instead of a (T*B, D) x (D, G*H) GEMM, and runs the time loops above with no x (they then
# skip the projection, dx and dw_ih). The gradient of the table is a scatter-add of the gate
# gradients by id (dw_ih = d_table.T for one-hot input): no (T*B)-row GEMM at all.
# ``kept``: None, or a dict of arrays kept across calls of the same cell, sizes and dtype (the
# caller, rnnfast.functional, guarantees that), so that a training loop allocates nothing per
# step: fresh pages of a large array cost a page fault each, about as much as the step's
# arithmetic at H = 128 (bench/train_phases.py: sys time and faults).

cdef object _kept(dict kept, str name, tuple shape, dtype, bint zero=False):
    """An array of that shape and dtype: ``kept[name]`` (made on first use) or a new one."""
    a = None if kept is None else kept.get(name)
    if a is None:
        a = np.zeros(shape, dtype=dtype) if zero else np.empty(shape, dtype=dtype)
        if kept is not None:
            kept[name] = a
    elif zero:
        a.fill(0)
    return a


cdef tuple _kept_operands(dict kept, str name, w_hh, Py_ssize_t B, bint transposed,
                          tuple scratch=()):
    """step_operands, its packed panels placed in the memory kept under ``name`` (that of
    the first call's)."""
    room = None if kept is None else kept.get(name)
    operands = step_operands(w_hh, B, transposed, scratch if room is None else (room,),
                             fill=False)  # a sliced copy: the forward loop makes it
    packed = operands[3]
    if kept is not None and room is None and packed is not None and packed.base is not None:
        if not any(packed.base is a for a in scratch):
            kept[name] = packed.base
    return operands


cdef void _gather_rows(floating* out, Py_ssize_t ld, const floating[:, ::1] table,
                       const cnp.int64_t[::1] ids) noexcept nogil:
    """Row r of out (rows ld apart) = table[ids[r]]."""
    cdef Py_ssize_t r, N = table.shape[1]
    for r in range(ids.shape[0]):
        memcpy(out + r * ld, &table[ids[r], 0], N * sizeof(floating))


cdef void _scatter_rows(floating[:, ::1] out, const floating* da, Py_ssize_t ld,
                        const cnp.int64_t[::1] ids, Py_ssize_t cut, Py_ssize_t rest) noexcept nogil:
    """out (V, N) = the sum of the rows of da (ld apart) by id, in row order; a row's columns
    cut.. N-1 start at da's column ``rest`` (the GRU's workspace layout; else cut = N)."""
    cdef Py_ssize_t r, j, N = out.shape[1]
    cdef floating* o
    cdef const floating* d
    memset(&out[0, 0], 0, out.shape[0] * N * sizeof(floating))
    for r in range(ids.shape[0]):
        o = &out[ids[r], 0]
        d = da + r * ld
        for j in range(cut):
            o[j] += d[j]
        d += rest - cut
        for j in range(cut, N):
            o[j] += d[j]


def rnn_forward_gathered(ids, table, h0, w_hh, b, nonlinearity, dict kept=None):
    """rnn_forward of the input whose projection x[t, b] @ w_ih.T is table[ids[t, b]]: h.

    ids (T, B) int64 in [0, V); table (V, H); the rest as rnn_forward.
    """
    cdef Cell cell = _elman_cell(nonlinearity)
    cdef Py_ssize_t T = ids.shape[0], B = ids.shape[1], H = w_hh.shape[1]
    kind, w_hh_t, tail, packed, stage = _kept_operands(kept, "room_f", w_hh, B, True)
    h = _kept(kept, "h", (T, B, H), table.dtype)  # the gates, then h in place
    if table.dtype == np.float32:
        _gather_rows[float](<float*>cnp.PyArray_DATA(h), H, table, ids.reshape(-1))
        _forward[float](None, h0, None, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage)
    else:
        _gather_rows[double](<double*>cnp.PyArray_DATA(h), H, table, ids.reshape(-1))
        _forward[double](None, h0, None, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage)
    return h


def rnn_backward_gathered(dh, ids, h0, h, w_hh, nonlinearity, Py_ssize_t V, dict kept=None):
    """rnn_backward after rnn_forward_gathered: (d_table (V, H), dh0, dw_hh, db)."""
    cdef Cell cell = _elman_cell(nonlinearity)
    cdef Py_ssize_t T = ids.shape[0], B = ids.shape[1], N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = dh.dtype
    da = _kept(kept, "da", (T, B, N), dtype)
    dh0 = _kept(kept, "dh0", (B, H), dtype)
    dw_hh = _kept(kept, "dw_hh", (N, H), dtype)
    db = _kept(kept, "db", (N,), dtype)
    d_table = _kept(kept, "d_table", (V, N), dtype)  # written after the loop: scratch until then
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, H, N, dtype.itemsize), T, B, 0, H, N)
    kind, _, tail, packed, stage = _kept_operands(kept, "room_b", w_hh, B, False,
                                                  (d_table,) if chunk else (d_table, dw_hh))
    if dtype == np.float32:
        _backward[float](dh, None, h0, h, None, w_hh, da, None, dh0, None, dw_hh, db,
                         cell, kind, tail, packed, stage, chunk)
        _scatter_rows[float](d_table, <float*>cnp.PyArray_DATA(da), N, ids.reshape(-1), N, N)
    else:
        _backward[double](dh, None, h0, h, None, w_hh, da, None, dh0, None, dw_hh, db,
                          cell, kind, tail, packed, stage, chunk)
        _scatter_rows[double](d_table, <double*>cnp.PyArray_DATA(da), N, ids.reshape(-1), N, N)
    return d_table, dh0, dw_hh, db


def lstm_forward_gathered(ids, table, h0, c0, w_hh, b, training, dict kept=None):
    """lstm_forward (no projection) of the input whose projection is table[ids]: (h, c,
    gates or None), as lstm_forward. table (V, 4H)."""
    cdef Cell cell = _lstm_cell()
    cdef Py_ssize_t T = ids.shape[0], B = ids.shape[1], N = w_hh.shape[0], H = w_hh.shape[1]
    kind, w_hh_t, tail, packed, stage = _kept_operands(kept, "room_f", w_hh, B, True)
    gates = _kept(kept, "gates", (T, B, N), table.dtype)
    h = _kept(kept, "h", (T, B, H), table.dtype)
    c = _kept(kept, "c", (T, B, H), table.dtype)
    if table.dtype == np.float32:
        _gather_rows[float](<float*>cnp.PyArray_DATA(gates), N, table, ids.reshape(-1))
        _forward[float](None, h0, None, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage,
                        gates, c0, c)
    else:
        _gather_rows[double](<double*>cnp.PyArray_DATA(gates), N, table, ids.reshape(-1))
        _forward[double](None, h0, None, w_hh, b, h, cell, kind, w_hh_t, tail, packed, stage,
                         gates, c0, c)
    return h, c, (gates if training else None)


def lstm_backward_gathered(dh, dc, ids, h0, c0, h, c, gates, w_hh, Py_ssize_t V,
                           dict kept=None):
    """lstm_backward after lstm_forward_gathered: (d_table (V, 4H), dh0, dc0, dw_hh, db).
    ``gates`` is used up as in lstm_backward."""
    cdef Cell cell = _lstm_cell()
    cdef Py_ssize_t T = ids.shape[0], B = ids.shape[1], N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = dh.dtype
    dh0 = _kept(kept, "dh0", (B, H), dtype)
    dc0 = _kept(kept, "dc0", (B, H), dtype, True)  # the carry of dc, from zero at the last step
    dh_t = _kept(kept, "dh_t", (B, H), dtype)
    dw_hh = _kept(kept, "dw_hh", (N, H), dtype)
    db = _kept(kept, "db", (N,), dtype)
    d_table = _kept(kept, "d_table", (V, N), dtype)
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, H, N, dtype.itemsize), T, B, 0, H, N)
    kind, _, tail, packed, stage = _kept_operands(kept, "room_b", w_hh, B, False,
                                                  (d_table,) if chunk else (d_table, dw_hh))
    if dtype == np.float32:
        _backward[float](dh, None, h0, h, None, w_hh, gates, None, dh0, None, dw_hh, db,
                         cell, kind, tail, packed, stage, chunk, dc, c0, c, gates, dc0, dh_t)
        _scatter_rows[float](d_table, <float*>cnp.PyArray_DATA(gates), N, ids.reshape(-1), N, N)
    else:
        _backward[double](dh, None, h0, h, None, w_hh, gates, None, dh0, None, dw_hh, db,
                          cell, kind, tail, packed, stage, chunk, dc, c0, c, gates, dc0, dh_t)
        _scatter_rows[double](d_table, <double*>cnp.PyArray_DATA(gates), N, ids.reshape(-1), N, N)
    return d_table, dh0, dc0, dw_hh, db


def gru_forward_gathered(ids, table, h0, w_hh, b_ih, b_hh, training, dict kept=None):
    """gru_forward of the input whose projection is table[ids] (no bias in it): (h, workspace
    or None), as gru_forward. table (V, 3H)."""
    cdef Py_ssize_t T = ids.shape[0], B = ids.shape[1], N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = table.dtype
    kind, w_hh_t, tail, packed, stage = _kept_operands(kept, "room_f", w_hh, B, True)
    h = _kept(kept, "h", (T, B, H), dtype)
    gates = _kept(kept, "gates" if training else "gates_inference",
                  (T, B, 4 * H if training else N), dtype)
    gh = _kept(kept, "gh", (B, N), dtype)
    bx, bhn = _gru_biases(b_ih, b_hh, H)
    if dtype == np.float32:
        _gather_rows[float](<float*>cnp.PyArray_DATA(gates), gates.shape[2], table,
                            ids.reshape(-1))
        _gru_forward[float](None, h0, None, w_hh, bx, bhn, h, gates, gh, kind, w_hh_t, tail,
                            packed, stage)
    else:
        _gather_rows[double](<double*>cnp.PyArray_DATA(gates), gates.shape[2], table,
                             ids.reshape(-1))
        _gru_forward[double](None, h0, None, w_hh, bx, bhn, h, gates, gh, kind, w_hh_t, tail,
                             packed, stage)
    return h, (gates if training else None)


def gru_backward_gathered(dh, ids, h0, h, workspace, w_hh, b_hh, Py_ssize_t V,
                          dict kept=None):
    """gru_backward after gru_forward_gathered: (d_table (V, 3H), dh0, dw_hh, db_ih, db_hh),
    the biases' None when b_hh is None. The workspace is written over, as by gru_backward."""
    cdef Py_ssize_t T = ids.shape[0], B = ids.shape[1], N = w_hh.shape[0], H = w_hh.shape[1]
    dtype = dh.dtype
    da_step = _kept(kept, "da_step", (B, N), dtype)
    carry = _kept(kept, "carry", (B, H), dtype)
    dh0 = _kept(kept, "dh0", (B, H), dtype)
    dw_hh = _kept(kept, "dw_hh", (N, H), dtype)
    db_ih = _kept(kept, "db_ih", (N,), dtype)
    db_hh = _kept(kept, "db_hh", (N,), dtype)
    d_table = _kept(kept, "d_table", (V, N), dtype)
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, H, N, dtype.itemsize), T, B, 0, H, N)
    kind, _, tail, packed, stage = _kept_operands(kept, "room_b", w_hh, B, False,
                                                  (d_table,) if chunk else (d_table, dw_hh))
    if dtype == np.float32:
        _gru_backward[float](dh, None, h0, h, workspace, None, w_hh, da_step, carry, None,
                             dh0, None, dw_hh, db_ih, db_hh, kind, tail, packed, stage, chunk)
        _scatter_rows[float](d_table, <float*>cnp.PyArray_DATA(workspace), 4 * H,
                             ids.reshape(-1), 2 * H, 3 * H)
    else:
        _gru_backward[double](dh, None, h0, h, workspace, None, w_hh, da_step, carry, None,
                              dh0, None, dw_hh, db_ih, db_hh, kind, tail, packed, stage, chunk)
        _scatter_rows[double](d_table, <double*>cnp.PyArray_DATA(workspace), 4 * H,
                              ids.reshape(-1), 2 * H, 3 * H)
    if b_hh is None:
        return d_table, dh0, dw_hh, None, None
    return d_table, dh0, dw_hh, db_ih, db_hh


# ---- the decoder and its softmax cross-entropy (a language model's training step) -------------
# One call: logits = weight @ x.T, transposed (V, N), so that the softmax's reductions over the
# classes run along the examples (decoder.h); turned in place into the gradient of the mean
# cross-entropy, then dx = d_logits.T @ weight, dweight = d_logits @ x, dbias its row sums. The
# work is column chunks of the logits, fixed by the sizes alone (so the same bits on any
# thread count), each independent of the others: its logits, softmax and gradient, its rows
# of dx, and its own terms of dweight and dbias (chunk 0's written in place, the others' in
# scratch, added in chunk order at the end). With a helper thread (as the time loops'), the
# two threads claim chunks in turn; the caller never waits for the helper but at the end, for
# a chunk it has claimed (the wait that marks a helper late, threads.h), and a helper not yet
# begun leaves every chunk to the caller.

from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

cdef extern from "decoder.h" nogil:
    double rf_softmax_xent_f32(float* z, Py_ssize_t ld, Py_ssize_t V, Py_ssize_t n,
                               const float* bias, const int64_t* targets, float scale)
    double rf_softmax_xent_f64(double* z, Py_ssize_t ld, Py_ssize_t V, Py_ssize_t n,
                               const double* bias, const int64_t* targets, double scale)
    void rf_row_sums_f32(float* out, const float* a, Py_ssize_t rows, Py_ssize_t n,
                         Py_ssize_t ld)
    void rf_row_sums_f64(double* out, const double* a, Py_ssize_t rows, Py_ssize_t n,
                         Py_ssize_t ld)

cdef enum:
    DECODER_MAX_CHUNKS = 16
    DECODER_CHUNK_COLUMNS = 96  # about this many columns a chunk (a multiple of 16)


cdef struct Decoder:
    bint is_double
    Py_ssize_t N, V, H
    Py_ssize_t chunks, chunk_cols
    const void* x
    const void* w
    const void* bias
    const int64_t* targets
    void* z
    void* dx
    void* dw
    void* db
    void* partial  # chunks 1 ..: dweight's terms (V, H) then dbias's (V), one after the other
    double losses[DECODER_MAX_CHUNKS]  # each chunk's sum of cross-entropies
    char _pad0[64]
    Py_ssize_t claimed  # the next chunk to claim
    char _pad1[64]


cdef void _decoder_chunk(floating* dummy, Decoder* job, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t N = job.N, V = job.V, H = job.H
    cdef Py_ssize_t n0 = k * job.chunk_cols
    cdef Py_ssize_t n = min(N, n0 + job.chunk_cols) - n0
    cdef floating* z = <floating*>job.z + n0
    cdef const floating* x = <const floating*>job.x + n0 * H
    cdef const floating* w = <const floating*>job.w
    cdef floating* dw = <floating*>job.dw
    cdef floating* db = <floating*>job.db
    if k > 0:
        dw = <floating*>job.partial + (k - 1) * (V * H + V)
        db = NULL if job.db == NULL else dw + V * H
    gemm(NoTrans, Trans, V, n, H, <floating>1, w, H, x, H, <floating>0, z, N)
    if floating is float:
        job.losses[k] = rf_softmax_xent_f32(z, N, V, n, <const float*>job.bias, job.targets + n0,
                                            <float>(1.0 / N))
    else:
        job.losses[k] = rf_softmax_xent_f64(z, N, V, n, <const double*>job.bias,
                                            job.targets + n0, 1.0 / N)
    gemm(Trans, NoTrans, n, H, V, <floating>1, z, N, w, H, <floating>0,
         <floating*>job.dx + n0 * H, H)
    gemm(NoTrans, NoTrans, V, H, n, <floating>1, z, N, x, H, <floating>0, dw, H)
    if db != NULL:
        if floating is float:
            rf_row_sums_f32(db, z, V, n, N)
        else:
            rf_row_sums_f64(db, z, V, n, N)


cdef void _decoder_work(floating* dummy, Decoder* job, bint helper) noexcept nogil:
    """Claim and run chunks until none is left. The helper steps aside at a chunk boundary once
    another call is in flight (its caller runs what it leaves)."""
    cdef Py_ssize_t k
    while True:
        k = rf_load(&job.claimed)
        if k >= job.chunks:
            return
        if helper and rf_crowded():
            rf_count(&rf_helpers_stepped_aside)
            return
        if rf_claim(&job.claimed, k):
            _decoder_chunk(dummy, job, k)


cdef void* _decoder_main(void* arg) noexcept nogil:
    cdef Decoder* job = <Decoder*>arg
    if job.is_double:
        _decoder_work[double](NULL, job, True)
    else:
        _decoder_work[float](NULL, job, True)
    return NULL


cdef void _decoder_sum(floating* dummy, Decoder* job) noexcept nogil:
    """dweight and dbias += the terms of chunks 1 .., in chunk order."""
    cdef Py_ssize_t k, i, V = job.V, n = job.V * job.H
    cdef floating* dw = <floating*>job.dw
    cdef floating* db = <floating*>job.db
    cdef const floating* part
    for k in range(1, job.chunks):
        part = <const floating*>job.partial + (k - 1) * (n + V)
        for i in range(n):
            dw[i] += part[i]
        if db != NULL:
            for i in range(V):
                db[i] += part[n + i]


def linear_cross_entropy(x, weight, bias, targets, z, dx, dweight, dbias):
    """The mean softmax cross-entropy of the logits x @ weight.T + bias (N, V) against
    ``targets`` (N,) int64, and its gradients, written into z (V, N) (the logits' gradient,
    transposed), dx (N, H), dweight (V, H) and dbias (V,) (None with no bias). x (N, H),
    weight (V, H), bias (V,) or None. Returns the loss."""
    cdef Decoder job
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], V = weight.shape[0], k
    cdef size_t itemsize = x.dtype.itemsize
    cdef double loss = 0
    cdef bint saved
    cdef rf_thread helper
    job.is_double = itemsize == 8
    job.N, job.V, job.H = N, V, H
    job.chunks = min(<Py_ssize_t>DECODER_MAX_CHUNKS, max(1, N // DECODER_CHUNK_COLUMNS))
    job.chunk_cols = ((N + job.chunks - 1) // job.chunks + 15) // 16 * 16
    job.chunks = (N + job.chunk_cols - 1) // job.chunk_cols
    job.x, job.w = cnp.PyArray_DATA(x), cnp.PyArray_DATA(weight)
    job.bias = NULL if bias is None else cnp.PyArray_DATA(bias)
    job.targets = <const int64_t*>cnp.PyArray_DATA(targets)
    job.z, job.dx, job.dw = cnp.PyArray_DATA(z), cnp.PyArray_DATA(dx), cnp.PyArray_DATA(dweight)
    job.db = NULL if dbias is None else cnp.PyArray_DATA(dbias)
    job.claimed = 0
    # (malloc: after its first free the allocator hands the same memory back, no fresh pages)
    job.partial = NULL
    if job.chunks > 1:
        job.partial = malloc((job.chunks - 1) * (V * H + V) * itemsize)
        if job.partial == NULL:
            raise MemoryError("linear_cross_entropy: no memory for the chunks' terms")
    with nogil:
        rf_call_enter()  # a second call in flight: no helper (rf_thread_start)
        saved = _serial_blas_begin(True)  # the chunks run BLAS on one thread each
        helper.running = False
        if job.chunks > 1 and _helper_available() and (
                3 * N * V * H >= rf_tuning_now.overlap_min_macs):
            rf_thread_start(&helper, _decoder_main, &job)
        if job.is_double:
            _decoder_work[double](NULL, &job, False)
        else:
            _decoder_work[float](NULL, &job, False)
        rf_thread_join_or_cancel(&helper)  # every chunk is done; the helper may not have begun
        if job.is_double:
            _decoder_sum[double](NULL, &job)
        else:
            _decoder_sum[float](NULL, &job)
        _serial_blas_end(saved)
        rf_call_leave()
    free(job.partial)
    for k in range(job.chunks):
        loss += job.losses[k]
    return loss / N


# ---- the optimizers' update over a flat buffer -----------------------------------------------

cdef extern from "optim.h" nogil:
    void rf_adam_f32(float* p, const float* g, float* m, float* v, Py_ssize_t n, float b1,
                     float c1, float b2, float c2, float d, float eps, float s)
    void rf_adam_f64(double* p, const double* g, double* m, double* v, Py_ssize_t n, double b1,
                     double c1, double b2, double c2, double d, double eps, double s)


def adam_update(p, g, m, v, double b1, double c1, double b2, double c2, double d, double eps,
                double s):
    """Adam's update of p from g, its moments m and v updated in place (1-D arrays of one
    dtype and length); the constants as rnnfast._reference.adam_update takes them, each
    already a value of that dtype."""
    cdef Py_ssize_t n = p.shape[0]
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef const void* gp = cnp.PyArray_DATA(g)
    cdef void* mp = cnp.PyArray_DATA(m)
    cdef void* vp = cnp.PyArray_DATA(v)
    if p.dtype == np.float32:
        with nogil:
            rf_adam_f32(<float*>pp, <const float*>gp, <float*>mp, <float*>vp, n, <float>b1,
                        <float>c1, <float>b2, <float>c2, <float>d, <float>eps, <float>s)
    else:
        with nogil:
            rf_adam_f64(<double*>pp, <const double*>gp, <double*>mp, <double*>vp, n, b1, c1,
                        b2, c2, d, eps, s)
