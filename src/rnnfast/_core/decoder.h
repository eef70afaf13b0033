/* The softmax cross-entropy passes of a language model's decoder (kernels.pyx, its last
 * section), compiled once per instruction set as simd.h compiles its loops, and picked at the
 * level simd.h selected. Kept out of simd.h's table so that its job headers stay as they are.
 */
#ifndef RNNFAST_DECODER_H
#define RNNFAST_DECODER_H

#include "simd.h"

#define RF_TARGET_HEADER "decoder_target.h"
#include "simd_levels.h"
#undef RF_TARGET_HEADER

typedef struct {
    double (*xent_f32)(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const int64_t *,
                       float);
    double (*xent_f64)(double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *,
                       const int64_t *, double);
    void (*row_sums_f32)(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t);
    void (*row_sums_f64)(double *, const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t);
} rf_decoder_t;

#define RF_DECODER_LEVEL(SFX)                                                                    \
    {softmax_xent_f32##SFX, softmax_xent_f64##SFX, row_sums_f32##SFX, row_sums_f64##SFX}

/* Index = simd.h's level: 0 baseline, 1 AVX2 + FMA, 2 AVX-512. */
static const rf_decoder_t rf_decoder_levels[] = {
    RF_DECODER_LEVEL(_base),
#ifdef RNNFAST_X86_DISPATCH
    RF_DECODER_LEVEL(_avx2),
    RF_DECODER_LEVEL(_avx512),
#endif
};

static inline const rf_decoder_t *rf_decoder(void)
{
    return &rf_decoder_levels[rnnfast_simd - rnnfast_simd_levels];
}

/* z (V, n), rows ld apart, the logits of n columns (one column per example) -> the gradient of
 * the loss `scale * sum of the columns' cross-entropies` (softmax minus one at the target, times
 * scale), in place, after adding bias (V) (NULL: none) to every column; returns the sum of the n
 * columns' cross-entropies, log(sum exp z) - z[target]. */
static inline double rf_softmax_xent_f32(float *z, ptrdiff_t ld, ptrdiff_t V, ptrdiff_t n,
                                         const float *bias, const int64_t *targets, float scale)
{
    return rf_decoder()->xent_f32(z, ld, V, n, bias, targets, scale);
}
static inline double rf_softmax_xent_f64(double *z, ptrdiff_t ld, ptrdiff_t V, ptrdiff_t n,
                                         const double *bias, const int64_t *targets, double scale)
{
    return rf_decoder()->xent_f64(z, ld, V, n, bias, targets, scale);
}
/* out[r] = the sum of row r of a (rows, n), rows ld apart, in an order fixed by n alone. */
static inline void rf_row_sums_f32(float *out, const float *a, ptrdiff_t rows, ptrdiff_t n,
                                   ptrdiff_t ld)
{
    rf_decoder()->row_sums_f32(out, a, rows, n, ld);
}
static inline void rf_row_sums_f64(double *out, const double *a, ptrdiff_t rows, ptrdiff_t n,
                                   ptrdiff_t ld)
{
    rf_decoder()->row_sums_f64(out, a, rows, n, ld);
}

#endif /* RNNFAST_DECODER_H */
