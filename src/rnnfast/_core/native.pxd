# C declarations of the compiled core's headers, for kernels.pyx:
#   simd.h      the SIMD level in use and its table of vector loops (one per job header)
#   threads.h   the helper thread beside a time loop, its counters, one-BLAS-thread sections
#   tuning.h    the size rules (one struct; kernels.get_tuning / set_tuning change it)
from libc.stdint cimport uint64_t


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
        # dst (k, ld) = src (n, k).T zero-padded; out (rows, n) += a (rows, k) @ m (k, n), m's
        # rows ld apart, in column slices (see simd_small.h)
        void (*transpose_pad_f32)(float*, Py_ssize_t, const float*, Py_ssize_t,
                                  Py_ssize_t) noexcept nogil
        void (*transpose_pad_f64)(double*, Py_ssize_t, const double*, Py_ssize_t,
                                  Py_ssize_t) noexcept nogil
        void (*sliced_addmm_f32)(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 const float*, Py_ssize_t, float*) noexcept nogil
        void (*sliced_addmm_f64)(double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 const double*, Py_ssize_t, double*) noexcept nogil
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
        # the LSTM forward's gate panels: pack_gate_panels(dst, w_hh, k, units) and the product
        # of unit blocks u0 .. u1 - 1: (out, a, rows, k, units, packed, stage, u0, u1)
        void (*pack_gate_panels_f32)(float*, const float*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*pack_gate_panels_f64)(double*, const double*, Py_ssize_t,
                                     Py_ssize_t) noexcept nogil
        void (*panel_gates_addmm_f32)(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                      const float*, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*panel_gates_addmm_f64)(double*, const double*, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, const double*, double*, Py_ssize_t,
                                      Py_ssize_t) noexcept nogil
        # out (n) = sigmoid(in (n)); out may be in
        void (*sigmoid_f32)(float*, const float*, Py_ssize_t) noexcept nogil
        void (*sigmoid_f64)(double*, const double*, Py_ssize_t) noexcept nogil
        # the LSTM cell's pointwise parts (simd_elementwise.h):
        # forward(gates (rows, 4H) in place, bias (4H) or NULL, c_prev (rows, H) or NULL,
        #         c, h (rows, H), rows, H, j0, j1): units j0 .. j1 - 1 of each row
        void (*lstm_forward_f32)(float*, const float*, const float*, float*, float*, Py_ssize_t,
                                 Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*lstm_forward_f64)(double*, const double*, const double*, double*, double*,
                                 Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
        # backward(dgates (rows, 4H), dh (rows, H), dc carry (rows, H) in/out, dc_ext or NULL,
        #          act (rows, 4H), c, c_prev or NULL, rows, H)
        void (*lstm_backward_f32)(float*, const float*, float*, const float*, const float*,
                                  const float*, const float*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*lstm_backward_f64)(double*, const double*, double*, const double*, const double*,
                                  const double*, const double*, Py_ssize_t,
                                  Py_ssize_t) noexcept nogil
        # GRU pointwise (simd_gru.h): forward(g, gh, bx, bhn, h_prev, out, ws, rows, H),
        # backward(d, ws in place, h_prev, da_h, rows, H)
        void (*gru_forward_f32)(const float*, const float*, const float*, const float*,
                                const float*, float*, float*, Py_ssize_t,
                                Py_ssize_t) noexcept nogil
        void (*gru_forward_f64)(const double*, const double*, const double*, const double*,
                                const double*, double*, double*, Py_ssize_t,
                                Py_ssize_t) noexcept nogil
        void (*gru_backward_f32)(float*, float*, const float*, float*, Py_ssize_t,
                                 Py_ssize_t) noexcept nogil
        void (*gru_backward_f64)(double*, double*, const double*, double*, Py_ssize_t,
                                 Py_ssize_t) noexcept nogil
        # the GRU forward's gate panels (simd_panel.h): pack_unit_panels(dst, w_hh, k, units,
        # gates) and gru_panel_forward(g, ldg, bx, bhn, h_prev, out, ws, rows, H, packed, u0,
        # u1): unit blocks u0 .. u1 - 1 of a step, product and pointwise
        void (*pack_unit_panels_f32)(float*, const float*, Py_ssize_t, Py_ssize_t,
                                     int) noexcept nogil
        void (*pack_unit_panels_f64)(double*, const double*, Py_ssize_t, Py_ssize_t,
                                     int) noexcept nogil
        void (*gru_panel_forward_f32)(const float*, Py_ssize_t, const float*, const float*,
                                      const float*, float*, float*, Py_ssize_t, Py_ssize_t,
                                      const float*, Py_ssize_t, Py_ssize_t) noexcept nogil
        void (*gru_panel_forward_f64)(const double*, Py_ssize_t, const double*, const double*,
                                      const double*, double*, double*, Py_ssize_t, Py_ssize_t,
                                      const double*, Py_ssize_t, Py_ssize_t) noexcept nogil
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
    bint rf_thread_join_or_cancel(rf_thread* thread)
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
    ctypedef void (*rf_step_fn)(void*) noexcept nogil
    Py_ssize_t rf_step_post(rf_step_fn fn, void* arg)
    bint rf_step_finish(Py_ssize_t job, uint64_t* waited_ns)
    uint64_t rf_clock_ns()
    ctypedef int (*rf_set_threads_fn)(int) noexcept nogil
    ctypedef int (*rf_get_threads_fn)() noexcept nogil
    void rf_use_blas_threads(rf_set_threads_fn set_threads, rf_get_threads_fn get_threads)
    void rf_serial_enter()
    void rf_serial_leave()
    int rf_blas_threads()
    void rf_blas_set_outside(int n)
    # what the process lets rnnfast use, calls in flight, the BLAS gate (exit and fork)
    int rf_available_cpus
    Py_ssize_t rf_calls
    Py_ssize_t rf_helpers_started
    Py_ssize_t rf_helpers_declined
    Py_ssize_t rf_helpers_late
    Py_ssize_t rf_helper_skip
    Py_ssize_t rf_helper_backoff
    Py_ssize_t rf_helpers_stepped_aside
    Py_ssize_t rf_chunks_projected_ahead
    bint rf_crowded()
    bint rf_wait_uncrowded(Py_ssize_t* counter, Py_ssize_t value)
    Py_ssize_t rf_call_enter()
    void rf_call_leave()
    void rf_blas_call_begin()
    void rf_blas_call_end()

cdef extern from "tuning.h" nogil:
    enum:
        RF_PRODUCT_AUTO
        RF_PRODUCT_BLAS
        RF_PRODUCT_SMALL
        RF_PRODUCT_PANEL
        RF_OVERLAP_AUTO
        RF_OVERLAP_OFF
        RF_OVERLAP_ON
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
        Py_ssize_t overlap_take_next_min_macs
        Py_ssize_t overlap_single_steps
        Py_ssize_t overlap_single_min_macs
        Py_ssize_t split_min_step_macs
        Py_ssize_t split_small_max_batch
        Py_ssize_t split_small_min_hidden
        Py_ssize_t split_chunk_rows
        Py_ssize_t prefetch_max_step_bytes
        Py_ssize_t step_dot_max_batch
        Py_ssize_t step_sliced_max_weight_bytes
        Py_ssize_t step_nogil_min_macs
    const rf_tuning rf_tuning_defaults
    rf_tuning rf_tuning_now
