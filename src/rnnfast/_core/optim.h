/* The optimizers' elementwise updates over a flat parameter buffer (kernels.pyx, the optimizer
 * section): one pass, where NumPy takes a dozen. Each element goes through the same operations,
 * in the same order and the same precision, as rnnfast.train.optim's NumPy update, so the
 * results are the same bits: no contraction into fused multiply-adds (the attribute below), and
 * sqrt and division correctly rounded, as NumPy's.
 */
#ifndef RNNFAST_OPTIM_H
#define RNNFAST_OPTIM_H

#include "simd.h"

/* Adam (no weight decay): m = m * b1 + g * c1; v = v * b2 + (g * c2) * g;
 * p -= (m * s) / (sqrt(v) / d + eps), with c1 = 1 - b1, c2 = 1 - b2, d = sqrt(1 - b2^t) and
 * s = lr / (1 - b1^t), all rounded to T by the caller. */
#define RF_ADAM(T, SFX, SQRT, ATTRS)                                                             \
    ATTRS static void rf_adam_##SFX(                                                             \
        T *restrict p, const T *restrict g, T *restrict m, T *restrict v, ptrdiff_t n, T b1,     \
        T c1, T b2, T c2, T d, T eps, T s)                                                        \
    {                                                                                            \
        for (ptrdiff_t i = 0; i < n; i++) {                                                      \
            T mi = m[i] * b1;                                                                    \
            const T gc1 = g[i] * c1;                                                             \
            mi = mi + gc1;                                                                       \
            T vi = v[i] * b2;                                                                    \
            T a = g[i] * c2;                                                                     \
            a = a * g[i];                                                                        \
            vi = vi + a;                                                                         \
            a = SQRT(vi);                                                                        \
            a = a / d;                                                                           \
            a = a + eps;                                                                         \
            const T b = mi * s;                                                                  \
            p[i] = p[i] - b / a;                                                                 \
            m[i] = mi;                                                                           \
            v[i] = vi;                                                                           \
        }                                                                                        \
    }

/* Compiled for each of simd.h's levels (sqrt and division a vector at a time are what this
 * pass spends its time on), and run at the level simd.h selected. */
#define RF_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#ifdef RNNFAST_X86_DISPATCH
#define RF_NO_CONTRACT_AT(t) __attribute__((optimize("fp-contract=off"), target(t)))
#define RF_ADAM_TARGETS(T, SFX, SQRT)                                                            \
    RF_ADAM(T, SFX##_base, SQRT, RF_NO_CONTRACT)                                                 \
    RF_ADAM(T, SFX##_avx2, SQRT, RF_NO_CONTRACT_AT("avx2,fma"))                                  \
    RF_ADAM(T, SFX##_avx512, SQRT,                                                               \
            RF_NO_CONTRACT_AT("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))                    \
    static void (*const rf_adam_##SFX##_levels[])(T *, const T *, T *, T *, ptrdiff_t, T, T, T, \
                                                  T, T, T, T) = {                                \
        rf_adam_##SFX##_base, rf_adam_##SFX##_avx2, rf_adam_##SFX##_avx512};
#else
#define RF_ADAM_TARGETS(T, SFX, SQRT)                                                            \
    RF_ADAM(T, SFX##_base, SQRT, RF_NO_CONTRACT)                                                 \
    static void (*const rf_adam_##SFX##_levels[])(T *, const T *, T *, T *, ptrdiff_t, T, T, T, \
                                                  T, T, T, T) = {rf_adam_##SFX##_base};
#endif
RF_ADAM_TARGETS(float, f32, sqrtf)
RF_ADAM_TARGETS(double, f64, sqrt)
#undef RF_ADAM_TARGETS
#undef RF_ADAM
#undef RF_NO_CONTRACT
#undef RF_NO_CONTRACT_AT

static inline void rf_adam_f32(float *p, const float *g, float *m, float *v, ptrdiff_t n,
                               float b1, float c1, float b2, float c2, float d, float eps, float s)
{
    rf_adam_f32_levels[rnnfast_simd - rnnfast_simd_levels](p, g, m, v, n, b1, c1, b2, c2, d, eps,
                                                           s);
}
static inline void rf_adam_f64(double *p, const double *g, double *m, double *v, ptrdiff_t n,
                               double b1, double c1, double b2, double c2, double d, double eps,
                               double s)
{
    rf_adam_f64_levels[rnnfast_simd - rnnfast_simd_levels](p, g, m, v, n, b1, c1, b2, c2, d, eps,
                                                           s);
}

#endif /* RNNFAST_OPTIM_H */
