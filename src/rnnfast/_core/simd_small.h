/* The register-blocked small product, per target (included by simd_target.h). */

/* ---- small matrix product: out (rows, n) += a (rows, k) @ m (k, n) --------------------------
 * For the per-step recurrent product at small sizes, where a BLAS call costs more than its
 * arithmetic. Each output row is NV = ceil(n / VL) whole vectors held in registers for the
 * whole k loop (through `stage`, lds = NV * VL elements a row, so the lanes past n never touch
 * `out`); RB rows share each load of m. Register budget: RB * NV accumulators + RB broadcasts
 * + 1 load <= the register file.
 * m is used in place, rows of stride ldm, whole vectors read from each: past a row's end they
 * read the next row's first elements, which only feed the discarded lanes. The last
 * `k_tail` rows, where such a read would run past the end of m, come zero-padded in `tail`
 * (stride lds) instead.
 */
#if RF_VBYTES == 64
#define RF_RB(NV) ((NV) <= 5 ? 4 : (NV) <= 8 ? 3 : (NV) <= 12 ? 2 : 1) /* 32 registers */
#else
#define RF_RB(NV) ((NV) <= 2 ? 4 : (NV) <= 3 ? 3 : (NV) <= 6 ? 2 : 1) /* 16 registers */
#endif

#define RF_BLOCK(T, SFX, VT, NV, RB, TAG)                                                        \
    static inline __attribute__((always_inline)) void RF(block_##SFX##_##NV##_##TAG)(          \
        T *stage, ptrdiff_t lds, const T *a, ptrdiff_t lda, const T *m, ptrdiff_t ldm,           \
        ptrdiff_t k_direct, const T *tail, ptrdiff_t k_tail)                                     \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        VT acc[RB][NV];                                                                          \
        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++)                                    \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                                \
                acc[r][v] = *(const VT *)(stage + r * lds + v * VL);                             \
        for (int part = 0; part < 2; part++) {                                                   \
            const T *rows_of_m = part == 0 ? m : tail;                                           \
            const ptrdiff_t stride = part == 0 ? ldm : lds, j0 = part == 0 ? 0 : k_direct;       \
            const ptrdiff_t count = part == 0 ? k_direct : k_tail;                               \
            for (ptrdiff_t j = 0; j < count; j++) {                                              \
                const T *mr = rows_of_m + j * stride;                                            \
                T aj[RB];                                                                        \
                _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) aj[r] = a[r * lda + j0 + j]; \
                _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) {                          \
                    VT w = *(const VT *)(mr + v * VL);                                           \
                    _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) acc[r][v] += aj[r] * w; \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++)                                    \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                                \
                *(VT *)(stage + r * lds + v * VL) = acc[r][v];                                   \
    }

