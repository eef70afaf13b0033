/* SIMD dispatch: the instruction-set levels, CPU detection and the table of vector loops.
 *
 * The wheel is built for baseline x86-64 (no -march=native), so the loops are compiled three
 * times, for AVX-512 (F, VL, BW, DQ), AVX2 + FMA and the build's baseline, and
 * rnnfast_simd_select() picks the widest the CPU has, once, at import. Elsewhere (non-x86 or
 * non-GCC compilers) only the baseline exists.
 */
#ifndef RNNFAST_SIMD_H
#define RNNFAST_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RF_PASTE2(a, b) a##b
#define RF_PASTE(a, b) RF_PASTE2(a, b)
#define RF(name) RF_PASTE(name, RF_SUFFIX)

/* The panel product's panels are this many vectors wide at every level (simd_panel.h). */
#define RF_PANEL_NR 3

#if defined(__x86_64__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RNNFAST_X86_DISPATCH 1
#endif

#define RF_TARGET_HEADER "simd_target.h"
#include "simd_levels.h"
#undef RF_TARGET_HEADER

typedef struct {
    const char *name;
    /* a (rows, n), rows ld apart, = act(a + b) */
    void (*bias_act_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
    void (*bias_act_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
    void (*mul_act_grad_f32)(float *, const float *, ptrdiff_t, int);
    void (*mul_act_grad_f64)(double *, const double *, ptrdiff_t, int);
    /* sums (n) += the column sums of a (rows, n) */
    void (*add_col_sums_f32)(float *, const float *, ptrdiff_t, ptrdiff_t);
    void (*add_col_sums_f64)(double *, const double *, ptrdiff_t, ptrdiff_t);
    /* out (rows, n) += a (rows, k) @ m (k, n): m rows of stride ldm, its last k_tail rows
     * zero-padded to whole vectors in `tail`; see simd_small.h */
    void (*small_addmm_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                            const float *, ptrdiff_t, const float *, ptrdiff_t, float *);
    void (*small_addmm_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                            const double *, ptrdiff_t, const double *, ptrdiff_t, double *);
    /* dst (k, ld) = src (n, k).T zero-padded; out (rows, n) += a (rows, k) @ m (k, n) with m's
     * rows ld apart, in column slices; see simd_small.h */
    void (*transpose_pad_f32)(float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t);
    void (*transpose_pad_f64)(double *, ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t);
    void (*sliced_addmm_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                             const float *, ptrdiff_t, float *);
    void (*sliced_addmm_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                             const double *, ptrdiff_t, double *);
    void (*step_dot_f32)(float *, const float *, const float *, ptrdiff_t, const float *,
                         const float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t);
    void (*step_dot_f64)(double *, const double *, const double *, ptrdiff_t, const double *,
                         const double *, ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t);
    /* out (rows, n) += a (rows, k) @ m (k, n), m packed into column panels by pack_panels
     * (dst, src, k, n, ld, transposed); see simd_panel.h */
    void (*panel_addmm_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                            const float *, float *, ptrdiff_t, ptrdiff_t);
    void (*panel_addmm_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                            const double *, double *, ptrdiff_t, ptrdiff_t);
    void (*pack_panels_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
    void (*pack_panels_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
    /* the LSTM forward's gate panels: pack (dst, w_hh, k, units) and the product of unit blocks
     * u0 .. u1 - 1 (out, a, rows, k, units, packed, stage, u0, u1); see simd_panel.h */
    void (*pack_gate_panels_f32)(float *, const float *, ptrdiff_t, ptrdiff_t);
    void (*pack_gate_panels_f64)(double *, const double *, ptrdiff_t, ptrdiff_t);
    void (*panel_gates_addmm_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                  const float *, float *, ptrdiff_t, ptrdiff_t);
    void (*panel_gates_addmm_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                  const double *, double *, ptrdiff_t, ptrdiff_t);
    /* out (n) = sigmoid(in (n)); out may be in */
    void (*sigmoid_f32)(float *, const float *, ptrdiff_t);
    void (*sigmoid_f64)(double *, const double *, ptrdiff_t);
    /* the LSTM cell's pointwise forward and backward (simd_elementwise.h) */
    void (*lstm_forward_f32)(float *, const float *, const float *, float *, float *, ptrdiff_t,
                             ptrdiff_t, ptrdiff_t, ptrdiff_t);
    void (*lstm_forward_f64)(double *, const double *, const double *, double *, double *,
                             ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
    void (*lstm_backward_f32)(float *, const float *, float *, const float *, const float *,
                              const float *, const float *, ptrdiff_t, ptrdiff_t);
    void (*lstm_backward_f64)(double *, const double *, double *, const double *, const double *,
                              const double *, const double *, ptrdiff_t, ptrdiff_t);
    /* GRU pointwise (simd_gru.h): forward (g, gh, bx, bhn, h_prev, out, ws, rows, H) and
     * backward (d, ws in place, h_prev, da_h, rows, H) */
    void (*gru_forward_f32)(const float *, const float *, const float *, const float *,
                            const float *, float *, float *, ptrdiff_t, ptrdiff_t);
    void (*gru_forward_f64)(const double *, const double *, const double *, const double *,
                            const double *, double *, double *, ptrdiff_t, ptrdiff_t);
    void (*gru_backward_f32)(float *, float *, const float *, float *, ptrdiff_t, ptrdiff_t);
    void (*gru_backward_f64)(double *, double *, const double *, double *, ptrdiff_t,
                             ptrdiff_t);
    /* the GRU forward's gate panels: pack (dst, w_hh, k, units, gates = 3) and a step's unit
     * blocks u0 .. u1 - 1, product and pointwise (g, ldg, bx, bhn, h_prev, out, ws, rows, H,
     * packed, u0, u1); see simd_panel.h */
    void (*pack_unit_panels_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, int);
    void (*pack_unit_panels_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, int);
    void (*gru_panel_forward_f32)(const float *, ptrdiff_t, const float *, const float *,
                                  const float *, float *, float *, ptrdiff_t, ptrdiff_t,
                                  const float *, ptrdiff_t, ptrdiff_t);
    void (*gru_panel_forward_f64)(const double *, ptrdiff_t, const double *, const double *,
                                  const double *, double *, double *, ptrdiff_t, ptrdiff_t,
                                  const double *, ptrdiff_t, ptrdiff_t);
    ptrdiff_t vector_bytes; /* the small product pads its columns to whole vectors */
    ptrdiff_t max_vectors;  /* ... and holds at most this many per row in registers */
    ptrdiff_t panel_vectors; /* a panel is this many vectors wide */
    ptrdiff_t panel_rows;    /* ... and the panel product's register block this many rows */
} rnnfast_simd_t;

#define RF_LEVEL(SFX, NAME, VBYTES, NV_MAX, PANEL_ROWS)                                          \
    {NAME, bias_act_f32##SFX, bias_act_f64##SFX, mul_act_grad_f32##SFX, mul_act_grad_f64##SFX, \
     add_col_sums_f32##SFX, add_col_sums_f64##SFX,                                             \
     small_addmm_f32##SFX, small_addmm_f64##SFX, transpose_pad_f32##SFX,                      \
     transpose_pad_f64##SFX, sliced_addmm_f32##SFX, sliced_addmm_f64##SFX,                     \
     step_dot_f32##SFX, step_dot_f64##SFX,                                                     \
     panel_addmm_f32##SFX, panel_addmm_f64##SFX, pack_panels_f32##SFX, pack_panels_f64##SFX,   \
     pack_gate_panels_f32##SFX, pack_gate_panels_f64##SFX, panel_gates_addmm_f32##SFX,        \
     panel_gates_addmm_f64##SFX,                                                               \
     sigmoid_array_f32##SFX, sigmoid_array_f64##SFX,                                           \
     lstm_forward_f32##SFX, lstm_forward_f64##SFX, lstm_backward_f32##SFX,                     \
     lstm_backward_f64##SFX,                                                                   \
     gru_forward_f32##SFX, gru_forward_f64##SFX, gru_backward_f32##SFX, gru_backward_f64##SFX, \
     pack_unit_panels_f32##SFX, pack_unit_panels_f64##SFX, gru_panel_forward_f32##SFX,        \
     gru_panel_forward_f64##SFX,                                                               \
     VBYTES, NV_MAX, RF_PANEL_NR, PANEL_ROWS}

/* Index = level: 0 baseline, 1 AVX2 + FMA, 2 AVX-512. */
static const rnnfast_simd_t rnnfast_simd_levels[] = {
    RF_LEVEL(_base, "baseline", 16, 12, 4),
#ifdef RNNFAST_X86_DISPATCH
    RF_LEVEL(_avx2, "avx2", 32, 12, 4),
    RF_LEVEL(_avx512, "avx512", 64, 16, 8),
#endif
};
#define RNNFAST_SIMD_NLEVELS ((int)(sizeof rnnfast_simd_levels / sizeof rnnfast_simd_levels[0]))

static const rnnfast_simd_t *rnnfast_simd = &rnnfast_simd_levels[0];

/* Can this CPU run `level`? */
static int rnnfast_simd_supported(int level)
{
    if (level < 0 || level >= RNNFAST_SIMD_NLEVELS) return 0;
#ifdef RNNFAST_X86_DISPATCH
    __builtin_cpu_init();
    if (level >= 1 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return 0;
    if (level >= 2 && !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")))
        return 0;
#endif
    return 1;
}

/* Use `level` (-1: the widest supported). Returns the level in use, or -1 if unsupported. */
static int rnnfast_simd_select(int level)
{
    if (level < 0) {
        for (level = RNNFAST_SIMD_NLEVELS - 1; level > 0 && !rnnfast_simd_supported(level); level--)
            ;
    }
    if (!rnnfast_simd_supported(level)) return -1;
    rnnfast_simd = &rnnfast_simd_levels[level];
    return level;
}

#endif /* RNNFAST_SIMD_H */
