/* A C-level test of the SIMD and panel kernels of src/rnnfast/_core/simd*.h, for the paths the
 * Python tests cannot reach on the CI machine: clang (as on macOS) and non-x86 CPUs (aarch64,
 * under qemu-user in CI). Built with any C compiler:
 *
 *     cc -O3 -fno-math-errno -fno-trapping-math -I src/rnnfast/_core tests/c/simd_harness.c -lm
 *
 * Every kernel of every SIMD level this build and CPU have runs on fixed inputs and is checked
 * against a plain long double loop here (exit status 1 on a mismatch). The results of the
 * baseline level (the only level off x86/GCC) are printed, one line per case, so that
 * tests/c/compare.py can check two platforms' outputs against each other within a tolerance
 * (FMA contraction may differ between compilers and CPUs).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

static int failures;

/* Deterministic inputs in [-scale, scale], from an integer hash and one division and one
 * product (each correctly rounded): every platform sees the same numbers, whatever its libm or
 * its contraction of a*b+c into an FMA. */
static double input(int seed, ptrdiff_t i, double scale)
{
    uint32_t h = (uint32_t)i * 2654435761u + (uint32_t)seed * 40503u + 12345u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (double)((int)(h % 200001u) - 100000) / 100000.0 * scale;
}

#define FILL(T, p, count, seed, scale)                                                           \
    do {                                                                                         \
        for (ptrdiff_t i_ = 0; i_ < (count); i_++) (p)[i_] = (T)input(seed, i_, scale);         \
    } while (0)

/* Compare got against want (long double) within rtol (relative to max(1, |want|)); print the
 * values when `print` is set. */
#define CHECK(T, name, got, want, count, rtol, print)                                            \
    do {                                                                                         \
        double worst_ = 0;                                                                       \
        for (ptrdiff_t i_ = 0; i_ < (count); i_++) {                                             \
            double w_ = (double)(want)[i_], g_ = (double)(got)[i_];                              \
            double err_ = fabs(g_ - w_) / (fabs(w_) > 1 ? fabs(w_) : 1);                         \
            if (!(err_ <= (rtol))) err_ = INFINITY; /* NaN too */                                \
            if (err_ > worst_) worst_ = err_;                                                    \
        }                                                                                        \
        if (!(worst_ <= (rtol))) {                                                               \
            fprintf(stderr, "FAIL %s [%s]: relative error %g > %g\n", name, level_name, worst_,  \
                    (double)(rtol));                                                             \
            failures++;                                                                          \
        }                                                                                        \
        if (print) {                                                                             \
            printf("%s", name);                                                                  \
            for (ptrdiff_t i_ = 0; i_ < (count); i_++)                                           \
                printf(" %.17g", (double)(got)[i_]);                                             \
            printf("\n");                                                                        \
        }                                                                                        \
    } while (0)

static const char *level_name;

