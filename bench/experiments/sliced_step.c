/* Experiment: a batch of one's forward product, out (n) = a (k) @ w.T + out, w (n, k) as stored:
 * the dot form (step_dot) on w against the small product in column slices (sliced_addmm) on
 * w.T copied once (transpose_pad), through the kernels' SIMD table (src/rnnfast/_core/simd.h).
 * Prints the best of 5 rounds of 100,000 steps in microseconds a step, and the copy's time.
 * `offset`: w starts that many elements past a 64-byte boundary (4: NumPy's usual 16 bytes).
 *
 *     gcc -O3 -I src/rnnfast/_core -o sliced_step bench/experiments/sliced_step.c -lm
 *     ./sliced_step N K [offset]          (e.g. 400 100: the LSTM of H = 100; 300 100: GRU)
 *
 * Not part of the package.
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

static float *filled(size_t n, int offset)
{
    float *p = (float *)aligned_alloc(64, (n + offset + 64) * sizeof(float)) + offset;
    for (size_t i = 0; i < n + 48; i++) p[i] = 0.01f * (float)((int)(i % 7) - 3);
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3) return fprintf(stderr, "usage: %s N K [offset]\n", argv[0]), 2;
    const int n = atoi(argv[1]), k = atoi(argv[2]), offset = argc > 3 ? atoi(argv[3]) % 16 : 4;
    const int reps = 100000;
    rnnfast_simd_select(-1);
    const int vl = (int)(rnnfast_simd->vector_bytes / sizeof(float)), ld = (n + vl - 1) / vl * vl;
    float *w = filled((size_t)n * k, offset), *wt = filled((size_t)k * ld, 0);
    float *a = filled(k, 0), *out = filled(ld, 0), *stage = filled(16 * 16, 0);
    double best_dot = 1e9, best_sliced = 1e9, best_copy = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        for (int r = 0; r < reps; r++) {
            rnnfast_simd->step_dot_f32(out, a, w, k, NULL, NULL, 0, out, 1, n);
            a[r % k] += out[0] * 1e-9f; /* the next step depends on this one */
        }
        double t1 = now();
        for (int r = 0; r < 1000; r++) rnnfast_simd->transpose_pad_f32(wt, ld, w, n, k);
        double t2 = now();
        for (int r = 0; r < reps; r++) {
            rnnfast_simd->sliced_addmm_f32(out, a, 1, k, n, wt, ld, stage);
            a[r % k] += out[0] * 1e-9f;
        }
        double t3 = now();
        if (t1 - t0 < best_dot) best_dot = t1 - t0;
        if (t2 - t1 < best_copy) best_copy = t2 - t1;
        if (t3 - t2 < best_sliced) best_sliced = t3 - t2;
    }
    printf("%s n=%d k=%d offset=%d: dot %.3f us, sliced %.3f us a step; copy %.3f us\n",
           rnnfast_simd->name, n, k, offset, best_dot / reps * 1e6, best_sliced / reps * 1e6,
           best_copy / 1000 * 1e6);
    return 0;
}