/* Rows in blocks of RF_RB(NV), the rest one by one; `stage` holds RB_max rows of lds. */
#define RF_ROWS(T, SFX, NV)                                                                      \
    RF_BLOCK(T, SFX, RF(vec_##SFX), NV, RF_RB(NV), wide)                                         \
    RF_BLOCK(T, SFX, RF(vec_##SFX), NV, 1, one)                                                  \
    static void RF(rows_##SFX##_##NV)(T *out, const T *a, ptrdiff_t rows, ptrdiff_t k,          \
                                      ptrdiff_t n, const T *m, ptrdiff_t ldm, const T *tail,     \
                                      ptrdiff_t k_tail, T *stage)                                \
    {                                                                                            \
        enum { RB = RF_RB(NV), LDS = NV * (RF_VBYTES / sizeof(T)) };                             \
        const ptrdiff_t k_direct = k - k_tail;                                                   \
        ptrdiff_t r = 0;                                                                         \
        for (; r + RB <= rows; r += RB) {                                                        \
            for (int i = 0; i < RB; i++) memcpy(stage + i * LDS, out + (r + i) * n, n * sizeof(T)); \
            RF(block_##SFX##_##NV##_wide)(stage, LDS, a + r * k, k, m, ldm, k_direct, tail, k_tail); \
            for (int i = 0; i < RB; i++) memcpy(out + (r + i) * n, stage + i * LDS, n * sizeof(T)); \
        }                                                                                        \
        for (; r < rows; r++) {                                                                  \
            memcpy(stage, out + r * n, n * sizeof(T));                                           \
            RF(block_##SFX##_##NV##_one)(stage, LDS, a + r * k, k, m, ldm, k_direct, tail, k_tail); \
            memcpy(out + r * n, stage, n * sizeof(T));                                           \
        }                                                                                        \
    }

/* NV = 1..12 for every target; 13..16 only with 32 vector registers. */
#define RF_ALL_NV(T, SFX)                                                                        \
    RF_ROWS(T, SFX, 1) RF_ROWS(T, SFX, 2) RF_ROWS(T, SFX, 3) RF_ROWS(T, SFX, 4)                 \
    RF_ROWS(T, SFX, 5) RF_ROWS(T, SFX, 6) RF_ROWS(T, SFX, 7) RF_ROWS(T, SFX, 8)                 \
    RF_ROWS(T, SFX, 9) RF_ROWS(T, SFX, 10) RF_ROWS(T, SFX, 11) RF_ROWS(T, SFX, 12)

RF_ALL_NV(float, f32)
RF_ALL_NV(double, f64)
#if RF_VBYTES == 64
RF_ROWS(float, f32, 13) RF_ROWS(float, f32, 14) RF_ROWS(float, f32, 15) RF_ROWS(float, f32, 16)
RF_ROWS(double, f64, 13) RF_ROWS(double, f64, 14) RF_ROWS(double, f64, 15) RF_ROWS(double, f64, 16)
#define RF_NV_MAX 16
#else
#define RF_NV_MAX 12
#endif

#define RF_CASE(SFX, NV)                                                                         \
    case NV: RF(rows_##SFX##_##NV)(out, a, rows, k, n, m, ldm, tail, k_tail, stage); return;

#define RF_SMALL_ADDMM(T, SFX)                                                                   \
    /* Does nothing when n needs more than RF_NV_MAX vectors (callers check the limit). */     \
    static void RF(small_addmm_##SFX)(T *out, const T *a, ptrdiff_t rows, ptrdiff_t k,          \
                                      ptrdiff_t n, const T *m, ptrdiff_t ldm, const T *tail,     \
                                      ptrdiff_t k_tail, T *stage)                                \
    {                                                                                            \
        const ptrdiff_t vl = RF_VBYTES / (ptrdiff_t)sizeof(T);                                   \
        switch ((n + vl - 1) / vl) {                                                             \
            RF_CASE(SFX, 1) RF_CASE(SFX, 2) RF_CASE(SFX, 3) RF_CASE(SFX, 4)                      \
            RF_CASE(SFX, 5) RF_CASE(SFX, 6) RF_CASE(SFX, 7) RF_CASE(SFX, 8)                      \
            RF_CASE(SFX, 9) RF_CASE(SFX, 10) RF_CASE(SFX, 11) RF_CASE(SFX, 12)                   \
            RF_CASES_WIDE(SFX)                                                                   \
        default: return;                                                                         \
        }                                                                                        \
    }

#if RF_VBYTES == 64
#define RF_CASES_WIDE(SFX) RF_CASE(SFX, 13) RF_CASE(SFX, 14) RF_CASE(SFX, 15) RF_CASE(SFX, 16)
#else
#define RF_CASES_WIDE(SFX)
#endif

RF_SMALL_ADDMM(float, f32)
RF_SMALL_ADDMM(double, f64)

/* ---- a batch of one's forward product on w_hh transposed once a call ------------------------
 * The dot form (simd_dot.h) reads VL rows of w_hh (n, k) at a time, rows k elements apart, each
 * vector straddling two cache lines unless k is a multiple of a line's elements, and sums each
 * output across lanes. Where a call has many steps, w_hh.T copied once (transpose_pad) and read
 * in column slices by the small product (whole output vectors in registers, each slice's rows
 * read in order) streams the weights from L2 faster: about 3/4 of the dot form's time a step at
 * n = 400, k = 100 f32 (an LSTM of H = 100), the copy costing about two steps
 * (`./sliced_step 400 100`, bench/experiments/sliced_step.c).
 * transpose_pad: dst (k, ld) = src (n, k).T, columns n .. ld - 1 zero.
 * sliced_addmm: out (rows, n) += a (rows, k) @ m (k, n), m's rows ld apart and whole vectors
 * long (ld >= n rounded up to a vector), in column slices of at most RF_NV_MAX vectors; a
 * row's sums run over k in order, as the small product's. */
#define RF_SLICED(T, SFX)                                                                        \
    static void RF(transpose_pad_##SFX)(T *restrict dst, ptrdiff_t ld, const T *restrict src,    \
                                        ptrdiff_t n, ptrdiff_t k)                                \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        const ptrdiff_t n_tiled = n / VL * VL, k_tiled = k / VL * VL;                            \
        for (ptrdiff_t c = 0; c < n_tiled; c += VL)                                              \
            for (ptrdiff_t j = 0; j < k_tiled; j += VL)                                          \
                RF(transpose_tile_##SFX)(dst + j * ld + c, ld, src + c * k + j, k);              \
        for (ptrdiff_t j = 0; j < k; j++) {                                                      \
            T *d = dst + j * ld;                                                                 \
            for (ptrdiff_t c = j < k_tiled ? n_tiled : 0; c < ld; c++)                           \
                d[c] = c < n ? src[c * k + j] : (T)0;                                            \
        }                                                                                        \
    }                                                                                            \
    static void RF(sliced_addmm_##SFX)(T *out, const T *a, ptrdiff_t rows, ptrdiff_t k,          \
                                       ptrdiff_t n, const T *m, ptrdiff_t ld, T *stage)          \
    {                                                                                            \
        const ptrdiff_t vl = RF_VBYTES / (ptrdiff_t)sizeof(T), vectors = (n + vl - 1) / vl;      \
        const ptrdiff_t slices = (vectors + RF_NV_MAX - 1) / RF_NV_MAX;                          \
        const ptrdiff_t width = (vectors + slices - 1) / slices * vl;                            \
        for (ptrdiff_t r = 0; r < rows; r++)                                                     \
            for (ptrdiff_t c0 = 0; c0 < n; c0 += width)                                          \
                RF(small_addmm_##SFX)(out + r * n + c0, a + r * k, 1, k,                         \
                                      n - c0 < width ? n - c0 : width, m + c0, ld, NULL, 0,      \
                                      stage);                                                    \
    }

RF_SLICED(float, f32)
RF_SLICED(double, f64)

#undef RF_RB
#undef RF_BLOCK
#undef RF_ROWS
#undef RF_ALL_NV
#undef RF_NV_MAX
#undef RF_CASE
#undef RF_SMALL_ADDMM
#undef RF_SLICED
#undef RF_CASES_WIDE
