/* The size rules of the compiled kernels, in one struct.
 *
 * Every threshold by which a call chooses its per-step product, a helper thread, a split of
 * the steps' columns, one BLAS thread, or the streaming step's product. kernels.pyx reads the
 * one instance `rf_tuning_now`; Python changes it only through kernels.get_tuning /
 * set_tuning / tuned (tests and bench/tune_*.py). The defaults below were measured on a
 * two-core AVX-512 machine; docs/design/kernels.md gives the figures and the commands.
 * Sizes are in multiply-adds (MACs), bytes, rows (steps * batch) or batch rows, as named.
 */
#ifndef RNNFAST_TUNING_H
#define RNNFAST_TUNING_H

#include <stddef.h>

/* step_product: "auto" applies the rule; the others force one product for every step. */
enum { RF_PRODUCT_AUTO = 0, RF_PRODUCT_BLAS = 1, RF_PRODUCT_SMALL = 2, RF_PRODUCT_PANEL = 3 };
/* overlap: "auto" applies the rule; "on" starts a helper whenever the steps use our own
 * products and T spans two chunks, whatever the size or BLAS thread count. */
enum { RF_OVERLAP_AUTO = 0, RF_OVERLAP_OFF = 1, RF_OVERLAP_ON = 2 };

typedef struct {
    /* which product the recurrent step uses (kernels.pyx, _step_kind) */
    int step_product;
    ptrdiff_t small_max_weight_bytes;    /* small product at B = 1 while w_hh is this small */
    ptrdiff_t small_max_batch;           /* ... and at B up to this */
    ptrdiff_t small_max_vectors_batched; /* ... when a row of h is at most this many vectors */
    ptrdiff_t panel_min_batch;           /* panel product from this batch */
    ptrdiff_t panel_max_batch;           /* ... up to this one */
    ptrdiff_t panel_max_step_bytes;      /* ... while B * H * H * itemsize is at most this */
    ptrdiff_t panel_helped_max_batch;    /* with a helper thread: up to this batch */
    ptrdiff_t panel_helped_max_weight_bytes; /* ... while w_hh is at most this */
    /* one BLAS thread below these sizes */
    ptrdiff_t serial_step_max_macs;      /* a BLAS step's product, B * H * H */
    ptrdiff_t serial_gemm_max_macs;      /* a GEMM before or after the time loop */
    /* the helper thread beside the time loop (threads.h) */
    int overlap;
    ptrdiff_t overlap_chunk_rows;        /* rows per hand-over */
    ptrdiff_t overlap_min_macs;          /* no helper below T * B * H * (D + H) */
    ptrdiff_t overlap_take_next_min_macs; /* the loop projects the next chunk from this a chunk */
    ptrdiff_t overlap_single_steps;      /* a batch of one below overlap_min_macs: chunks of */
    ptrdiff_t overlap_single_min_macs;   /* ... these many steps, from this many MACs, helper or not */
    ptrdiff_t split_min_step_macs;       /* forward split from B * H * H ... */
    ptrdiff_t split_small_max_batch;     /* ... or an eighth of it at batches up to this */
    ptrdiff_t split_small_min_hidden;    /* ... with H at least this */
    ptrdiff_t split_chunk_rows;          /* the split's projection, in chunks of these rows */
    ptrdiff_t prefetch_max_step_bytes;   /* prefetch the helper's rows while a step is this */
    /* the streaming step (rnn_step) */
    ptrdiff_t step_dot_max_batch;        /* dot-form product up to this batch, then GEMM */
    ptrdiff_t step_sliced_max_weight_bytes; /* a time loop's batch of one: w_hh.T in slices */
    ptrdiff_t step_nogil_min_macs;       /* release the GIL from this many MACs a step */
} rf_tuning;

#define RF_TUNING_DEFAULTS                                                                       \
    {                                                                                            \
        .step_product = RF_PRODUCT_AUTO,                                                         \
        .small_max_weight_bytes = (ptrdiff_t)1 << 17,                                            \
        .small_max_batch = 32,                                                                   \
        .small_max_vectors_batched = 4,                                                          \
        .panel_min_batch = 4,                                                                    \
        .panel_max_batch = 32,                                                                   \
        .panel_max_step_bytes = (ptrdiff_t)1 << 25,                                              \
        .panel_helped_max_batch = 256,                                                           \
        /* 64 MiB: the H = 1024 gated rows too (w_hh 16 MiB LSTM, 12 MiB GRU in f32), whose  \
         * BLAS steps repack w_hh every step: 2-4x faster under load, the same idle            \
         * (python bench/experiments/panel_weight_ab.py; docs/measurements/gated-modes.md) */ \
        .panel_helped_max_weight_bytes = (ptrdiff_t)1 << 26,                                     \
        .serial_step_max_macs = (ptrdiff_t)1 << 20,                                              \
        .serial_gemm_max_macs = (ptrdiff_t)1 << 24,                                              \
        .overlap = RF_OVERLAP_AUTO,                                                              \
        .overlap_chunk_rows = 48,                                                                \
        .overlap_min_macs = (ptrdiff_t)1 << 22,                                                  \
        /* a loop that caught up with the helper projects the next chunk as it waits, where    \
         * a chunk (chunk * B * G*H * D MACs) is this large: GRU inference 50,64,1024,1024    \
         * 1.20x, LSTM proj 1.13x faster; below, no gain (bench/experiments/take_next_ab.py) */ \
        .overlap_take_next_min_macs = (ptrdiff_t)1 << 24,                                        \
        /* a batch of one: a helper takes the GEMMs around the loop in chunks of 8 steps from   \
         * 2^20 MACs (LSTM and GRU 25,1,65,100: bench/experiments/single_row_ab.py) */          \
        .overlap_single_steps = 8,                                                               \
        .overlap_single_min_macs = (ptrdiff_t)1 << 20,                                           \
        .split_min_step_macs = (ptrdiff_t)1 << 22,                                               \
        .split_small_max_batch = 16,                                                             \
        .split_small_min_hidden = 256,                                                           \
        .split_chunk_rows = 512,                                                                 \
        .prefetch_max_step_bytes = 16384,                                                        \
        .step_dot_max_batch = 16,                                                                \
        /* up to 1 MiB (L2): the forward's steps read w_hh.T in slices instead of the dot form  \
         * (bench/experiments/sliced_step.c, single_row_ab.py; simd_small.h) */                 \
        .step_sliced_max_weight_bytes = (ptrdiff_t)1 << 20,                                      \
        .step_nogil_min_macs = 65536                                                             \
    }

static const rf_tuning rf_tuning_defaults = RF_TUNING_DEFAULTS;
/* The rules in force: process-wide, like the SIMD level. */
static rf_tuning rf_tuning_now = RF_TUNING_DEFAULTS;

#endif /* RNNFAST_TUNING_H */
