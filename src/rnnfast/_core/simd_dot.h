/* The streaming step's dot-form product, per target (included by simd_target.h). */

/* ---- horizontal sums: the lanes of one vector, in registers --------------------------------- */
static inline __attribute__((always_inline)) float RF(hsum_f32)(RF(vec_f32) v)
{
#if RF_VBYTES >= 32
#if RF_VBYTES == 64
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256((__m512)v),
                             (__m256)_mm512_extractf64x4_pd((__m512d)v, 1));
#else
    __m256 h = (__m256)v;
#endif
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#elif defined(__SSE2__)
    __m128 s = _mm_add_ps((__m128)v, _mm_movehl_ps((__m128)v, (__m128)v));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#else
    float sum = 0;
    for (int l = 0; l < (int)(RF_VBYTES / sizeof(float)); l++) sum += v[l];
    return sum;
#endif
}

static inline __attribute__((always_inline)) double RF(hsum_f64)(RF(vec_f64) v)
{
#if RF_VBYTES >= 32
#if RF_VBYTES == 64
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256((__m512d)v), _mm512_extractf64x4_pd((__m512d)v, 1));
#else
    __m256d h = (__m256d)v;
#endif
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
#elif defined(__SSE2__)
    return _mm_cvtsd_f64(_mm_add_sd((__m128d)v, _mm_unpackhi_pd((__m128d)v, (__m128d)v)));
#else
    double sum = 0;
    for (int l = 0; l < (int)(RF_VBYTES / sizeof(double)); l++) sum += v[l];
    return sum;
#endif
}

/* ---- lanes [lo, hi) of the vector at p, the other lanes zero ----------------------------------
 * Masked loads never touch the other lanes, so the vector may begin before an array's start
 * or end past its end (only lanes in [lo, hi) must lie inside it).
 */
static inline __attribute__((always_inline)) RF(vec_f32) RF(load_lanes_f32)(const float *p,
                                                                             int lo, int hi)
{
#if RF_VBYTES == 64
    return (RF(vec_f32))_mm512_maskz_loadu_ps((__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)),
                                              p);
#elif RF_VBYTES == 32
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i below_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lanes);
    const __m256i below_lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(lo), lanes);
    return (RF(vec_f32))_mm256_maskload_ps(p, _mm256_andnot_si256(below_lo, below_hi));
#else
    RF(vec_f32) v = {0};
    for (int l = lo; l < hi; l++) v[l] = p[l];
    return v;
#endif
}

static inline __attribute__((always_inline)) RF(vec_f64) RF(load_lanes_f64)(const double *p,
                                                                             int lo, int hi)
{
#if RF_VBYTES == 64
    return (RF(vec_f64))_mm512_maskz_loadu_pd((__mmask8)(((1u << hi) - 1) & ~((1u << lo) - 1)),
                                              p);
#elif RF_VBYTES == 32
    const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
    const __m256i below_hi = _mm256_cmpgt_epi64(_mm256_set1_epi64x(hi), lanes);
    const __m256i below_lo = _mm256_cmpgt_epi64(_mm256_set1_epi64x(lo), lanes);
    return (RF(vec_f64))_mm256_maskload_pd(p, _mm256_andnot_si256(below_lo, below_hi));
#else
    RF(vec_f64) v = {0};
    for (int l = lo; l < hi; l++) v[l] = p[l];
    return v;
#endif
}

/* ---- dot-form step product: out = a @ wa.T + c @ wc.T + bias --------------------------------
 * out (rows, n); a (rows, ka), wa (n, ka); c (rows, kc), wc (n, kc), or c NULL for none; bias
 * (n) or NULL. For a single step on the weights as they are stored (PyTorch's (out, in)
 * layout), so the streaming path needs no transposed or padded copies. VL rows of wa and wc
 * at a time share each vector of c and a; both products (c's first) go into the same VL
 * accumulators, which reduce() sums together; the rows past the last whole block take one
 * horizontal sum each.
 */
/* The passes below add, for R rows of a (stride lda) and U rows of w (stride k),
 * acc[r * U + u] += lanes of a[r] * w[u], one vector of k at a time, always as the same
 * expression: dot_span over whole vectors from j while they fit in k (returns where it
 * stopped), dot_lanes over lanes [lo, hi) of the one vector at a and w (masked loads: zeros
 * elsewhere). */
