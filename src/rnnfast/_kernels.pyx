"""Compiled forward pass and backpropagation through time of the Elman RNN.

The only caller is rnnfast.functional, which hands over C-contiguous arrays of one float dtype,
with every size > 0 and every shape checked against the others: these loops run without bounds
checks. The signatures are those of rnnfast._reference, the NumPy oracle.

Layout (time-major, PyTorch's weight shapes):
  x (T, B, D), h0 (B, H) or None, w_ih (H, D), w_hh (H, H), b (H,) or None, h / dh (T, B, H).

Forward: one GEMM projects all T*B input rows before the loop; the loop adds h[t-1] @ w_hh.T
and applies bias + activation in one pass, writing straight into the output.
Backward: only the recursion da[t] = (dh[t] + da[t+1] @ w_hh) * act'(h[t]) is sequential;
dw_ih, dw_hh, dx are one GEMM each over all steps after it, and db one reduction.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

import numpy as np

from rnnfast._blas cimport BLAS_Trans, NoTrans, Trans, gemm

cdef extern from "_fastmath.h" nogil:
    double rnnfast_tanh(double x)
    float rnnfast_tanhf(float x)

cdef enum:
    TANH = 0
    RELU = 1

# Per-step recurrent products with fewer multiply-adds than this (B * H * H) use a
# hand-written loop: there a BLAS call's fixed cost outweighs its arithmetic.
# Measured with both paths forced (_set_tuning) on T=100 forward+backward: the axpy loop won
# only at B*H*H = 256 (float32 0.75x of BLAS time) and lost from 1024 up.
SMALL_STEP_MAX_MACS = 512

# Steps with at least this many hidden units (B * H) split the bias + activation pass over
# OpenMP threads; below it, waking threads costs more than the tanh evaluations.
PARALLEL_MIN_ELEMENTS = 32768

cdef Py_ssize_t _small_step_max_macs = SMALL_STEP_MAX_MACS
cdef Py_ssize_t _parallel_min_elements = PARALLEL_MIN_ELEMENTS


cdef int _activation_code(str nonlinearity) except -1:
    if nonlinearity == "tanh":
        return TANH
    if nonlinearity == "relu":
        return RELU
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return rnnfast_tanhf(v)
    else:
        return rnnfast_tanh(v)


cdef inline void _add_matmul(floating* out, const floating* a, const floating* w,
                             BLAS_Trans trans_w, const floating* w_in_out,
                             Py_ssize_t rows, Py_ssize_t h, bint use_blas) noexcept nogil:
    """out (rows, h) += a (rows, h) @ op(w), op(w) being (h, h).

    The loop form needs op(w) laid out row-major as (in, out) = ``w_in_out``; its inner loop is
    an axpy over contiguous memory, which the compiler vectorizes.
    """
    cdef Py_ssize_t r, j, i
    cdef floating v
    cdef floating* o
    cdef const floating* w_row
    if use_blas:
        gemm(NoTrans, trans_w, rows, h, h, <floating>1, a, h, w, h, <floating>1, out, h)
        return
    for r in range(rows):
        o = out + r * h
        for j in range(h):
            v = a[r * h + j]
            w_row = w_in_out + j * h
            for i in range(h):
                o[i] += v * w_row[i]


cdef inline void _bias_act_rows(floating* a, const floating* b, Py_ssize_t rows, Py_ssize_t h,
                                int act) noexcept nogil:
    """a = act(a + b) for ``rows`` rows of ``h``; one plain loop per activation, vectorized."""
    cdef Py_ssize_t r, i
    cdef floating v
    cdef floating* row
    for r in range(rows):
        row = a + r * h
        if act == TANH:
            for i in range(h):
                row[i] = _tanh(row[i] + b[i])
        else:
            for i in range(h):
                v = row[i] + b[i]
                # `v <= 0` is False for NaN, so NaN propagates as in np.maximum.
                row[i] = 0 if v <= 0 else v


cdef void _bias_act(floating* a, const floating* b, Py_ssize_t rows, Py_ssize_t h,
                    int act) noexcept nogil:
    """a = act(a + b) in place; large steps spread rows over OpenMP threads."""
    cdef Py_ssize_t r
    if rows > 1 and rows * h >= _parallel_min_elements:
        for r in prange(rows, schedule="static"):
            _bias_act_rows(a + r * h, b, 1, h, act)
    else:
        _bias_act_rows(a, b, rows, h, act)


cdef inline void _mul_act_grad(floating* g, const floating* h, Py_ssize_t n,
                               int act) noexcept nogil:
    """g *= act'(pre-activation), written in terms of the output h = act(pre-activation)."""
    cdef Py_ssize_t i
    if act == TANH:
        for i in range(n):
            g[i] = g[i] * (1 - h[i] * h[i])
    else:
        for i in range(n):
            # An inactive unit passes no gradient, not even an infinite one (as PyTorch).
            if not h[i] > 0:
                g[i] = 0


cdef void _forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                   const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                   const floating[::1] b, floating[:, :, ::1] h,
                   const floating[:, ::1] w_hh_t, int act, bint use_blas) noexcept:
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_ih.shape[0]
    cdef Py_ssize_t step = B * H, t
    cdef const floating* h0_ptr = NULL if h0 is None else &h0[0, 0]
    cdef const floating* b_ptr = &b[0]
    cdef const floating* wt_ptr = NULL if w_hh_t is None else &w_hh_t[0, 0]
    cdef floating* out = &h[0, 0, 0]
    cdef floating* h_t
    cdef const floating* h_prev
    with nogil:
        # The input projection of every step at once: h (T*B, H) = x (T*B, D) @ w_ih.T.
        gemm(NoTrans, Trans, T * B, H, D, <floating>1, &x[0, 0, 0], D, &w_ih[0, 0], D,
             <floating>0, out, H)
        for t in range(T):
            h_t = out + t * step
            h_prev = h0_ptr if t == 0 else h_t - step
            if h_prev != NULL:  # a None h0 is zeros: nothing to add at t = 0
                _add_matmul(h_t, h_prev, &w_hh[0, 0], Trans, wt_ptr, B, H, use_blas)
            _bias_act(h_t, b_ptr, B, H, act)


