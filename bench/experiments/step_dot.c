/* Experiment: the streaming step's compute alone, without Python around it.
 *
 * One step of a batch of B rows (default 1) through the kernels' SIMD table
 * (src/rnnfast/_core/simd.h), as _step_layer runs it: the dot-form products of x with w_ih and h
 * with w_hh, then bias + tanh. Prints the best of 7 rounds of 200,000 / B steps, in
 * microseconds per step, for the products alone and the whole step. The level argument: 0
 * baseline, 1 AVX2, 2 AVX-512 (-1, the default: the widest). Every array starts `offset`
 * floats past a 64-byte boundary (default 0): 4 gives NumPy's usual 16-byte alignment, where
 * vector loads straddle cache lines.
 *
 *     gcc -O3 -I src/rnnfast/_core -o step_dot bench/experiments/step_dot.c -lm
 *     ./step_dot D H [level [offset [B]]]      (e.g. 32 128; 32 128 -1 4; 65 100; 64 128 -1 0 8)
 *
 * Not part of the package; `rnnfast bench` times the step from Python.
 */
#include "simd.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int offset;

static float *filled(size_t n, float scale)
{
    float *p = (float *)aligned_alloc(64, (n + offset + 16) / 16 * 64) + offset;
    for (size_t i = 0; i < n; i++) p[i] = scale * (float)((int)(i % 7) - 3);
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3) return fprintf(stderr, "usage: %s D H [level [offset [B]]]\n", argv[0]), 2;
    const int D = atoi(argv[1]), H = atoi(argv[2]), B = argc > 5 ? atoi(argv[5]) : 1;
    const int reps = 200000 / (B > 0 ? B : 1);
    if (B < 1) return fprintf(stderr, "B must be at least 1\n"), 2;
    offset = argc > 4 ? atoi(argv[4]) % 16 : 0;
    if (rnnfast_simd_select(argc > 3 ? atoi(argv[3]) : -1) < 0)
        return fprintf(stderr, "this CPU cannot run that level\n"), 2;
    float *w_ih = filled((size_t)H * D, 0.01f), *w_hh = filled((size_t)H * H, 0.01f);
    float *b_ih = filled(H, 0.1f), *b_hh = filled(H, 0.1f), *x = filled((size_t)B * D, 0.3f);
    float *h = filled((size_t)B * H, 0.2f), *out = filled((size_t)B * H, 0);
    double best_products = 1e9, best_step = 1e9;
    for (int round = 0; round < 7; round++) {
        double t0 = now();
        for (int r = 0; r < reps; r++) {
            rnnfast_simd->step_dot_f32(out, x, w_ih, D, h, w_hh, H, b_hh, B, H);
            h[r % H] += out[0] * 1e-9f; /* the next step depends on this one */
        }
        double t1 = now();
        for (int r = 0; r < reps; r++) {
            rnnfast_simd->step_dot_f32(out, x, w_ih, D, h, w_hh, H, b_hh, B, H);
            rnnfast_simd->bias_act_f32(out, b_ih, B, H, H, 0);
            h[r % H] += out[0] * 1e-9f;
        }
        double t2 = now();
        if (t1 - t0 < best_products) best_products = t1 - t0;
        if (t2 - t1 < best_step) best_step = t2 - t1;
    }
    printf("%s D=%d H=%d B=%d offset=%d: products %.3f us, step %.3f us\n", rnnfast_simd->name,
           D, H, B, offset, best_products / reps * 1e6, best_step / reps * 1e6);
    return 0;
}
