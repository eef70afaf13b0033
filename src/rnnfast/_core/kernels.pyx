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
from libc.string cimport memcpy

import contextlib
import operator

import numpy as np

cimport numpy as cnp
from libc.stdint cimport uint64_t
from cpython.pyport cimport PY_SSIZE_T_MAX

cnp.import_array()

from rnnfast._core.blas cimport BLAS_Trans, NoTrans, Trans, gemm


cdef extern from "simd.h" nogil:
    ctypedef struct rnnfast_simd_t:
        const char* name
        # a (rows, n), rows ld apart, = act(a + b)
        void (*bias_act_f32)(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             int) noexcept nogil
        void (*bias_act_f64)(double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             int) noexcept nogil
        void (*mul_act_grad_f32)(float*, const float*, Py_ssize_t, int) noexcept nogil
        void (*mul_act_grad_f64)(double*, const double*, Py_ssize_t, int) noexcept nogil
        # sums (n) += the column sums of a (rows, n)
        void (*add_col_sums_f32)(float*, const float*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*add_col_sums_f64)(double*, const double*, Py_ssize_t, Py_ssize_t) noexcept nogil
        # out (rows, n) += a (rows, k) @ m (k, n), m rows of stride ldm, its last k_tail rows
        # zero-padded to whole vectors in tail (see simd_small.h)
        void (*small_addmm_f32)(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const float*, Py_ssize_t, const float*, Py_ssize_t,
                                float*) noexcept nogil
        void (*small_addmm_f64)(double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const double*, Py_ssize_t, const double*, Py_ssize_t,
                                double*) noexcept nogil
        # out (rows, n) = a (rows, ka) @ wa.T + c (rows, kc) @ wc.T + bias, w row-major (n, k);
        # c NULL for no second product, bias NULL for none
        void (*step_dot_f32)(float*, const float*, const float*, Py_ssize_t, const float*,
                             const float*, Py_ssize_t, const float*, Py_ssize_t,
                             Py_ssize_t) noexcept nogil
        void (*step_dot_f64)(double*, const double*, const double*, Py_ssize_t, const double*,
                             const double*, Py_ssize_t, const double*, Py_ssize_t,
                             Py_ssize_t) noexcept nogil
        # out (rows, n) += a (rows, k) @ m (k, n), m packed into column panels by
        # pack_panels(dst, src, k, n, ld, transposed); the columns of panels q0 .. q1 - 1
        void (*panel_addmm_f32)(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const float*, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*panel_addmm_f64)(double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const double*, double*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*pack_panels_f32)(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                int) noexcept nogil
        void (*pack_panels_f64)(double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                int) noexcept nogil
        Py_ssize_t vector_bytes
        Py_ssize_t max_vectors
        Py_ssize_t panel_vectors
        Py_ssize_t panel_rows
    const rnnfast_simd_t* rnnfast_simd
    const rnnfast_simd_t rnnfast_simd_levels[]
    int RNNFAST_SIMD_NLEVELS
    int rnnfast_simd_supported(int level)
    int rnnfast_simd_select(int level)

cdef extern from "threads.h" nogil:
    ctypedef struct rf_thread:
        int running
    ctypedef void* (*rf_thread_fn)(void*) noexcept nogil
    int RF_HAVE_THREADS
    int rf_thread_start(rf_thread* thread, rf_thread_fn fn, void* arg)
    void rf_thread_join(rf_thread* thread)
    void rf_publish(Py_ssize_t* counter, Py_ssize_t value)
    void rf_wait_for(Py_ssize_t* counter, Py_ssize_t value)
    bint rf_claim(Py_ssize_t* next, Py_ssize_t index)
    Py_ssize_t rf_load(Py_ssize_t* counter)
    void rf_prefetch(const void* p, size_t bytes)
    Py_ssize_t RF_MAX_ITEMS
    Py_ssize_t RF_MAX_ROUNDS
    uint64_t rf_round_word(Py_ssize_t round, Py_ssize_t lo, Py_ssize_t hi)
    void rf_round_open(uint64_t* word, Py_ssize_t round, Py_ssize_t n)
    Py_ssize_t rf_round_claim(uint64_t* word, Py_ssize_t round, bint from_last)
    void rf_count(Py_ssize_t* counter)
    ctypedef int (*rf_set_threads_fn)(int) noexcept nogil
    ctypedef int (*rf_get_threads_fn)() noexcept nogil
    void rf_use_blas_threads(rf_set_threads_fn set_threads, rf_get_threads_fn get_threads)
    void rf_serial_enter()
    void rf_serial_leave()
    int rf_blas_threads()

cdef extern from "tuning.h" nogil:
    ctypedef struct rf_tuning:
        int step_product
        Py_ssize_t small_max_weight_bytes
        Py_ssize_t small_max_batch
        Py_ssize_t small_max_vectors_batched
        Py_ssize_t panel_min_batch
        Py_ssize_t panel_max_batch
        Py_ssize_t panel_max_step_bytes
        Py_ssize_t panel_helped_max_batch
        Py_ssize_t panel_helped_max_weight_bytes
        Py_ssize_t serial_step_max_macs
        Py_ssize_t serial_gemm_max_macs
        int overlap
        Py_ssize_t overlap_chunk_rows
        Py_ssize_t overlap_min_macs
        Py_ssize_t split_min_step_macs
        Py_ssize_t split_small_max_batch
        Py_ssize_t split_small_min_hidden
        Py_ssize_t split_chunk_rows
        Py_ssize_t prefetch_max_step_bytes
        Py_ssize_t step_dot_max_batch
        Py_ssize_t step_nogil_min_macs
    const rf_tuning rf_tuning_defaults
    rf_tuning rf_tuning_now

cdef enum:
    TANH = 0
    RELU = 1

# The per-step recurrent product h[t-1] @ w_hh.T (and da[t+1] @ w_hh backward) goes to one of
# three products, chosen per call by _step_kind:
# - BLAS GEMM;
# - the small product of simd_small.h, which holds whole output rows in vector registers (up to
#   256 float32 / 128 float64 columns with AVX-512): batches of 1 while w_hh fits in 128 KB,
#   and batches up to 32 when a row is at most 4 vectors;
# - the panel product, on w_hh packed once per call (oneDNN's packed-weights GEMM; OpenBLAS
#   packs w_hh again every step): batches of 4 to 32 while B * H * H * itemsize <= 32 MiB
#   (a step of 8M multiply-adds in float32, 4M in float64); beyond, two-threaded BLAS wins,
#   unless a helper thread takes the GEMMs around the loop: then batches up to 256 while w_hh
#   is at most 8 MiB (rf_tuning_now.panel_helped_max_batch).
# Measured forward + backward, T=100, AVX-512, float32, with `bench/tune_step_product.py
# --dtype float32 --batches 1 2 8 16 32 64 --hidden 64 100 128 256 512` (time over BLAS's,
# 2026-11-26, after the last change to the panel product): small at B=1 H=100 0.84 (H=64
# 1.13, H=128 1.01: within this shared machine's run-to-run noise of 10-20%); panel at
# B=8 H=128 0.88, B=8 H=256 0.52, B=16 H=256 0.59, B=32 H=128 0.82, B=32 H=512 0.85, but
# B=64 H=256 1.04, B=64 H=512 1.10 and B=2 H=128 1.57.
cdef enum:
    STEP_BLAS = 0
    STEP_SMALL = 1
    STEP_PANEL = 2