/* One set of cases for element type T (suffix SFX), tolerance TOL. */
#define CASES(T, SFX, TOL)                                                                       \
    static void cases_##SFX(int print)                                                           \
    {                                                                                            \
        const rnnfast_simd_t *s = rnnfast_simd;                                                  \
        const ptrdiff_t vl = s->vector_bytes / (ptrdiff_t)sizeof(T);                             \
        char name[96];                                                                           \
        /* bias_act: rows x n, ld = n + 2, tanh and relu, with and without a bias; inputs up     \
         * to +-25 (tanh saturates) */                                                           \
        static const ptrdiff_t widths[] = {1, 3, 5, 8, 17, 33};                                  \
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {                       \
            const ptrdiff_t rows = 3, n = widths[wi], ld = n + 2;                                \
            for (int act = 0; act < 2; act++)                                                    \
                for (int biased = 0; biased < 2; biased++) {                                     \
                    T a[3 * 35], b[35];                                                          \
                    long double want[3 * 35];                                                    \
                    FILL(T, a, rows * ld, 1 + (int)wi, 25.0);                                    \
                    FILL(T, b, n, 2, 1.0);                                                       \
                    for (ptrdiff_t i = 0; i < rows * ld; i++) {                                  \
                        long double v = a[i];                                                    \
                        if (i % ld < n) {                                                        \
                            if (biased) v = (long double)(T)(a[i] + b[i % ld]);                  \
                            v = act == 0 ? tanhl(v) : (v > 0 ? v : 0);                           \
                        }                                                                        \
                        want[i] = v;                                                             \
                    }                                                                            \
                    s->bias_act_##SFX(a, biased ? b : NULL, rows, n, ld, act);                   \
                    snprintf(name, sizeof name, "bias_act_" #SFX " n=%td act=%d bias=%d", n, act, \
                             biased);                                                            \
                    CHECK(T, name, a, want, rows * ld, TOL, print);                              \
                }                                                                                \
        }                                                                                        \
        /* mul_act_grad */                                                                       \
        for (int act = 0; act < 2; act++) {                                                      \
            enum { N = 23 };                                                                     \
            T g[N], h[N];                                                                        \
            long double want[N];                                                                 \
            FILL(T, g, N, 3, 2.0);                                                               \
            FILL(T, h, N, 4, 0.99);                                                              \
            for (int i = 0; i < N; i++)                                                          \
                want[i] = act == 0 ? (long double)g[i] * (1 - (long double)h[i] * h[i])          \
                                   : (h[i] > 0 ? g[i] : 0);                                      \
            s->mul_act_grad_##SFX(g, h, N, act);                                                 \
            snprintf(name, sizeof name, "mul_act_grad_" #SFX " act=%d", act);                    \
            CHECK(T, name, g, want, N, TOL, print);                                              \
        }                                                                                        \
        /* add_col_sums: n = 37 covers the 4-vector, 1-vector and scalar loops */                \
        {                                                                                        \
            enum { R = 5, N = 37 };                                                              \
            T sums[N], a[R * N];                                                                 \
            long double want[N];                                                                 \
            FILL(T, sums, N, 5, 1.0);                                                            \
            FILL(T, a, R * N, 6, 3.0);                                                           \
            for (int c = 0; c < N; c++) {                                                        \
                want[c] = sums[c];                                                               \
                for (int r = 0; r < R; r++) want[c] += a[r * N + c];                             \
            }                                                                                    \
            s->add_col_sums_##SFX(sums, a, R, N);                                                \
            CHECK(T, "add_col_sums_" #SFX, sums, want, N, TOL, print);                           \
        }                                                                                        \
        /* small_addmm: out (rows, n) += a (rows, k) @ m (k, n), m's last rows padded in tail,   \
         * laid out as kernels.pyx's step_operands does */                                       \
        static const ptrdiff_t small_n[] = {1, 3, 13, 24};                                       \
        for (size_t ni = 0; ni < sizeof small_n / sizeof small_n[0]; ni++) {                     \
            const ptrdiff_t rows = 6, k = 7, n = small_n[ni];                                    \
            const ptrdiff_t padded = (n + vl - 1) / vl * vl;                                     \
            if (padded / vl > s->max_vectors) continue;                                          \
            ptrdiff_t tail_rows = (padded - n + n - 1) / n;                                      \
            if (tail_rows > k) tail_rows = k;                                                    \
            T *out = calloc((size_t)(rows * n), sizeof(T)), *a = malloc(rows * k * sizeof(T));   \
            T *m = malloc(k * n * sizeof(T)), *tail = calloc((size_t)(tail_rows * padded + 1),   \
                                                             sizeof(T));                          \
            T *stage = malloc(4 * padded * sizeof(T));                                           \
            long double *want = malloc(rows * n * sizeof(long double));                          \
            FILL(T, out, rows * n, 7, 1.0);                                                      \
            FILL(T, a, rows * k, 8, 1.0);                                                        \
            FILL(T, m, k * n, 9, 1.0);                                                           \
            for (ptrdiff_t j = 0; j < tail_rows; j++)                                            \
                memcpy(tail + j * padded, m + (k - tail_rows + j) * n, n * sizeof(T));           \
            for (ptrdiff_t r = 0; r < rows; r++)                                                 \
                for (ptrdiff_t c = 0; c < n; c++) {                                              \
                    long double acc = out[r * n + c];                                            \
                    for (ptrdiff_t j = 0; j < k; j++)                                            \
                        acc += (long double)a[r * k + j] * m[j * n + c];                         \
                    want[r * n + c] = acc;                                                       \
                }                                                                                \
            s->small_addmm_##SFX(out, a, rows, k, n, m, n, tail, tail_rows, stage);              \
            snprintf(name, sizeof name, "small_addmm_" #SFX " n=%td", n);                        \
            CHECK(T, name, out, want, rows * n, TOL, print);                                     \
            free(out), free(a), free(m), free(tail), free(stage), free(want);                    \
        }                                                                                        \
        /* pack_panels + panel_addmm, both layouts of the source; n = 29 and 50: several panels, \
         * a partial last one; rows 9: a partial row block */                                    \
        static const ptrdiff_t panel_n[] = {5, 29, 50};                                          \
        for (size_t ni = 0; ni < sizeof panel_n / sizeof panel_n[0]; ni++)                       \
            for (int transposed = 0; transposed < 2; transposed++) {                             \
                const ptrdiff_t rows = 9, k = 11, n = panel_n[ni];                               \
                const ptrdiff_t padded = (n + vl - 1) / vl * vl;                                 \
                const ptrdiff_t stage_len = s->panel_rows * s->panel_vectors * vl;               \
                T *out = malloc(rows * n * sizeof(T)), *a = malloc(rows * k * sizeof(T));        \
                T *src = malloc(k * n * sizeof(T)), *packed = malloc(k * padded * sizeof(T));    \
                T *stage = malloc(stage_len * sizeof(T));                                        \
                long double *want = malloc(rows * n * sizeof(long double));                      \
                FILL(T, out, rows * n, 10, 1.0);                                                 \
                FILL(T, a, rows * k, 11, 1.0);                                                   \
                FILL(T, src, k * n, 12, 1.0); /* (k, n), or (n, k) when transposed */            \
                for (ptrdiff_t r = 0; r < rows; r++)                                             \
                    for (ptrdiff_t c = 0; c < n; c++) {                                          \
                        long double acc = out[r * n + c];                                        \
                        for (ptrdiff_t j = 0; j < k; j++)                                        \
                            acc += (long double)a[r * k + j]                                     \
                                   * (transposed ? src[c * k + j] : src[j * n + c]);             \
                        want[r * n + c] = acc;                                                   \
                    }                                                                            \
                s->pack_panels_##SFX(packed, src, k, n, transposed ? k : n, transposed);         \
                s->panel_addmm_##SFX(out, a, rows, k, n, packed, stage, 0, n);                   \
                snprintf(name, sizeof name, "panel_addmm_" #SFX " n=%td transposed=%d", n,       \
                         transposed);                                                            \
                CHECK(T, name, out, want, rows * n, TOL, print);                                 \
                free(out), free(a), free(src), free(packed), free(stage), free(want);            \
            }                                                                                    \
        /* step_dot: out (rows, n) = a @ wa.T + c @ wc.T + bias, rows 1..6 (every row group), \
         * twice (the passes alternate direction from call to call) */                          \
        for (ptrdiff_t rows = 1; rows <= 6; rows++)                                              \
            for (int call = 0; call < 2; call++) {                                               \
                enum { N = 19, KA = 13, KC = 19 };                                               \
                T out[6 * N], a[6 * KA], wa[N * KA], c[6 * KC], wc[N * KC], bias[N];             \
                long double want[6 * N];                                                         \
                FILL(T, a, rows * KA, 13, 1.0);                                                  \
                FILL(T, wa, N * KA, 14, 1.0);                                                    \
                FILL(T, c, rows * KC, 15, 1.0);                                                  \
                FILL(T, wc, N * KC, 16, 1.0);                                                    \
                FILL(T, bias, N, 17, 1.0);                                                       \
                for (ptrdiff_t r = 0; r < rows; r++)                                             \
                    for (int i = 0; i < N; i++) {                                                \
                        long double acc = bias[i];                                               \
                        for (int j = 0; j < KA; j++) acc += (long double)a[r * KA + j] * wa[i * KA + j]; \
                        for (int j = 0; j < KC; j++) acc += (long double)c[r * KC + j] * wc[i * KC + j]; \
                        want[r * N + i] = acc;                                                   \
                    }                                                                            \
                s->step_dot_##SFX(out, a, wa, KA, c, wc, KC, bias, rows, N);                     \
                snprintf(name, sizeof name, "step_dot_" #SFX " rows=%td call=%d", rows, call);  \
                CHECK(T, name, out, want, rows * N, TOL, print);                                 \
            }                                                                                    \
    }

CASES(float, f32, 2e-6)
CASES(double, f64, 1e-14)

int main(void)
{
    int levels = 0;
    for (int level = 0; level < RNNFAST_SIMD_NLEVELS; level++) {
        if (rnnfast_simd_select(level) != level) continue; /* this CPU lacks it */
        level_name = rnnfast_simd->name;
        fprintf(stderr, "level %s\n", level_name);
        cases_f32(level == 0);
        cases_f64(level == 0);
        levels++;
    }
    if (failures) {
        fprintf(stderr, "%d case(s) FAILED\n", failures);
        return 1;
    }
    fprintf(stderr, "all cases pass on %d level(s)\n", levels);
    return 0;
}