cdef void _backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                    const floating[:, ::1] h0, const floating[:, :, ::1] h,
                    const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                    floating[:, :, ::1] da, floating[:, :, ::1] dx, floating[:, ::1] dh0,
                    floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
                    int act, bint use_blas) noexcept:
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_ih.shape[0]
    cdef Py_ssize_t step = B * H, t, r, i
    cdef const floating* h0_ptr = NULL if h0 is None else &h0[0, 0]
    cdef const floating* w_hh_ptr = &w_hh[0, 0]
    cdef floating* da_ptr = &da[0, 0, 0]
    cdef floating* da_t
    cdef floating* db_ptr = &db[0]
    with nogil:
        # The sequential part: da[t] = (dh[t] + da[t+1] @ w_hh) * act'(h[t]).
        for t in range(T - 1, -1, -1):
            da_t = da_ptr + t * step
            memcpy(da_t, &dh[t, 0, 0], step * sizeof(floating))
            if t < T - 1:
                # w_hh is already op(w_hh) = w_hh laid out (in, out) for the loop form.
                _add_matmul(da_t, da_t + step, w_hh_ptr, NoTrans, w_hh_ptr, B, H, use_blas)
            _mul_act_grad(da_t, &h[t, 0, 0], step, act)

        # Everything else is one GEMM over all steps. Rows of da are (t, b) pairs.
        # dh0 (B, H) = da[0] @ w_hh
        gemm(NoTrans, NoTrans, B, H, H, <floating>1, da_ptr, H, w_hh_ptr, H,
             <floating>0, &dh0[0, 0], H)
        # dw_ih (H, D) = da^T (H, T*B) @ x (T*B, D)
        gemm(Trans, NoTrans, H, D, T * B, <floating>1, da_ptr, H, &x[0, 0, 0], D,
             <floating>0, &dw_ih[0, 0], D)
        # dw_hh (H, H) = da[1:]^T @ h[:-1]  (+ da[0]^T @ h0; a None h0 contributes nothing)
        gemm(Trans, NoTrans, H, H, (T - 1) * B, <floating>1, da_ptr + step, H, &h[0, 0, 0], H,
             <floating>0, &dw_hh[0, 0], H)
        if h0_ptr != NULL:
            gemm(Trans, NoTrans, H, H, B, <floating>1, da_ptr, H, h0_ptr, H,
                 <floating>1, &dw_hh[0, 0], H)
        # dx (T*B, D) = da (T*B, H) @ w_ih (H, D)
        gemm(NoTrans, NoTrans, T * B, D, H, <floating>1, da_ptr, H, &w_ih[0, 0], D,
             <floating>0, &dx[0, 0, 0], D)
        # db (H,) = sum of da over all rows
        for i in range(H):
            db_ptr[i] = 0
        for r in range(T * B):
            da_t = da_ptr + r * H
            for i in range(H):
                db_ptr[i] += da_t[i]


cdef bint _use_blas_step(Py_ssize_t B, Py_ssize_t H):
    return B * H * H > _small_step_max_macs


def rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity):
    """Compiled forward pass; see rnnfast.functional.rnn_forward for the contract."""
    cdef int act = _activation_code(nonlinearity)
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], H = w_ih.shape[0]
    cdef bint use_blas = _use_blas_step(B, H)
    # The loop form of the recurrent product wants w_hh.T row-major; small, made once per call.
    w_hh_t = None if use_blas else np.ascontiguousarray(w_hh.T)
    if b is None:
        b = np.zeros(H, dtype=x.dtype)  # adding zeros keeps one loop per activation
    h = np.empty((T, B, H), dtype=x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, h0, w_ih, w_hh, b, h, w_hh_t, act, use_blas)
    else:
        _forward[double](x, h0, w_ih, w_hh, b, h, w_hh_t, act, use_blas)
    return h


def rnn_backward(dh, x, h0, h, w_ih, w_hh, nonlinearity):
    """Compiled BPTT; returns (dx, dh0, dw_ih, dw_hh, db). See rnnfast.functional.rnn_backward."""
    cdef int act = _activation_code(nonlinearity)
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_ih.shape[0]
    cdef bint use_blas = _use_blas_step(B, H)
    dtype = x.dtype
    da = np.empty((T, B, H), dtype=dtype)  # the one (T, B, H) workspace
    dx = np.empty((T, B, D), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    dw_ih = np.empty((H, D), dtype=dtype)
    dw_hh = np.empty((H, H), dtype=dtype)
    db = np.empty(H, dtype=dtype)
    if dtype == np.float32:
        _backward[float](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db, act, use_blas)
    else:
        _backward[double](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db, act, use_blas)
    return dx, dh0, dw_ih, dw_hh, db


def _set_tuning(small_step_max_macs=None, parallel_min_elements=None):
    """Override the size thresholds (for benchmarks choosing them); returns the previous pair."""
    global _small_step_max_macs, _parallel_min_elements
    previous = (_small_step_max_macs, _parallel_min_elements)
    if small_step_max_macs is not None:
        _small_step_max_macs = small_step_max_macs
    if parallel_min_elements is not None:
        _parallel_min_elements = parallel_min_elements
    return previous