# With a helper thread for the GEMMs around the loop (see "Overlap"), the panel product also
# beats two-threaded BLAS steps on larger batches. Measured forward + backward, panel with the
# helper over BLAS steps without it, `python bench/tune_overlap.py --panel-vs-blas` (2026-11-26,
# AVX-512; float32 --reps 7 twice, then --reps 3 to 5 for H >= 1024; float64 --reps 3 to 5):
# float32 T=100 B=64 H=128 0.64/0.62, B=48 H=256 0.77/0.83, B=64 H=384 0.88/0.84; T=50 B=128
# H=256 0.84/0.82, B=256 H=256 0.88/0.84, B=64 H=512 0.90/0.89, B=64 H=768 0.87/0.69, T=30
# B=128 H=512 1.13/0.69; T=50 B=64 H=1024 0.96/1.14/0.92/1.06 (a tie), H=1408 0.78. float64:
# B=64 H=128 0.76, B=48 H=256 0.72, B=128 H=256 0.86, B=64 H=512 0.94, B=128 H=512 0.79,
# B=64 H=768 0.90, B=64 H=1024 0.88/0.81. Rerun on the final code (float32 --reps 5, float64
# --reps 3): float32 T=100 B=64 H=128 0.50, B=48 H=256 0.68; T=50 B=128 H=256 0.86, B=64
# H=512 0.79, B=64 H=1024 0.75; float64 B=64 H=512 0.99, B=64 H=1024 0.94. Hence up to B=256
# and w_hh of 8 MiB; beyond, not measured: BLAS.

# Small GEMMs run on one BLAS thread: there a second thread's wake-up costs more than it saves,
# and on a machine whose other core is busy it can wait a scheduler tick (there
# rnnfast.set_num_threads(1) is the cure). Two thresholds, in multiply-adds, chosen with
# bench/tune_serial_gemm.py (forward + backward, float32) before the panel product existed,
# when every batched step went to BLAS:
# - a time step's recurrent GEMM, paid 2 * T times a call (judged by B * H * H): one thread
#   below 2^20 (T=100, B=32, H=256: 19-22 ms, against 25.2 ms at 2^24);
# - the GEMMs before and after the time loop: one thread below 2^24 (T=100, B=8, H=128, whose
#   6.5M and 13M multiply-add GEMMs: 1.64 ms, against 2.36 ms at 2^20).
# The script now forces BLAS steps for the first sweep (the panel product takes B 4-32 under
# the rule). Rerun on 2026-11-26 it did not separate the candidates: the times moved without
# a trend by more than the differences (T=100 B=32 H=256 with BLAS steps: 14.6-18.7 ms over
# thresholds 0 to 2^26), so the values stay.
# rnnfast.threads finds OpenBLAS's thread-local setter and hands it over; without it BLAS
# decides alone.

# The streaming step (rnn_step): batches up to this use the dot-form product on the weights as
# stored, larger ones GEMM, which packs the weights again on every call. Measured with
# bench/tune_step_batch.py (float32, D,H from 32,64 to 512,1024, B 4 to 32): up to B=16 the
# dot form took 0.19-0.93 of GEMM's time in 28 of 30 cases (65,100 at B=12: 1.20; 512,1024 at
# B=16: 1.01); at B=32, 0.69-0.98, but 2.18 at 512,1024. (Before the dot form took rows in
# groups sharing the weights' loads, the limit was 4.)

def set_blas_thread_functions(size_t set_local_address, size_t get_address):
    """Install OpenBLAS's openblas_set_num_threads_local and openblas_get_num_threads (their
    addresses; 0 to remove)."""
    rf_use_blas_threads(<rf_set_threads_fn>set_local_address, <rf_get_threads_fn>get_address)


def blas_threads():
    """BLAS's thread count as set from outside (0: its functions are not installed)."""
    return rf_blas_threads()


cdef inline bint _serial_blas_begin(bint serial) noexcept nogil:
    """Make BLAS calls single-threaded if ``serial`` (see rf_serial_enter in threads.h: the
    setting is process-wide); returns what to pass to _serial_blas_end."""
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
    """gemm, on one BLAS thread when it is small (see SERIAL_GEMM_MAX_MACS)."""
    cdef bint saved = _serial_blas_begin(m * n * k < rf_tuning_now.serial_gemm_max_macs)
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    _serial_blas_end(saved)


SIMD_LEVELS = tuple(rnnfast_simd_levels[i].name.decode() for i in range(RNNFAST_SIMD_NLEVELS))


def simd_level():
    """The instruction set the vector loops run with: 'avx512', 'avx2' or 'baseline'."""
    return rnnfast_simd.name.decode()


def set_simd_level(name=None):
    """Run the vector loops with ``name`` (one of SIMD_LEVELS; None: the widest the CPU has).

    Returns the previous level's name. For tests and benchmarks of every code path.
    """
    previous = simd_level()
    level = -1 if name is None else SIMD_LEVELS.index(name) if name in SIMD_LEVELS else -2
    if level == -2:
        raise ValueError(f"SIMD level must be one of {SIMD_LEVELS} or None, got {name!r}")
    if rnnfast_simd_select(level) < 0:
        raise ValueError(f"this CPU cannot run SIMD level {name!r}")
    return previous


set_simd_level(None)  # the widest level this CPU has (rnnfast applies RNNFAST_SIMD)


cdef int _activation_code(str nonlinearity) except -1:
    if nonlinearity == "tanh":
        return TANH
    if nonlinearity == "relu":
        return RELU
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


cdef struct StepProduct:
    # How a time step adds (B, H) @ op(w_hh) (see STEP_PRODUCTS): with BLAS GEMM; with the
    # small product of simd_small.h on op(w_hh) laid out (in, out) (forward: a transposed copy
    # of w_hh; backward: w_hh itself), its last rows zero-padded in `tail`; or with the panel
    # product on op(w_hh) packed once per call into `packed`. `stage`: their staging buffer.
    int kind
    const void* tail
    Py_ssize_t tail_rows
    const void* packed
    void* stage


cdef inline void _add_matmul(floating* out, const floating* a, const floating* w,
                             BLAS_Trans trans_w, StepProduct* how,
                             Py_ssize_t rows, Py_ssize_t h) noexcept nogil:
    """out (rows, h) += a (rows, h) @ op(w), op(w) being (h, h); for the small product, ``w``
    must already be op(w) laid out (in, out); the panel product ignores it for how.packed."""
    if how.kind == STEP_BLAS:
        gemm(NoTrans, trans_w, rows, h, h, <floating>1, a, h, w, h, <floating>1, out, h)
    elif how.kind == STEP_PANEL:
        _panel_columns(out, a, how, rows, h, 0, h)
    elif floating is float:
        rnnfast_simd.small_addmm_f32(out, a, rows, h, h, w, h, <const float*>how.tail,
                                     how.tail_rows, <float*>how.stage)
    else:
        rnnfast_simd.small_addmm_f64(out, a, rows, h, h, w, h, <const double*>how.tail,
                                     how.tail_rows, <double*>how.stage)


cdef inline void _panel_columns(floating* out, const floating* a, StepProduct* how,
                                Py_ssize_t rows, Py_ssize_t h, Py_ssize_t q0,
                                Py_ssize_t q1) noexcept nogil:
    """The panel product's columns of panels q0 .. q1 - 1 only (see _add_matmul); a q1 past
    the last panel (h will do) means up to the end."""
    if floating is float:
        rnnfast_simd.panel_addmm_f32(out, a, rows, h, h, <const float*>how.packed,
                                     <float*>how.stage, q0, q1)
    else:
        rnnfast_simd.panel_addmm_f64(out, a, rows, h, h, <const double*>how.packed,
                                     <double*>how.stage, q0, q1)