#define RF_DOT_ROWS(T, SFX)                                                                      \
    static inline __attribute__((always_inline)) ptrdiff_t RF(dot_span_##SFX)(                  \
        RF(vec_##SFX) acc[], const int R, const int U, const T *restrict a, ptrdiff_t lda,      \
        const T *restrict w, ptrdiff_t k, ptrdiff_t j)                                           \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        for (; j + VL <= k; j += VL) {                                                           \
            VT av[4];                                                                            \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                  \
                av[r] = *(const VT *)(a + r * lda + j);                                          \
            _Pragma("GCC unroll 16") for (int u = 0; u < U; u++) {                               \
                VT wv = *(const VT *)(w + u * k + j);                                            \
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r * U + u] += av[r] * wv; \
            }                                                                                    \
        }                                                                                        \
        return j;                                                                                \
    }                                                                                            \
    static inline __attribute__((always_inline)) void RF(dot_lanes_##SFX)(                      \
        RF(vec_##SFX) acc[], const int R, const int U, const T *restrict a, ptrdiff_t lda,      \
        const T *restrict w, ptrdiff_t k, int lo, int hi)                                        \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        VT av[4];                                                                                \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                      \
            av[r] = RF(load_lanes_##SFX)(a + r * lda, lo, hi);                                   \
        _Pragma("GCC unroll 16") for (int u = 0; u < U; u++) {                                   \
            VT wv = RF(load_lanes_##SFX)(w + u * k, lo, hi);                                     \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r * U + u] += av[r] * wv;    \
        }                                                                                        \
    }                                                                                            \
    /* the whole row: whole vectors, then the partial last one */                                \
    static inline __attribute__((always_inline)) void RF(dot_rows_##SFX)(                       \
        RF(vec_##SFX) acc[], const int R, const int U, const T *restrict a, ptrdiff_t lda,      \
        const T *restrict w, ptrdiff_t k)                                                        \
    {                                                                                            \
        ptrdiff_t j = RF(dot_span_##SFX)(acc, R, U, a, lda, w, k, 0);                            \
        if (j < k) RF(dot_lanes_##SFX)(acc, R, U, a + j, lda, w + j, k, 0, (int)(k - j));        \
    }

RF_DOT_ROWS(float, f32)
RF_DOT_ROWS(double, f64)

/* The same pass over VL rows that all start m lanes (0 < m < VL) past a 64-byte boundary, k a
 * multiple of VL: every load of w aligned instead of straddling two cache lines (NumPy's
 * arrays are 16-byte aligned; a straddling load costs two). Lane l then sums the elements
 * j = l - m (mod VL), the same ones in the same order as lane l - m of the unaligned pass, so
 * rotating the accumulators by m gives that pass's bits exactly; the masked lanes add 0 * 0.
 * AVX-512 only (dot_shift is 0 elsewhere). acc arrives and leaves in the unaligned pass's lane
 * order; `fresh` (all zero) skips the rotation in.
 */
#if RF_VBYTES == 64
#define RF_DOT_SHIFTED(T, SFX, PERMUTE, IDX)                                                     \
    static inline __attribute__((always_inline)) void RF(rotate_##SFX)(RF(vec_##SFX) acc[],     \
                                                                       int by)                   \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        const __m512i idx = IDX(by);                                                             \
        _Pragma("GCC unroll 16") for (int q = 0; q < VL; q++)                                    \
            acc[q] = (RF(vec_##SFX))PERMUTE(idx, acc[q]);                                        \
    }                                                                                            \
    static inline __attribute__((always_inline)) void RF(dot_shifted_##SFX)(                    \
        RF(vec_##SFX) acc[], const int R, const int U, const T *restrict a, ptrdiff_t lda,      \
        const T *restrict w, ptrdiff_t k, int m, int fresh)                                      \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        if (!fresh) RF(rotate_##SFX)(acc, VL - m);                                               \
        /* The first vectors begin m lanes before a's and w's rows: integer arithmetic for       \
         * those addresses, and their lanes below m are never read. */                           \
        const T *a0 = (const T *)((uintptr_t)a - m * sizeof(T));                                 \
        const T *w0 = (const T *)((uintptr_t)w - m * sizeof(T));                                 \
        RF(dot_lanes_##SFX)(acc, R, U, a0, lda, w0, k, m, VL);                                   \
        ptrdiff_t j = RF(dot_span_##SFX)(acc, R, U, a, lda, w, k, VL - m);                       \
        RF(dot_lanes_##SFX)(acc, R, U, a + j, lda, w + j, k, 0, m);                              \
        RF(rotate_##SFX)(acc, m);                                                                \
    }
/* lane l of the result = lane (l + by) mod VL of the input */
#define RF_IDX_F32(by)                                                                           \
    _mm512_and_si512(_mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,   \
                                                        12, 13, 14, 15),                         \
                                      _mm512_set1_epi32(by)),                                    \
                     _mm512_set1_epi32(15))
#define RF_IDX_F64(by)                                                                           \
    _mm512_and_si512(_mm512_add_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),                \
                                      _mm512_set1_epi64(by)),                                    \
                     _mm512_set1_epi64(7))
RF_DOT_SHIFTED(float, f32, _mm512_permutexvar_ps, RF_IDX_F32)
RF_DOT_SHIFTED(double, f64, _mm512_permutexvar_pd, RF_IDX_F64)
#undef RF_IDX_F32
#undef RF_IDX_F64
#undef RF_DOT_SHIFTED
#endif

/* The shift for dot_shifted of a (rows, k) matrix w, or 0 for the unaligned pass: 0 when its
 * rows do not all share one alignment, are shorter than two lines, or start on a boundary
 * already. Two lines, not four: below that the weights sit in L1 and the rotations cost more
 * than the split loads (bench/experiments/step_dot.c; docs/design/kernels.md). */
static inline int RF(dot_shift)(const void *w, ptrdiff_t k, size_t size)
{
#if RF_VBYTES == 64
    uintptr_t address = (uintptr_t)w;
    if ((k * size) % 64 != 0 || k * size < 2 * 64 || address % size != 0) return 0;
    return (int)(address % 64 / size);
#else
    (void)w, (void)k, (void)size;
    return 0;
#endif
}

/* acc[0..VL) += the pass over R rows of a and U = VL / R rows of w, aligned where dot_shift
 * allows */
#if RF_VBYTES == 64
#define RF_DOT_PASS(SFX, acc, R, U, a, lda, w, k, m, fresh)                                      \
    do {                                                                                         \
        if ((m) > 0) RF(dot_shifted_##SFX)(acc, R, U, a, lda, w, k, m, fresh);                   \
        else RF(dot_rows_##SFX)(acc, R, U, a, lda, w, k);                                        \
    } while (0)
#else
#define RF_DOT_PASS(SFX, acc, R, U, a, lda, w, k, m, fresh)                                      \
    ((void)(m), RF(dot_rows_##SFX)(acc, R, U, a, lda, w, k))
#endif

#define RF_DOT(T, SFX)                                                                           \
    /* units i0 .. n - 1 of rows 0 .. R - 1, one at a time (the units past the last block) */    \
    static inline __attribute__((always_inline)) void RF(dot_units_##SFX)(                       \
        T *restrict out, const T *restrict a, const T *restrict wa, ptrdiff_t ka,                \
        const T *restrict c, const T *restrict wc, ptrdiff_t kc, const T *restrict bias,         \
        ptrdiff_t n, ptrdiff_t i0, const int R)                                                  \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        for (ptrdiff_t i = i0; i < n; i++) {                                                     \
            for (int r = 0; r < R; r++) {                                                        \
                VT acc[1] = {{0}};                                                               \
                if (c != NULL) RF(dot_rows_##SFX)(acc, 1, 1, c + r * kc, kc, wc + i * kc, kc);   \
                RF(dot_rows_##SFX)(acc, 1, 1, a + r * ka, ka, wa + i * ka, ka);                  \
                T sum = RF(hsum_##SFX)(acc[0]);                                                  \
                out[r * n + i] = bias != NULL ? sum + bias[i] : sum;                             \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* out rows 0 .. R - 1, VL / R units at a time, then the units past the last block; or, if   \
     * `backward`, those units first and the blocks from the last (see step_dot) */              \
    static inline __attribute__((always_inline)) void RF(dot_group_##SFX)(                       \
        T *restrict out, const T *restrict a, const T *restrict wa, ptrdiff_t ka,                \
        const T *restrict c, const T *restrict wc, ptrdiff_t kc, const T *restrict bias,         \
        ptrdiff_t n, int ma, int mc, const int R, int backward)                                  \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        const int U = VL / R;                                                                    \
        const ptrdiff_t blocks = n / U;                                                          \
        if (backward) RF(dot_units_##SFX)(out, a, wa, ka, c, wc, kc, bias, n, blocks * U, R);    \
        for (ptrdiff_t b = 0; b < blocks; b++) {                                                 \
            const ptrdiff_t i = (backward ? blocks - 1 - b : b) * U;                             \
            VT acc[VL];                                                                          \
            _Pragma("GCC unroll 16") for (int q = 0; q < VL; q++) acc[q] = (VT){0};              \
            if (c != NULL) RF_DOT_PASS(SFX, acc, R, U, c, kc, wc + i * kc, kc, mc, 1);           \
            RF_DOT_PASS(SFX, acc, R, U, a, ka, wa + i * ka, ka, ma, c == NULL);                  \
            VT sums = RF(reduce_##SFX)(acc); /* lane r * U + u: row r, unit i + u */             \
            if (R == 1) {                                                                        \
                if (bias != NULL) sums += *(const VT *)(bias + i);                               \
                *(VT *)(out + i) = sums;                                                         \
            } else {                                                                             \
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                              \
                    for (int u = 0; u < U; u++)                                                  \
                        out[r * n + i + u] = bias != NULL ? sums[r * U + u] + bias[i + u]        \
                                                          : sums[r * U + u];                     \
            }                                                                                    \
        }                                                                                        \
        if (!backward) RF(dot_units_##SFX)(out, a, wa, ka, c, wc, kc, bias, n, blocks * U, R);   \
    }                                                                                            \
    /* Each group of rows is one pass over the weights, and the passes alternate direction,      \
     * within a call and from one call to the next (the last direction is kept in `flip`): the   \
     * lines read last are read first again, from L1 where the weights do not fit in it         \
     * (bench/experiments/step_dot.c). A unit's sum is the same in either direction. `flip` is   \
     * each thread's own: the split step runs this on two cores at once, and one shared word    \
     * would move between them at every call. */                                                \
    static void RF(step_dot_##SFX)(T *restrict out, const T *restrict a, const T *restrict wa,   \
                                   ptrdiff_t ka, const T *restrict c, const T *restrict wc,      \
                                   ptrdiff_t kc, const T *restrict bias, ptrdiff_t rows,         \
                                   ptrdiff_t n)                                                  \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), R_MAX = VL < 4 ? VL : 4 };                            \
        static __thread int flip;                                                                \
        const int ma = RF(dot_shift)(wa, ka, sizeof(T));                                         \
        const int mc = c == NULL ? 0 : RF(dot_shift)(wc, kc, sizeof(T));                         \
        int backward = !flip;                                                                    \
        ptrdiff_t r = 0;                                                                         \
        /* Rows of a in groups share each load of w. A sum's order does not depend on its        \
         * group: reduce() and the x86 hsum() pair the lanes alike. */                           \
        for (; r < rows; backward = !backward) {                                                 \
            const int R = rows - r >= R_MAX ? R_MAX : rows - r >= 2 ? 2 : 1;                     \
            const T *group_c = c == NULL ? NULL : c + r * kc;                                    \
            if (R == R_MAX)                                                                      \
                RF(dot_group_##SFX)(out + r * n, a + r * ka, wa, ka, group_c, wc, kc, bias, n,   \
                                    ma, mc, R_MAX, backward);                                    \
            else if (R == 2)                                                                     \
                RF(dot_group_##SFX)(out + r * n, a + r * ka, wa, ka, group_c, wc, kc, bias, n,   \
                                    ma, mc, 2, backward);                                        \
            else                                                                                 \
                RF(dot_group_##SFX)(out + r * n, a + r * ka, wa, ka, group_c, wc, kc, bias, n,   \
                                    ma, mc, 1, backward);                                        \
            r += R;                                                                              \
        }                                                                                        \
        flip = !backward;                                                                        \
    }

RF_DOT(float, f32)
RF_DOT(double, f64)


#undef RF_DOT
#undef RF_DOT_ROWS
#undef RF_DOT_PASS
