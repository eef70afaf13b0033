/* Vectorizable tanh for the RNN kernels.
 *
 * libm's tanh/tanhf are scalar calls (~25 ns each here) and dominated the forward pass; these
 * are branch-free C that gcc vectorizes with plain SSE2, so the baseline x86-64 wheel gets them.
 *
 *   |x| < 0.625:  the odd rational (double) / polynomial (float) approximations of Cephes'
 *                 tanh.c / tanhf.c, which keep full relative accuracy near 0.
 *   |x| >= 0.625: tanh|x| = 1 - 2e / (1 + e), e = exp(-2|x|), with exp by Cody-Waite reduction
 *                 (y = n ln2 + r, |r| <= ln2/2), a Taylor polynomial for exp(r), and 2^n built
 *                 from the exponent bits. |x| is capped at 20 (float: 10), where tanh is 1 to
 *                 the last bit; NaN propagates, +-Inf gives +-1.
 *
 * Measured against numpy.tanh on a dense grid by tests/test_fastmath.py: within a few ulp.
 */
#ifndef RNNFAST_FASTMATH_H
#define RNNFAST_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline double rnnfast_tanh(double x)
{
    double ax = fabs(x);
    ax = ax > 20.0 ? 20.0 : ax; /* NaN > 20 is false: NaN passes through */

    /* Small |x|: x + x z P(z) / Q(z), z = x^2 (Cephes tanh.c). */
    double z = ax * ax;
    double p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
               - 1.61468768441708447952e3;
    double q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
               + 4.84406305325125486048e3;
    double small = ax + ax * z * p / q;

    /* Large |x|: e = exp(y), y = -2|x| in [-40, -1.25]. */
    double y = -2.0 * ax;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: rounds y/ln2 to an integer */
    double t = y * 1.4426950408889634 + shifter;
    double n = t - shifter;
    double r = y - n * 6.93147180369123816490e-01; /* ln2, high part (exact product) */
    r = r - n * 1.90821492927058770002e-10;        /* ln2, low part */
    /* exp(r) for |r| <= 0.347: Taylor to degree 12, truncation error < 2e-16 relative. */
    double e = 1.0 / 479001600.0;
    e = e * r + 1.0 / 39916800.0;
    e = e * r + 1.0 / 3628800.0;
    e = e * r + 1.0 / 362880.0;
    e = e * r + 1.0 / 40320.0;
    e = e * r + 1.0 / 5040.0;
    e = e * r + 1.0 / 720.0;
    e = e * r + 1.0 / 120.0;
    e = e * r + 1.0 / 24.0;
    e = e * r + 1.0 / 6.0;
    e = e * r + 0.5;
    e = e * r + 1.0;
    e = e * r + 1.0;
    /* 2^n: the low bits of t hold n; the shifter's own bits vanish in the shift. */
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    e = e * scale;
    double large = 1.0 - 2.0 * e / (1.0 + e);

    double result = ax < 0.625 ? small : large;
    return copysign(result, x);
}

static inline float rnnfast_tanhf(float x)
{
    float ax = fabsf(x);
    ax = ax > 10.0f ? 10.0f : ax; /* NaN > 10 is false: NaN passes through */

    /* Small |x|: Cephes tanhf.c polynomial. */
    float z = ax * ax;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * ax + ax;

    /* Large |x|: e = exp(y), y = -2|x| in [-20, -1.25]. */
    float y = -2.0f * ax;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    float t = y * 1.44269504f + shifter;
    float n = t - shifter;
    float r = y - n * 0.693359375f; /* ln2, high part (exact product) */
    r = r + n * 2.12194440e-4f;     /* ln2 = 0.693359375 - 2.12194440e-4 */
    /* exp(r) for |r| <= 0.347: Taylor to degree 7, truncation error < 2e-8 relative. */
    float e = 1.0f / 5040.0f;
    e = e * r + 1.0f / 720.0f;
    e = e * r + 1.0f / 120.0f;
    e = e * r + 1.0f / 24.0f;
    e = e * r + 1.0f / 6.0f;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    e = e * scale;
    float large = 1.0f - 2.0f * e / (1.0f + e);

    float result = ax < 0.625f ? small : large;
    return copysignf(result, x);
}

#endif /* RNNFAST_FASTMATH_H */