cdef inline void _bias_act(floating* a, const floating* b, Py_ssize_t rows, Py_ssize_t h,
                           Py_ssize_t ld, int act) noexcept nogil:
    """a = act(a + b) in place, for rows x h, rows ld apart (b NULL: no bias).

    On one thread: splitting it over OpenMP threads was tried in an earlier version and
    rejected, because OpenMP's spinning workers stalled the BLAS threads of the next step's
    GEMM (that experiment was not kept, so no figure is given here)."""
    if floating is float:
        rnnfast_simd.bias_act_f32(a, b, rows, h, ld, act)
    else:
        rnnfast_simd.bias_act_f64(a, b, rows, h, ld, act)


cdef inline void _mul_act_grad(floating* g, const floating* h, Py_ssize_t n,
                               int act) noexcept nogil:
    """g *= act'(pre-activation), written in terms of the output h = act(pre-activation)."""
    if floating is float:
        rnnfast_simd.mul_act_grad_f32(g, h, n, act)
    else:
        rnnfast_simd.mul_act_grad_f64(g, h, n, act)


cdef StepProduct _step_product(int kind, const floating[:, ::1] tail,
                               const floating[::1] packed, floating[::1] stage):
    cdef StepProduct how
    how.kind = kind
    how.tail_rows = 0 if tail is None else tail.shape[0]
    how.tail = NULL if how.tail_rows == 0 else &tail[0, 0]
    how.packed = NULL if packed is None else &packed[0]
    how.stage = NULL if stage is None else &stage[0]
    return how


# Overlap. Only the recursion is sequential; the GEMMs around it need only finished steps. So
# when the steps use our own products (small or panel: no BLAS inside the loop), a helper
# thread does them beside the loop, a chunk of steps at a time, while the calling thread runs
# the recursion: forward, the input projection of the chunks ahead; backward, dw_ih, dw_hh and
# db of the chunks behind (the caller then does dx and dh0, and then continues the weight
# gradients' chunks the helper has not reached). Every GEMM in both threads then runs on one
# BLAS thread, so that the two cores do different work instead of waking BLAS's pool 2 * T
# times. Chunks are fixed by T and B, not by timing, and each gradient's chunks run in one
# order whichever thread runs them: the results are the same on every run. Measured forward +
# backward with `bench/tune_overlap.py --dtype float32 --reps 21` (time with the helper over
# time without, 2026-11-26, AVX-512, two cores; chunks of 16 to 192 rows): T=100 B=1 H=64
# 1.43-1.67 (0.6M multiply-adds: the thread costs more than it saves), B=2 H=100 and B=4 H=64
# 0.92-1.20 (2.5M),
# B=4 H=128 0.70-0.88, B=8 H=128 0.45-0.82, B=16 H=256 0.85-1.11, B=32 H=256 0.65-0.84; chunks
# of 16 to 48 rows did best.
# float64 (chunks of 32 and 48): B=8 H=128 0.49-0.52, B=32 H=256 0.78. Rerun with
# `--chunk-rows 16 48 192` on the final code (one process-wide serial section, the caller
# taking the gradient chunks the helper has not reached), 48 rows: B=1 H=64 1.41, B=2 H=100
# 0.98, B=4 H=64 0.69, B=4 H=128 0.72, B=8 H=128 0.73, B=16 H=256 0.91, B=32 H=256 0.98
# (0.84 with 16 rows, 0.83 with 192: this machine's noise is of that order).
# A hand-over is about this many rows (steps * B): the chunk GEMMs' efficiency against the
# time the helper lags behind.
# Below this many multiply-adds in a pass (T*B*H*(D+H)), starting a thread costs more than
# the overlap saves.
# A forward whose panel-product steps take at least this many multiply-adds (B * H * H), with
# the helper available, shares every step's columns between the two threads instead of
# projecting ahead (_split_share): the input projection in chunks of steps, then step by step
# the column panels (product, bias + activation), each step once the one before is done.
# Forward, split against not (best of 5 rounds, `best_block_medians`; torch no_grad in
# brackets): 50,32,1024,1024 62.3 -> 30.2 ms (43.4); 50,64,1024,1024 81.1 -> 55.5 (59.2);
# 50,64,512,512 17.0 -> 14.9 (18.1); 50,32,512,512 15.3 -> 9.0 (14.0); 50,16,512,512 (4.2M a
# step) 6.8 -> 5.7; 50,8,1024,1024 15.8 -> 11.8. The projection ahead left the helper idle for
# most of the loop, which ran on one core. At 100,32,128,256 (2.1M a step) the split lost in
# two runs of three: 4.5 -> 5.2 and 5.0 -> 5.8 (5.0 -> 4.9 in the other).
# The items go to whichever thread asks (rf_round_claim), not in fixed halves: a thread whose
# core is shared (with another process, or NumPy's OpenBLAS worker, which spins for about
# 0.1 s after each multi-threaded call) takes fewer instead of holding the other up. Forward
# right after a 512 x 512 NumPy matmul, fixed halves -> shared out (median of 21 calls, three
# process pairs): 50,64,1024,1024 float64 224-256 -> 169-217 ms; 50,64,512,512 45-58 -> 27-59;
# 50,16,512,512 22.4-24.9 -> 7.9-10.6. With a pause before each call: 155-163 -> 145-158,
# 20.8-27.6 -> 20.0-24.5, 6.2-7.5 -> 5.7-7.8 (README, "What the kernels do").
# Batches up to rf_tuning_now.split_small_max_batch with H >= rf_tuning_now.split_small_min_hidden split from an eighth of
# SPLIT_MIN_STEP_MACS (512K). Forward, split over projecting ahead (calls interleaved in one
# process, 300 each, p10 / p50; f32 unless said): 100,8,64,256 (524K) 0.91/0.92, float64
# 0.91/0.91; 100,16,64,256 0.79-0.82/0.83-0.88; 100,4,64,512 0.82/0.73, float64 0.53/0.58;
# 100,8,32,384 0.78/0.77; 100,16,128,256 0.95/0.95; 100,4,128,384 0.98/1.03; 100,4,64,256
# (262K) 1.02/1.02. Where not: H < 256, with fewer and relatively narrower panels to share,
# and per step the other thread's half of h to fetch: 100,8,64,128 1.43/1.39, 100,16,65,100
# 1.81/1.80, 100,64,64,128 (1M) 1.43/1.41, 100,12,100,200 1.07/1.09; and H = 256 at batches
# of 24-32: 100,32,128,256 (2.1M) 0.93-1.04 over five runs, float64 1.01/1.16, 100,24,128,256
# 1.01/1.18, 100,32,64,256 0.96/0.98 (at 320-384 the split wins there too: 100,24,64,384
# 0.80/0.87, 100,32,64,320 0.92/0.95).
# The split's input projection is shared out in chunks of about this many rows (steps * B).
# The forward loop prefetches the next step's projection, written by the helper, while the
# step's bytes are at most this (a third of a 48 KiB L1).


cdef enum:
    # The weight gradients' two chunk sequences, which either thread may continue (below).
    GRAD_IH = 0
    GRAD_HH = 1


cdef struct Overlap:
    # The helper's share of one call (see "Overlap" above). `progress` counts steps handed over:
    # forward, the end of the last chunk the helper projected; backward, steps finished by the
    # caller, from the end.
    bint is_double
    bint backward
    Py_ssize_t T, B, D, H, chunk
    Py_ssize_t progress
    # Forward: claimed[0] is the next projection chunk to claim. The helper claims them in
    # order; the caller projects chunk 0, and any chunk its loop reaches still unclaimed.
    # Backward: dw_ih and dw_hh are each a sequence of per-chunk GEMMs, chunk 0 the last steps.
    # The helper runs them as the chunks arrive; the caller, once its own work is done, claims
    # the chunks still unclaimed in order. claimed[g]: the next chunk of sequence g to claim;
    # done[g]: chunks of it finished (a claimer waits for the one before, as both add to one
    # matrix). The same GEMMs run in the same order whoever runs them: same results.
    Py_ssize_t claimed[2]
    Py_ssize_t done[2]
    const void* x
    const void* w_ih
    void* out       # forward: the output, which holds the projection until each step
    const void* h   # backward: the forward's states
    const void* da
    const void* h0
    void* dw_ih
    void* dw_hh
    void* db
    # Forward split (_split_share): round 0 shares out the input projection in split_chunks
    # chunks of steps, round t + 1 the split_panels column panels (panel_width columns each) of
    # step t, through the word `claims`; `finished` counts the items done in all rounds.
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
    int act


cdef bint _helper_available() noexcept nogil:
    """May a call start a helper thread? Forced, or: threads exist, and BLAS, whose thread
    count we know and can hold at one, may use two."""
    if rf_tuning_now.overlap != 0:
        return rf_tuning_now.overlap == 2
    return RF_HAVE_THREADS and rf_blas_threads() >= 2


cdef Py_ssize_t _overlap_chunk(int kind, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D,
                               Py_ssize_t H) noexcept nogil:
    """Steps per hand-over if this call overlaps, else 0."""
    cdef Py_ssize_t chunk = max(1, rf_tuning_now.overlap_chunk_rows // B)
    if kind == STEP_BLAS or T <= chunk or not _helper_available():
        return 0
    if rf_tuning_now.overlap == 0 and T * B * H * (D + H) < rf_tuning_now.overlap_min_macs:
        return 0
    return chunk


cdef void _project_steps(floating* dummy, Overlap* job, Py_ssize_t t0,
                         Py_ssize_t t1) noexcept nogil:
    """h[t0:t1] = x[t0:t1] @ w_ih.T (the forward's input projection of those steps)."""
    cdef Py_ssize_t B = job.B, D = job.D, H = job.H
    _bulk_gemm(NoTrans, Trans, (t1 - t0) * B, H, D, <floating>1,
               <const floating*>job.x + t0 * B * D, D, <const floating*>job.w_ih, D,
               <floating>0, <floating*>job.out + t0 * B * H, H)


cdef void _grad_steps(floating* dummy, Overlap* job, int which, Py_ssize_t t0, Py_ssize_t t1,
                      bint first) noexcept nogil:
    """dw_ih (which = GRAD_IH) or dw_hh (GRAD_HH) of steps t0..t1-1, set by the ``first``
    chunk and added to by the rest."""
    cdef Py_ssize_t B = job.B, D = job.D, H = job.H, step = job.B * job.H
    cdef const floating* da = <const floating*>job.da
    cdef floating beta = 0 if first else 1
    cdef Py_ssize_t hh0 = max(t0, 1)  # dw_hh pairs da[t] with h[t-1]; step 0 with h0
    if which == GRAD_IH:
        _bulk_gemm(Trans, NoTrans, H, D, (t1 - t0) * B, <floating>1, da + t0 * step, H,
                   <const floating*>job.x + t0 * B * D, D, beta, <floating*>job.dw_ih, D)
        return
    if first or t1 > hh0:  # with no rows (T = 1), the first GEMM still sets dw_hh to zero
        _bulk_gemm(Trans, NoTrans, H, H, max(0, t1 - hh0) * B, <floating>1, da + hh0 * step, H,
                   <const floating*>job.h + (hh0 - 1) * step, H, beta, <floating*>job.dw_hh, H)
    if t0 == 0 and job.h0 != NULL:
        _bulk_gemm(Trans, NoTrans, H, H, B, <floating>1, da, H, <const floating*>job.h0, H,
                   <floating>1, <floating*>job.dw_hh, H)


cdef void _bias_grad_steps(floating* dummy, Overlap* job, Py_ssize_t t0, Py_ssize_t t1,
                           bint first) noexcept nogil:
    """db of steps t0..t1-1: the sum of their rows of da (set by the ``first`` chunk)."""
    cdef Py_ssize_t H = job.H, i
    cdef floating* db = <floating*>job.db
    if first:
        for i in range(H):
            db[i] = 0
    if floating is float:
        rnnfast_simd.add_col_sums_f32(db, <const float*>job.da + t0 * job.B * H,
                                      (t1 - t0) * job.B, H)
    else:
        rnnfast_simd.add_col_sums_f64(db, <const double*>job.da + t0 * job.B * H,
                                      (t1 - t0) * job.B, H)


cdef inline void _chunk_steps(Overlap* job, Py_ssize_t k, Py_ssize_t* t0,
                              Py_ssize_t* t1) noexcept nogil:
    """Backward chunk k: steps t0..t1-1 (chunk 0 holds the last steps)."""
    t1[0] = job.T - k * job.chunk
    t0[0] = max(0, t1[0] - job.chunk)


cdef bint _run_grad_chunk(floating* dummy, Overlap* job, int which, Py_ssize_t k) noexcept nogil:
    """Chunk k of weight-gradient sequence ``which``, if this thread claims it; True if it did."""
    cdef Py_ssize_t t0, t1
    if not rf_claim(&job.claimed[which], k):
        return False
    rf_wait_for(&job.done[which], k)  # the chunk before, maybe on the other thread
    _chunk_steps(job, k, &t0, &t1)
    _grad_steps(dummy, job, which, t0, t1, k == 0)
    rf_publish(&job.done[which], k + 1)
    return True


cdef void _finish_grads(floating* dummy, Overlap* job) noexcept nogil:
    """The caller, after the time loop: run the weight-gradient chunks nobody has claimed."""
    cdef Py_ssize_t chunks = (job.T + job.chunk - 1) // job.chunk, k
    cdef int which
    for which in range(2):
        k = rf_load(&job.claimed[which])
        while k < chunks:
            _run_grad_chunk(dummy, job, which, k)  # if the helper took k, it is past it now
            k = rf_load(&job.claimed[which])
        rf_wait_for(&job.done[which], chunks)


cdef void _split_share(floating* dummy, Overlap* job, bint from_last) noexcept nogil:
    """One thread's part of a split forward; both threads run it, one taking each round's items
    from the first, the other ``from_last``: the projection's chunks, then step by step the
    column panels' products and bias + activation, each step once the one before is done."""
    cdef Py_ssize_t T = job.T, B = job.B, H = job.H, step = job.B * job.H
    cdef Py_ssize_t chunks = job.split_chunks, panels = job.split_panels
    cdef Py_ssize_t width = job.panel_width, item, t, c0, done = chunks
    cdef int act = job.act
    cdef StepProduct how = job.how
    cdef floating* out = <floating*>job.out
    cdef const floating* bias = <const floating*>job.bias
    cdef floating* h_t
    cdef const floating* h_prev
    item = rf_round_claim(&job.claims, 0, from_last)
    while item >= 0:
        _project_steps(dummy, job, item * T // chunks, (item + 1) * T // chunks)
        rf_count(&job.finished)
        item = rf_round_claim(&job.claims, 0, from_last)
    for t in range(T):
        rf_wait_for(&job.finished, done)  # every item of the round before
        rf_round_open(&job.claims, t + 1, panels)
        h_t = out + t * step
        h_prev = <const floating*>job.h0 if t == 0 else h_t - step
        item = rf_round_claim(&job.claims, t + 1, from_last)
        while item >= 0:
            c0 = item * width
            if h_prev != NULL:
                _panel_columns(h_t, h_prev, &how, B, H, item, item + 1)
            _bias_act(h_t + c0, NULL if bias == NULL else bias + c0, B, min(width, H - c0), H,
                      act)
            rf_count(&job.finished)
            item = rf_round_claim(&job.claims, t + 1, from_last)
        done += panels


cdef void _overlap_work(floating* dummy, Overlap* job) noexcept nogil:
    cdef Py_ssize_t T = job.T, chunk = job.chunk, t0, t1, k
    if job.split:
        _split_share(dummy, job, False)
        return
    if not job.backward:
        # The projection's chunks in order, each unless the caller has taken it (_await_chunk).
        k = rf_load(&job.claimed[0])
        while k * chunk < T:
            if rf_claim(&job.claimed[0], k):
                _project_steps(dummy, job, k * chunk, min(T, (k + 1) * chunk))
                rf_publish(&job.progress, min(T, (k + 1) * chunk))
            k = rf_load(&job.claimed[0])
        return
    k = 0
    while k * chunk < T:
        _chunk_steps(job, k, &t0, &t1)
        rf_wait_for(&job.progress, T - t0)
        _run_grad_chunk(dummy, job, GRAD_IH, k)
        _run_grad_chunk(dummy, job, GRAD_HH, k)
        _bias_grad_steps(dummy, job, t0, t1, k == 0)
        k += 1


cdef void* _overlap_helper(void* arg) noexcept nogil:
    """The helper thread's body; the caller keeps BLAS on one thread until it has joined."""
    cdef Overlap* job = <Overlap*>arg
    if job.is_double:
        _overlap_work[double](NULL, job)
    else:
        _overlap_work[float](NULL, job)
    return NULL


cdef void _forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                   const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                   const floating[::1] b, floating[:, :, ::1] h,
                   int kind, const floating[:, ::1] w_hh_t, const floating[:, ::1] tail,
                   const floating[::1] packed, floating[::1] stage, int act) noexcept:
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_ih.shape[0]
    cdef StepProduct how = _step_product(kind, tail, packed, stage)
    # BLAS takes w_hh with a transpose flag; the small product wants w_hh.T laid out.
    cdef const floating* w_op = &w_hh[0, 0] if w_hh_t is None else &w_hh_t[0, 0]
    cdef const floating* h0_ptr = NULL if h0 is None else &h0[0, 0]
    cdef const floating* b_ptr = NULL if b is None else &b[0]
    cdef floating* out = &h[0, 0, 0]
    cdef bint saved
    cdef Overlap job
    cdef rf_thread helper
    job.is_double, job.backward = floating is double, False
    job.T, job.B, job.D, job.H = T, B, D, H
    job.x, job.w_ih, job.out = &x[0, 0, 0], &w_ih[0, 0], out
    job.how, job.bias, job.act, job.h0 = how, b_ptr, act, h0_ptr
    with nogil:
        job.chunk = job.progress = _overlap_chunk(kind, T, B, D, H)
        job.split = job.chunk > 0 and _split_columns(&job, kind, sizeof(floating))
        if job.split:
            saved = _serial_blas_begin(True)
            if rf_thread_start(&helper, _overlap_helper, &job):
                _split_share(out, &job, True)
                rf_thread_join(&helper)
            else:  # no thread: whole steps below, on this one
                job.split = False
                job.chunk = job.progress = 0
            _serial_blas_end(saved)
        if not job.split:
            _forward_steps(out, &job, h0_ptr, b_ptr, w_op, &how, kind, act)


cdef bint _split_columns(Overlap* job, int kind, size_t itemsize) noexcept nogil:
    """Should this forward share every step's columns between the two threads? If so, set up
    the rounds of _split_share: the projection in an even number of chunks of about
    rf_tuning_now.split_chunk_rows rows (two threads at the same speed take half each), then the panels."""
    cdef Py_ssize_t width = rnnfast_simd.panel_vectors * (rnnfast_simd.vector_bytes // itemsize)
    cdef Py_ssize_t panels = (job.H + width - 1) // width
    cdef Py_ssize_t macs = job.B * job.H * job.H
    if kind != STEP_PANEL or panels < 2 or panels > RF_MAX_ITEMS or job.T >= RF_MAX_ROUNDS:
        return False
    if macs < rf_tuning_now.split_min_step_macs and not (
            job.B <= rf_tuning_now.split_small_max_batch and job.H >= rf_tuning_now.split_small_min_hidden
            and macs >= rf_tuning_now.split_min_step_macs // 8):
        return False
    job.split_chunks = min(job.T, 2 * max(1, job.T * job.B // (2 * rf_tuning_now.split_chunk_rows)),
                           RF_MAX_ITEMS - 1)  # (an even number)
    job.split_panels, job.panel_width = panels, width
    job.claims = rf_round_word(0, 0, job.split_chunks)
    job.finished = 0
    return True


cdef Py_ssize_t _await_chunk(floating* dummy, Overlap* job, Py_ssize_t t) noexcept nogil:
    """The forward loop is at step t, the first of a chunk whose projection the helper has
    not finished: project the chunk here if the helper has not claimed it yet (its core may be
    shared, or it may not have started), else wait for the helper to finish it. Returns the
    step after the chunk."""
    cdef Py_ssize_t end = min(job.T, t + job.chunk)
    if rf_load(&job.progress) >= end:
        return end
    if rf_claim(&job.claimed[0], t // job.chunk):
        _project_steps(dummy, job, t, end)
    else:
        rf_wait_for(&job.progress, end)
    return end


cdef void _forward_steps(floating* out, Overlap* job, const floating* h0_ptr,
                         const floating* b_ptr, const floating* w_op, StepProduct* how,
                         int kind, int act) noexcept nogil:
    """The forward's time loop on this thread, with the helper projecting chunks ahead if
    job.chunk > 0 (else the projection of every step at once first)."""
    cdef Py_ssize_t T = job.T, B = job.B, H = job.H, step = job.B * job.H, t
    # Steps whose projection is done, as far as this loop knows (all of them without chunks).
    cdef Py_ssize_t ready = job.chunk if job.chunk > 0 else T
    # The helper's projected rows reach this core a step early (see rf_prefetch). Only where a
    # step is a small part of L1, so that its rows do not push the weights out (measured at
    # 100,8,64,128 only, a step of 4 KiB).
    cdef bint prefetch = job.chunk > 0 and step * sizeof(floating) <= rf_tuning_now.prefetch_max_step_bytes
    cdef floating* h_t
    cdef const floating* h_prev
    cdef bint saved
    cdef rf_thread helper
    if job.chunk > 0:
        saved = _serial_blas_begin(True)
        job.claimed[0] = 1  # chunk 0 is this thread's
        rf_thread_start(&helper, _overlap_helper, job)  # if none starts, the loop projects
        _project_steps(out, job, 0, job.chunk)
    else:
        # The input projection of every step at once: h (T*B, H) = x (T*B, D) @ w_ih.T.
        _project_steps(out, job, 0, T)
        saved = _serial_blas_begin(kind == STEP_BLAS and B * H * H < rf_tuning_now.serial_step_max_macs)
    for t in range(T):
        h_t = out + t * step
        if t == ready:  # the first step of a chunk not known to be projected
            ready = _await_chunk(out, job, t)
        h_prev = h0_ptr if t == 0 else h_t - step
        if prefetch and (t + 1 < ready or (t + 1 < T and rf_load(&job.progress) > t + 1)):
            rf_prefetch(h_t + step, step * sizeof(floating))  # the next step's projection
        if h_prev != NULL:  # a None h0 is zeros: nothing to add at t = 0
            _add_matmul(h_t, h_prev, w_op, Trans, how, B, H)
        _bias_act(h_t, b_ptr, B, H, H, act)
    if job.chunk > 0:
        rf_thread_join(&helper)
    _serial_blas_end(saved)


cdef void _backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                    const floating[:, ::1] h0, const floating[:, :, ::1] h,
                    const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                    floating[:, :, ::1] da, floating[:, :, ::1] dx, floating[:, ::1] dh0,
                    floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
                    int kind, const floating[:, ::1] tail, const floating[::1] packed,
                    floating[::1] stage, int act, Py_ssize_t chunk) noexcept:
    """``chunk`` > 0: overlap the weight gradients in chunks of that many steps (the caller
    decided, with _overlap_chunk, before placing the packed w_hh in dx's memory only)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_ih.shape[0]
    cdef Py_ssize_t step = B * H, t
    cdef StepProduct how = _step_product(kind, tail, packed, stage)
    cdef const floating* w_hh_ptr = &w_hh[0, 0]
    cdef floating* da_ptr = &da[0, 0, 0]
    cdef floating* da_t
    cdef bint saved
    cdef Overlap job
    cdef rf_thread helper
    job.is_double, job.backward, job.split = floating is double, True, False
    job.T, job.B, job.D, job.H, job.chunk, job.progress = T, B, D, H, chunk, 0
    job.claimed[0] = job.claimed[1] = job.done[0] = job.done[1] = 0
    job.x, job.h, job.da = &x[0, 0, 0], &h[0, 0, 0], da_ptr
    job.h0 = NULL if h0 is None else &h0[0, 0]
    job.dw_ih, job.dw_hh, job.db = &dw_ih[0, 0], &dw_hh[0, 0], &db[0]
    with nogil:
        if chunk > 0:
            saved = _serial_blas_begin(True)
            rf_thread_start(&helper, _overlap_helper, &job)
        else:
            saved = _serial_blas_begin(kind == STEP_BLAS and B * H * H < rf_tuning_now.serial_step_max_macs)
        # The sequential part: da[t] = (dh[t] + da[t+1] @ w_hh) * act'(h[t]).
        for t in range(T - 1, -1, -1):
            da_t = da_ptr + t * step
            memcpy(da_t, &dh[t, 0, 0], step * sizeof(floating))
            if t < T - 1:
                _add_matmul(da_t, da_t + step, w_hh_ptr, NoTrans, &how, B, H)
            _mul_act_grad(da_t, &h[t, 0, 0], step, act)
            if chunk > 0 and ((T - t) % chunk == 0 or t == 0):
                rf_publish(&job.progress, T - t)
        if chunk == 0:
            _serial_blas_end(saved)
            # dw_ih (H, D) = da^T @ x, dw_hh (H, H) = da[1:]^T @ h[:-1] (+ da[0]^T @ h0), db:
            # each one GEMM or reduction over all steps.
            _grad_steps(da_ptr, &job, GRAD_IH, 0, T, True)
            _grad_steps(da_ptr, &job, GRAD_HH, 0, T, True)
            _bias_grad_steps(da_ptr, &job, 0, T, True)
        elif not helper.running:
            _overlap_work(da_ptr, &job)  # no thread: the chunks now, in the same order
        # Rows of da are (t, b) pairs. dh0 (B, H) = da[0] @ w_hh
        _bulk_gemm(NoTrans, NoTrans, B, H, H, <floating>1, da_ptr, H, w_hh_ptr, H,
                   <floating>0, &dh0[0, 0], H)
        # dx (T*B, D) = da (T*B, H) @ w_ih (H, D)
        _bulk_gemm(NoTrans, NoTrans, T * B, D, H, <floating>1, da_ptr, H, &w_ih[0, 0], D,
                   <floating>0, &dx[0, 0, 0], D)
        if chunk > 0:
            _finish_grads(da_ptr, &job)  # help with the weight gradients the helper has left
            rf_thread_join(&helper)
            _serial_blas_end(saved)


cdef int _step_kind(Py_ssize_t B, Py_ssize_t H, Py_ssize_t itemsize):
    """Which product a call's time steps use (STEP_BLAS, STEP_SMALL or STEP_PANEL)."""
    cdef Py_ssize_t vector_len = rnnfast_simd.vector_bytes // itemsize
    cdef Py_ssize_t vectors = (H + vector_len - 1) // vector_len
    cdef bint small_fits = vectors <= rnnfast_simd.max_vectors
    if rf_tuning_now.step_product != 0:  # forced (tests, tuning); "small" only where it fits
        if rf_tuning_now.step_product == STEP_SMALL + 1 and not small_fits:
            return STEP_BLAS
        return rf_tuning_now.step_product - 1
    if small_fits and B <= rf_tuning_now.small_max_batch and (
            (B == 1 and H * H * itemsize <= rf_tuning_now.small_max_weight_bytes)
            or vectors <= rf_tuning_now.small_max_vectors_batched):
        return STEP_SMALL
    if B >= rf_tuning_now.panel_min_batch and (
            (B <= rf_tuning_now.panel_max_batch and B * H * H * itemsize <= rf_tuning_now.panel_max_step_bytes)
            or (B <= rf_tuning_now.panel_helped_max_batch and H * H * itemsize <= rf_tuning_now.panel_helped_max_weight_bytes
                and _helper_available())):
        return STEP_PANEL
    return STEP_BLAS


def step_operands(w_hh, Py_ssize_t B, bint transposed, tuple scratch=()):
    """(kind, w_in_out, tail, packed, stage): what a call's recurrent products need.

    The product is ``h @ op(w_hh)``, op(w_hh) = w_hh.T when ``transposed`` (forward), else w_hh
    (backward). The small product reads op(w_hh) laid out (in, out), ``w_in_out`` (None when
    that is w_hh itself), with its last rows zero-padded in ``tail``; the panel product reads
    it ``packed`` into column panels. ``stage``: their staging buffer. ``scratch``: arrays of
    w_hh's dtype whose memory is free until the time loop ends (outputs written after it); the
    packed panels and their stage go in the first large enough, so that they cost no memory.
    """
    cdef Py_ssize_t H = w_hh.shape[0], itemsize = w_hh.dtype.itemsize
    cdef int kind = _step_kind(B, H, itemsize)
    cdef Py_ssize_t vector_len = rnnfast_simd.vector_bytes // itemsize
    cdef Py_ssize_t padded_len, tail_rows
    cdef cnp.ndarray packed = None
    w_in_out = tail = stage = None
    if kind == STEP_SMALL:
        # One small copy per call: op(w_hh) laid out (in, out).
        w_in_out = np.ascontiguousarray(w_hh.T) if transposed else None
        m = w_hh if w_in_out is None else w_in_out
        padded_len = (H + vector_len - 1) // vector_len * vector_len
        # The last rows zero-padded to whole vectors, as many as the whole-vector reads would
        # otherwise run past the end of m (often one); `stage` has room for a 4-row block.
        tail_rows = min(H, (padded_len - H + H - 1) // H)
        tail = np.zeros((tail_rows, padded_len), dtype=w_hh.dtype)
        tail[:, :H] = m[H - tail_rows:]
        stage = np.empty(4 * padded_len, dtype=w_hh.dtype)
    elif kind == STEP_PANEL:
        # Packed once per call, read by every time step.
        padded_len = (H + vector_len - 1) // vector_len * vector_len
        stage_len = rnnfast_simd.panel_rows * rnnfast_simd.panel_vectors * vector_len
        room = next((a.reshape(-1) for a in scratch if a.size >= H * padded_len + stage_len),
                    None)
        if room is None:
            room = np.empty(H * padded_len + stage_len, dtype=w_hh.dtype)
        packed, stage = room[:H * padded_len], room[H * padded_len:H * padded_len + stage_len]
        if itemsize == 4:
            rnnfast_simd.pack_panels_f32(<float*>cnp.PyArray_DATA(packed),
                                         <const float*>cnp.PyArray_DATA(w_hh), H, H, H,
                                         transposed)
        else:
            rnnfast_simd.pack_panels_f64(<double*>cnp.PyArray_DATA(packed),
                                         <const double*>cnp.PyArray_DATA(w_hh), H, H, H,
                                         transposed)
    return kind, w_in_out, tail, packed, stage


def rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity):
    """Compiled forward pass; see rnnfast.functional.rnn_forward for the contract."""
    cdef int act = _activation_code(nonlinearity)
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], H = w_ih.shape[0]
    kind, w_hh_t, tail, packed, stage = step_operands(w_hh, B, True)
    h = np.empty((T, B, H), dtype=x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, h0, w_ih, w_hh, b, h, kind, w_hh_t, tail, packed, stage, act)
    else:
        _forward[double](x, h0, w_ih, w_hh, b, h, kind, w_hh_t, tail, packed, stage, act)
    return h


def rnn_backward(dh, x, h0, h, w_ih, w_hh, nonlinearity):
    """Compiled BPTT; returns (dx, dh0, dw_ih, dw_hh, db). See rnnfast.functional.rnn_backward."""
    cdef int act = _activation_code(nonlinearity)
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_ih.shape[0]
    dtype = x.dtype
    da = np.empty((T, B, H), dtype=dtype)  # the one (T, B, H) workspace
    dx = np.empty((T, B, D), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    dw_ih = np.empty((H, D), dtype=dtype)
    dw_hh = np.empty((H, H), dtype=dtype)
    db = np.empty(H, dtype=dtype)
    cdef Py_ssize_t chunk = _overlap_chunk(_step_kind(B, H, dtype.itemsize), T, B, D, H)
    # dx is written only after the time loop, and so are dw_ih and dw_hh unless a helper
    # thread writes them beside it (see "Overlap"): until then their memory can hold the
    # packed w_hh (the peak extra memory stays one (T, B, H) buffer).
    kind, _, tail, packed, stage = step_operands(w_hh, B, False,
                                                  (dx,) if chunk else (dx, dw_ih, dw_hh))
    if dtype == np.float32:
        _backward[float](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db,
                         kind, tail, packed, stage, act, chunk)
    else:
        _backward[double](dh, x, h0, h, w_ih, w_hh, da, dx, dh0, dw_ih, dw_hh, db,
                          kind, tail, packed, stage, act, chunk)
    return dx, dh0, dw_ih, dw_hh, db


def overlap_steps(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t itemsize):
    """Steps per hand-over to a helper thread in a call of these sizes (0: no helper), under
    the current rule and BLAS thread count."""
    return _overlap_chunk(_step_kind(B, H, itemsize), T, B, D, H)


def split_panels(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                  Py_ssize_t itemsize):
    """Column panels of every step a forward of these sizes shares between its two threads
    (0: no split), under the current rules and BLAS thread count."""
    cdef Overlap job
    cdef int kind = _step_kind(B, H, itemsize)
    job.T, job.B, job.H = T, B, H
    if _overlap_chunk(kind, T, B, D, H) == 0 or not _split_columns(&job, kind, itemsize):
        return 0
    return job.split_panels


# ---- tuning: the size rules (tuning.h), read and changed from Python ---------------------------

STEP_PRODUCTS = ("auto", "blas", "small", "panel")  # step_product's values, RF_PRODUCT_*
OVERLAP_MODES = ("auto", "off", "on")  # overlap's values, RF_OVERLAP_*
_CHOICES = {"step_product": STEP_PRODUCTS, "overlap": OVERLAP_MODES}
# Divisors must not be zero; every other field may be 0 (e.g. "never" for a minimum).
_MINIMUM = {"overlap_chunk_rows": 1, "split_chunk_rows": 1}


cdef dict _tuning_dict(rf_tuning tuning):
    cdef dict fields = tuning
    for name, choices in _CHOICES.items():
        fields[name] = choices[fields[name]]
    return fields


DEFAULT_TUNING = _tuning_dict(rf_tuning_defaults)


def get_tuning():
    """The size rules in force, as a dict of every field (see DEFAULT_TUNING for the names).

    ``step_product`` ("auto", "blas", "small" or "panel") and ``overlap`` ("auto", "off" or
    "on") are names; the other fields are int thresholds (docs/design/kernels.md).
    """
    return _tuning_dict(rf_tuning_now)


def set_tuning(**fields):
    """Change some size rules, process-wide; returns the previous values of the fields given.

    ``step_product``: "auto" (the measured rule) or one product for every time step ("small"
    only where H fits it; BLAS elsewhere). ``overlap``: "auto", "off" or "on" (a helper thread
    whenever the steps use the kernels' own products and T spans two chunks). Every other
    field is an int >= 0 (``overlap_chunk_rows`` and ``split_chunk_rows`` >= 1). Raises
    TypeError for an unknown field or a value of the wrong type, ValueError for a value out
    of range; then nothing changes.
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
    global rf_tuning_now
    rf_tuning_now = new
    return previous


@contextlib.contextmanager
def tuned(**fields):
    """``with tuned(step_product="panel"): ...``: set_tuning for the block, restored after."""
    previous = set_tuning(**fields)
    try:
        yield
    finally:
        set_tuning(**previous)


# ---------------------------------------------------------------------------------------------
# One step of a stack of layers, for streaming inference: called once per time step from
# Python, so per-call overhead is what counts. The checks are C-level; anything that is not
# already exactly right (dtype, contiguity, shapes) returns None, and functional.rnn_step then
# takes the general path, which converts or raises a clear error.


cdef inline bint _ready(object a, int typenum, int ndim):
    """An ndarray of exactly this dtype and rank, C-contiguous, aligned, native byte order."""
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline void* _data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t _dim(object a, int i) noexcept:
    return cnp.PyArray_DIM(<cnp.ndarray>a, i)


cdef void _step_layer(floating* out, const floating* inp, const floating* h_prev,
                      const floating* w_ih, const floating* w_hh, const floating* b_ih,
                      const floating* b_hh, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                      int act) noexcept nogil:
    """out (B, H) = act(inp @ w_ih.T + h_prev @ w_hh.T + b_hh + b_ih).

    ``h_prev`` NULL means zeros; ``b_hh`` and ``b_ih`` NULL mean no bias.
    """
    cdef Py_ssize_t r, i
    if B <= rf_tuning_now.step_dot_max_batch:
        if floating is float:
            rnnfast_simd.step_dot_f32(out, inp, w_ih, D, h_prev, w_hh, H, b_hh, B, H)
        else:
            rnnfast_simd.step_dot_f64(out, inp, w_ih, D, h_prev, w_hh, H, b_hh, B, H)
    else:
        for r in range(B):
            for i in range(H):
                out[r * H + i] = 0 if b_hh == NULL else b_hh[i]
        _bulk_gemm(NoTrans, Trans, B, H, D, <floating>1, inp, D, w_ih, D, <floating>1, out, H)
        if h_prev != NULL:
            _bulk_gemm(NoTrans, Trans, B, H, H, <floating>1, h_prev, H, w_hh, H, <floating>1,
                       out, H)
    _bias_act(out, b_ih, B, H, H, act)


cdef bint _step_stack(floating* dummy, object x, object h, tuple params, int act,
                      cnp.ndarray h_new) except -1:
    """Check every operand of a stack step at C level and run it; False: not fast-path ready."""
    cdef int typenum = cnp.NPY_FLOAT if floating is float else cnp.NPY_DOUBLE
    cdef Py_ssize_t L = len(params), B = _dim(x, 0), D = _dim(x, 1), H = _dim(h_new, 2)
    cdef Py_ssize_t k, d_in = D, macs = 0
    cdef tuple layer
    cdef object w_ih, w_hh, b_ih, b_hh
    # Check everything before computing anything.
    for k in range(L):
        if type(params[k]) is not tuple:
            return False
        layer = <tuple>params[k]
        if len(layer) != 4:
            return False
        w_ih, w_hh, b_ih, b_hh = layer
        if not (_ready(w_ih, typenum, 2) and _ready(w_hh, typenum, 2)):
            return False
        if _dim(w_ih, 0) != H or _dim(w_ih, 1) != d_in or _dim(w_hh, 0) != H or _dim(w_hh, 1) != H:
            return False
        if (b_ih is None) != (b_hh is None):
            return False
        if b_ih is not None and not (_ready(b_ih, typenum, 1) and _ready(b_hh, typenum, 1)
                                     and _dim(b_ih, 0) == H and _dim(b_hh, 0) == H):
            return False
        macs += B * H * (d_in + H)
        d_in = H
    if h is not None and not (_ready(h, typenum, 3) and _dim(h, 0) == L and _dim(h, 1) == B
                              and _dim(h, 2) == H):
        return False

    cdef floating* out = <floating*>_data(h_new)
    cdef const floating* inp = <const floating*>_data(x)
    cdef const floating* h_ptr = NULL if h is None else <const floating*>_data(h)
    cdef const floating* b_ih_ptr
    cdef const floating* b_hh_ptr
    cdef const floating* w_ih_ptr
    cdef const floating* w_hh_ptr
    cdef const floating* h_prev
    d_in = D
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = params[k]
        b_ih_ptr = NULL if b_ih is None else <const floating*>_data(b_ih)
        b_hh_ptr = NULL if b_hh is None else <const floating*>_data(b_hh)
        w_ih_ptr = <const floating*>_data(w_ih)
        w_hh_ptr = <const floating*>_data(w_hh)
        h_prev = NULL if h_ptr == NULL else h_ptr + k * B * H
        if macs >= rf_tuning_now.step_nogil_min_macs:
            with nogil:
                _step_layer(out + k * B * H, inp, h_prev, w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr,
                            B, d_in, H, act)
        else:
            _step_layer(out + k * B * H, inp, h_prev, w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr,
                        B, d_in, H, act)
        inp = out + k * B * H
        d_in = H
    return True


def rnn_step(x, h, tuple params, str nonlinearity):
    """One step of a stack of layers: (output (B, H), a copy of h_new[-1]; h_new (L, B, H)),
    or None.

    x (B, D); h (L, B, H) or None for zeros; params: per layer (w_ih, w_hh, b_ih, b_hh) with
    both biases None for no bias. None means an operand is not exactly a C-contiguous array of
    the right dtype and shape: the caller must take the validating path.
    """
    return _rnn_step(x, h, params, _activation_code(nonlinearity))


cdef object _rnn_step(x, h, tuple params, int act):
    cdef Py_ssize_t L = len(params)
    if L == 0 or not (_ready(x, cnp.NPY_FLOAT, 2) or _ready(x, cnp.NPY_DOUBLE, 2)):
        return None
    first = params[0]
    if type(first) is not tuple or len(<tuple>first) != 4:
        return None
    w_hh0 = (<tuple>first)[1]
    if not cnp.PyArray_CheckExact(w_hh0) or cnp.PyArray_NDIM(<cnp.ndarray>w_hh0) != 2:
        return None
    cdef Py_ssize_t B = _dim(x, 0), H = _dim(w_hh0, 0)
    if B == 0 or H == 0 or _dim(x, 1) == 0:
        return None
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = L, B, H
    # C-API allocations, not np.empty and a slice: no Python-level calls per step.
    h_new = cnp.PyArray_EMPTY(3, dims, typenum, 0)
    output = cnp.PyArray_EMPTY(2, &dims[1], typenum, 0)
    if typenum == cnp.NPY_FLOAT:
        ok = _step_stack[float](NULL, x, h, params, act, h_new)
    else:
        ok = _step_stack[double](NULL, x, h, params, act, h_new)
    if not ok:
        return None
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(<cnp.ndarray>x)
    memcpy(cnp.PyArray_DATA(<cnp.ndarray>output),
           <char*>cnp.PyArray_DATA(<cnp.ndarray>h_new) + (L - 1) * B * H * itemsize,
           B * H * itemsize)
    return output, h_new


# ---------------------------------------------------------------------------------------------
# Plain-array entry points: rnn_forward / rnn_backward for arguments that are already exactly
# what the kernels need, checked at C level in about a microsecond. They return None for
# anything else (a conversion, a copy, an error message or an empty size is needed), and
# functional.py then takes its validating path; they never raise for bad arguments.

cdef inline bint _shaped(object a, int typenum, Py_ssize_t d0, Py_ssize_t d1=-1,
                         Py_ssize_t d2=-1):
    """_ready, with the given dimensions (-1 ends the shape)."""
    cdef int ndim = 1 if d1 < 0 else 2 if d2 < 0 else 3
    if not _ready(a, typenum, ndim) or _dim(a, 0) != d0:
        return False
    return (ndim < 2 or _dim(a, 1) == d1) and (ndim < 3 or _dim(a, 2) == d2)


cdef int _plain_sizes(object x, object h0, object w_ih, object w_hh, Py_ssize_t blas_int_max,
                     Py_ssize_t* sizes):
    """Check x, h0, w_ih, w_hh; fill sizes = (T, B, D, H); return the dtype's typenum or -1."""
    cdef int typenum
    if _ready(x, cnp.NPY_FLOAT, 3):
        typenum = cnp.NPY_FLOAT
    elif _ready(x, cnp.NPY_DOUBLE, 3):
        typenum = cnp.NPY_DOUBLE
    else:
        return -1
    if not _ready(w_ih, typenum, 2):
        return -1
    cdef Py_ssize_t T = _dim(x, 0), B = _dim(x, 1), D = _dim(x, 2), H = _dim(w_ih, 0)
    if T == 0 or B == 0 or D == 0 or H == 0 or _dim(w_ih, 1) != D:
        return -1
    if not _shaped(w_hh, typenum, H, H) or not (h0 is None or _shaped(h0, typenum, B, H)):
        return -1
    # The BLAS integer limit (functional._check_blas_sizes words the error).
    if max(T * B, H) * max(D, H) > blas_int_max:
        return -1
    sizes[0], sizes[1], sizes[2], sizes[3] = T, B, D, H
    return typenum


def rnn_forward_plain(x, h0, w_ih, w_hh, b, nonlinearity, Py_ssize_t blas_int_max):
    """rnn_forward if every argument is plain (see above), else None."""
    cdef Py_ssize_t sizes[4]
    cdef int typenum = _plain_sizes(x, h0, w_ih, w_hh, blas_int_max, sizes)
    if typenum < 0 or not (b is None or _shaped(b, typenum, sizes[3])):
        return None
    return rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity)


def rnn_backward_plain(dh, x, h0, h, w_ih, w_hh, nonlinearity, Py_ssize_t blas_int_max):
    """rnn_backward if every argument is plain (see above), else None."""
    cdef Py_ssize_t sizes[4]
    cdef int typenum = _plain_sizes(x, h0, w_ih, w_hh, blas_int_max, sizes)
    if typenum < 0:
        return None
    if not (_shaped(h, typenum, sizes[0], sizes[1], sizes[3])
            and _shaped(dh, typenum, sizes[0], sizes[1], sizes[3])):
        return None
    return rnn_backward(dh, x, h0, h, w_ih, w_hh, nonlinearity)
