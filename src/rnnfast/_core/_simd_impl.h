/* The vector loops of the RNN kernels, compiled once per instruction set.
 *
 * No include guard: _simd.h includes this file once per target (AVX-512, AVX2+FMA, baseline
 * x86-64), inside a `#pragma GCC target` region, with RF(name) giving every function a
 * per-target name and RF_VBYTES the vector width. Everything here is static, branch-free in its
 * inner loops and written in GCC vector extensions or plain loops that gcc vectorizes.
 */

/* Vectors loaded and stored through pointers of these types: element alignment makes every
 * access an unaligned vector move and may_alias makes it legal on float/double arrays.
 * (memcpy into a vector variable instead was lowered to split copies through the stack
 * under the AVX targets, stalling every FMA on store forwarding.) */
typedef float RF(vec_f32) __attribute__((vector_size(RF_VBYTES), aligned(4), may_alias));
typedef double RF(vec_f64) __attribute__((vector_size(RF_VBYTES), aligned(8), may_alias));
/* Their lanes as unsigned integers, for the bit operations of tanh below. */
typedef uint32_t RF(ivec_f32) __attribute__((vector_size(RF_VBYTES)));
typedef uint64_t RF(ivec_f64) __attribute__((vector_size(RF_VBYTES)));

/* ---- tanh, a vector of lanes at a time -------------------------------------------------------
 * |x| < 0.625:  the odd rational (double) / polynomial (float) approximations of Cephes'
 *               tanh.c / tanhf.c, which keep full relative accuracy near 0.
 * |x| >= 0.625: tanh|x| = 1 - 2e / (1 + e), e = exp(-2|x|), with exp by Cody-Waite reduction
 *               (y = n ln2 + r, |r| <= ln2/2), a Taylor polynomial for exp(r), and 2^n built from
 *               the exponent bits. |x| is capped at 20 (float: 10), where tanh is 1 to the last
 *               bit; NaN propagates, +-Inf gives +-1.
 * Both branches are computed and the lanes chosen with bit masks, then given x's sign: written
 * in vector types because gcc vectorized the same formula written per element only for
 * AVX-512 (with its mask registers), and left it scalar for AVX2 and the baseline.
 * tests/test_simd.py measures it against numpy.tanh on a dense grid (within 2 ulp).
 */
/* Declares `sign` (x's sign bits) and `ax` (|x| capped at CAP; the compare is false for NaN,
 * so NaN passes through), for VF vectors and VI their lanes as unsigned integers. */
#define RF_TANH_ABS_CAPPED(VF, VI, TOP_BIT, x, CAP)                                              \
    const VI sign = (VI)(x) & ((VI){0} + (TOP_BIT));                                             \
    VF ax = (VF)((VI)(x) & ~sign);                                                               \
    ax = (VF)(((VI)ax & ~(VI)(ax > (CAP))) | ((VI)((VF){0} + (CAP)) & (VI)(ax > (CAP))))
/* `small` where ax < 0.625, else `large`, with x's sign bits put back. */
#define RF_TANH_SELECT(VF, VI, ax, small, large, sign)                                           \
    ((VF)((((VI)(small) & (VI)((ax) < 0.625)) | ((VI)(large) & ~(VI)((ax) < 0.625))) | (sign)))

static inline __attribute__((always_inline)) RF(vec_f64) RF(tanh_f64)(RF(vec_f64) x)
{
    typedef RF(vec_f64) VF;
    typedef RF(ivec_f64) VI;
    RF_TANH_ABS_CAPPED(VF, VI, UINT64_C(1) << 63, x, 20.0);

    const VF z = ax * ax;
    const VF p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
                 - 1.61468768441708447952e3;
    const VF q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
                 + 4.84406305325125486048e3;
    const VF small = ax + ax * z * p / q;

    const VF y = -2.0 * ax;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: rounds y/ln2 to an integer */
    const VF t = y * 1.4426950408889634 + shifter;
    const VF n = t - shifter;
    VF r = y - n * 6.93147180369123816490e-01; /* ln2, high part (exact product) */
    r = r - n * 1.90821492927058770002e-10;    /* ln2, low part */
    VF e = (VF){0} + 1.0 / 479001600.0;        /* Taylor to degree 12: < 2e-16 */
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
    /* 2^n: the low bits of t hold n; the shifter's own bits vanish in the shift */
    e = e * (VF)(((VI)t + 1023) << 52);
    const VF large = 1.0 - 2.0 * e / (1.0 + e);
    return RF_TANH_SELECT(VF, VI, ax, small, large, sign);
}

static inline __attribute__((always_inline)) RF(vec_f32) RF(tanh_f32)(RF(vec_f32) x)
{
    typedef RF(vec_f32) VF;
    typedef RF(ivec_f32) VI;
    RF_TANH_ABS_CAPPED(VF, VI, UINT32_C(1) << 31, x, 10.0f);

    const VF z = ax * ax;
    const VF small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                       + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * ax + ax;

    const VF y = -2.0f * ax;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    const VF t = y * 1.44269504f + shifter;
    const VF n = t - shifter;
    VF r = y - n * 0.693359375f; /* ln2 = 0.693359375 - 2.12194440e-4 */
    r = r + n * 2.12194440e-4f;
    VF e = (VF){0} + 1.0f / 5040.0f; /* Taylor to degree 7: < 2e-8 */
    e = e * r + 1.0f / 720.0f;
    e = e * r + 1.0f / 120.0f;
    e = e * r + 1.0f / 24.0f;
    e = e * r + 1.0f / 6.0f;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    e = e * (VF)(((VI)t + 127) << 23);
    const VF large = 1.0f - 2.0f * e / (1.0f + e);
    return RF_TANH_SELECT(VF, VI, ax, small, large, sign);
}

/* ---- elementwise passes, for T in {float, double} ------------------------------------------ */
#define RF_ELEMENTWISE(T, SFX)                                                                   \
    /* row[i] = tanh(row[i] + b[i]) (b unused unless `biased`), whole vectors. A last partial    \
     * vector is computed as the row's last whole window, read before the loop overwrites it     \
     * and stored after it (its lanes come out the same either way); a row shorter than a        \
     * vector goes through one zero-padded vector. */                                            \
    static inline __attribute__((always_inline)) void RF(tanh_row_##SFX)(                        \
        T *restrict row, const T *restrict b, ptrdiff_t n, int biased)                           \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        if (n < VL) {                                                                            \
            T part[VL] __attribute__((aligned(RF_VBYTES))) = {0};                                \
            for (ptrdiff_t j = 0; j < n; j++) part[j] = biased ? row[j] + b[j] : row[j];         \
            const VT v = RF(tanh_##SFX)(*(const VT *)part);                                      \
            memcpy(row, &v, (size_t)n * sizeof(T));                                              \
            return;                                                                              \
        }                                                                                        \
        const ptrdiff_t last = n - VL;                                                           \
        VT v_last = *(const VT *)(row + last);                                                   \
        if (n % VL) {                                                                            \
            if (biased) v_last += *(const VT *)(b + last);                                       \
            v_last = RF(tanh_##SFX)(v_last);                                                     \
        }                                                                                        \
        for (ptrdiff_t i = 0; i + VL <= n; i += VL) {                                            \
            VT v = *(const VT *)(row + i);                                                       \
            if (biased) v += *(const VT *)(b + i);                                               \
            *(VT *)(row + i) = RF(tanh_##SFX)(v);                                                \
        }                                                                                        \
        if (n % VL) *(VT *)(row + last) = v_last;                                                \
    }                                                                                            \
    /* a[r * ld + i] = act(a[r * ld + i] + b[i]) for rows x n (ld >= n: a block of a wider       \
     * matrix), b NULL for no bias; act 0 tanh, 1 relu */                                        \
    static inline __attribute__((always_inline)) void RF(bias_act_rows_##SFX)(                   \
        T *restrict a, const T *restrict b, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld, int act,  \
        int biased)                                                                              \
    {                                                                                            \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                   \
            T *restrict row = a + r * ld;                                                        \
            if (act == 0) {                                                                      \
                RF(tanh_row_##SFX)(row, b, n, biased);                                           \
            } else {                                                                             \
                /* `v <= 0` is false for NaN, so NaN propagates as in np.maximum */              \
                for (ptrdiff_t i = 0; i < n; i++) {                                              \
                    T v = biased ? row[i] + b[i] : row[i];                                       \
                    row[i] = v <= 0 ? (T)0 : v;                                                  \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    static void RF(bias_act_##SFX)(T *restrict a, const T *restrict b, ptrdiff_t rows,           \
                                   ptrdiff_t n, ptrdiff_t ld, int act)                           \
    {                                                                                            \
        /* two instances, so that `biased` is a constant in each loop */                         \
        if (b != NULL) RF(bias_act_rows_##SFX)(a, b, rows, n, ld, act, 1);                       \
        else RF(bias_act_rows_##SFX)(a, b, rows, n, ld, act, 0);                                 \
    }                                                                                            \
    /* g *= act'(pre-activation), from the output h = act(pre-activation) */                     \
    static void RF(mul_act_grad_##SFX)(T *restrict g, const T *restrict h, ptrdiff_t n, int act) \
    {                                                                                            \
        if (act == 0) {                                                                          \
            for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * (1 - h[i] * h[i]);                   \
        } else {                                                                                 \
            /* an inactive unit passes no gradient, not even an infinite one (as PyTorch) */     \
            for (ptrdiff_t i = 0; i < n; i++) g[i] = h[i] > 0 ? g[i] : (T)0;                     \
        }                                                                                        \
    }

RF_ELEMENTWISE(float, f32)
RF_ELEMENTWISE(double, f64)

/* ---- column sums (the bias gradient) ------------------------------------------------------- */
#define RF_COL_SUMS(T, SFX)                                                                      \
    /* sums[i] += a[0, i] + a[1, i] + ... + a[rows - 1, i], rows n apart, added in row order     \
     * (as a plain loop over rows would). Four vectors of columns at a time stay in registers    \
     * over all rows: a loop of rows through memory waits on each store. */                      \
    static void RF(add_col_sums_##SFX)(T *restrict sums, const T *restrict a, ptrdiff_t rows,    \
                                       ptrdiff_t n)                                              \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        ptrdiff_t c = 0;                                                                         \
        for (; c + 4 * VL <= n; c += 4 * VL) {                                                   \
            VT acc[4];                                                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)                                  \
                acc[v] = *(const VT *)(sums + c + v * VL);                                       \
            for (ptrdiff_t r = 0; r < rows; r++)                                                 \
                _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)                              \
                    acc[v] += *(const VT *)(a + r * n + c + v * VL);                             \
            _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)                                  \
                *(VT *)(sums + c + v * VL) = acc[v];                                             \
        }                                                                                        \
        for (; c + VL <= n; c += VL) {                                                           \
            VT acc = *(const VT *)(sums + c);                                                    \
            for (ptrdiff_t r = 0; r < rows; r++) acc += *(const VT *)(a + r * n + c);            \
            *(VT *)(sums + c) = acc;                                                             \
        }                                                                                        \
        for (; c < n; c++) {                                                                     \
            T acc = sums[c];                                                                     \
            for (ptrdiff_t r = 0; r < rows; r++) acc += a[r * n + c];                            \
            sums[c] = acc;                                                                       \
        }                                                                                        \
    }

RF_COL_SUMS(float, f32)
RF_COL_SUMS(double, f64)

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

/* ---- transposing sum and tile transpose: butterflies over VL vectors -----------------------
 * reduce(acc)[q] = sum of acc[q]'s lanes, for q < VL. Level s pairs acc[q] with acc[q + s]
 * (q < s): lanes with bit s clear add up halves of acc[q], lanes with bit s set halves of
 * acc[q + s], so after the levels VL/2 .. 1 lane q holds row q. VL - 1 shuffle pairs and
 * adds for VL rows, instead of a full horizontal sum per row.
 */
#define RF_MASK_U(i, s, VL) (((i) & (s)) ? (VL) + (i) - (s) : (i))
#define RF_MASK_V(i, s, VL) (((i) & (s)) ? (VL) + (i) : (i) + (s))
#define RF_LANES2(M, s, VL) M(0, s, VL), M(1, s, VL)
#define RF_LANES4(M, s, VL) RF_LANES2(M, s, VL), M(2, s, VL), M(3, s, VL)
#define RF_LANES8(M, s, VL) RF_LANES4(M, s, VL), M(4, s, VL), M(5, s, VL), M(6, s, VL), M(7, s, VL)
#define RF_LANES16(M, s, VL)                                                                     \
    RF_LANES8(M, s, VL), M(8, s, VL), M(9, s, VL), M(10, s, VL), M(11, s, VL), M(12, s, VL),     \
        M(13, s, VL), M(14, s, VL), M(15, s, VL)
/* One level s of the butterflies below, on the vectors V[0 .. VL - 1]. Fold: V[q] gets the sums
 * of V[q] and V[q + s] paired as above (q < s). Swap: for r with bit s clear, V[r] and
 * V[r + s] exchange their off-diagonal s x s blocks (a tile transpose after all levels). */
#define RF_FOLD(V, VT, MT, LANES, s, VL)                                                         \
    for (int q = 0; q < (s); q++) {                                                              \
        VT lo_ = V[q], hi_ = V[q + (s)];                                                         \
        V[q] = __builtin_shuffle(lo_, hi_, (MT){LANES(RF_MASK_U, s, VL)})                        \
               + __builtin_shuffle(lo_, hi_, (MT){LANES(RF_MASK_V, s, VL)});                     \
    }
#define RF_SWAP(V, VT, MT, LANES, s, VL)                                                         \
    for (int r = 0; r < (VL); r++) {                                                             \
        if (r & (s)) continue;                                                                   \
        VT lo_ = V[r], hi_ = V[r + (s)];                                                         \
        V[r] = __builtin_shuffle(lo_, hi_, (MT){LANES(RF_MASK_U, s, VL)});                       \
        V[r + (s)] = __builtin_shuffle(lo_, hi_, (MT){LANES(RF_MASK_V, s, VL)});                 \
    }
/* STEP at every level, s = VL / 2 down to 1 */
#define RF_LEVELS_2(STEP, V, VT, MT) STEP(V, VT, MT, RF_LANES2, 1, 2)
#define RF_LEVELS_4(STEP, V, VT, MT)                                                             \
    STEP(V, VT, MT, RF_LANES4, 2, 4) STEP(V, VT, MT, RF_LANES4, 1, 4)
#define RF_LEVELS_8(STEP, V, VT, MT)                                                             \
    STEP(V, VT, MT, RF_LANES8, 4, 8) STEP(V, VT, MT, RF_LANES8, 2, 8)                            \
    STEP(V, VT, MT, RF_LANES8, 1, 8)
#define RF_LEVELS_16(STEP, V, VT, MT)                                                            \
    STEP(V, VT, MT, RF_LANES16, 8, 16) STEP(V, VT, MT, RF_LANES16, 4, 16)                        \
    STEP(V, VT, MT, RF_LANES16, 2, 16) STEP(V, VT, MT, RF_LANES16, 1, 16)
#define RF_LEVELS_N2(n, STEP, V, VT, MT) RF_LEVELS_##n(STEP, V, VT, MT)
#define RF_LEVELS_N(n, STEP, V, VT, MT) RF_LEVELS_N2(n, STEP, V, VT, MT)

#define RF_REDUCE(T, SFX, IT, VLN)                                                               \
    typedef IT RF(mask_##SFX) __attribute__((vector_size(RF_VBYTES)));                          \
    static inline __attribute__((always_inline)) RF(vec_##SFX) RF(reduce_##SFX)(               \
        RF(vec_##SFX) acc[VLN])                                                                  \
    {                                                                                            \
        RF_LEVELS_N(VLN, RF_FOLD, acc, RF(vec_##SFX), RF(mask_##SFX))                           \
        return acc[0];                                                                           \
    }
/* dst[i * ldd + j] = src[j * lds + i] for a VL x VL tile (the forward's packing of w_hh.T), in
 * registers: the swap levels above. */
#define RF_TRANSPOSE(T, SFX, VLN)                                                                \
    static inline __attribute__((always_inline)) void RF(transpose_tile_##SFX)(                  \
        T *restrict dst, ptrdiff_t ldd, const T *restrict src, ptrdiff_t lds)                    \
    {                                                                                            \
        RF(vec_##SFX) rows[VLN];                                                                 \
        _Pragma("GCC unroll 16") for (int r = 0; r < VLN; r++)                                   \
            rows[r] = *(const RF(vec_##SFX) *)(src + r * lds);                                   \
        RF_LEVELS_N(VLN, RF_SWAP, rows, RF(vec_##SFX), RF(mask_##SFX))                           \
        _Pragma("GCC unroll 16") for (int r = 0; r < VLN; r++)                                   \
            *(RF(vec_##SFX) *)(dst + r * ldd) = rows[r];                                         \
    }

#if RF_VBYTES == 64
RF_REDUCE(float, f32, int32_t, 16)
RF_REDUCE(double, f64, int64_t, 8)
RF_TRANSPOSE(float, f32, 16)
RF_TRANSPOSE(double, f64, 8)
#elif RF_VBYTES == 32
RF_REDUCE(float, f32, int32_t, 8)
RF_REDUCE(double, f64, int64_t, 4)
RF_TRANSPOSE(float, f32, 8)
RF_TRANSPOSE(double, f64, 4)
#else
RF_REDUCE(float, f32, int32_t, 4)
RF_REDUCE(double, f64, int64_t, 2)
RF_TRANSPOSE(float, f32, 4)
RF_TRANSPOSE(double, f64, 2)
#endif

/* ---- panel product: out (rows, n) += a (rows, k) @ m (k, n), m packed once -----------------
 * For the per-step product of batched steps. m is packed once per call (pack_panels) into
 * column panels of RF_PANEL_NR (_simd.h) whole vectors, and a last narrower panel of as many
 * vectors as the remaining columns need: panel q is (k, its width), contiguous, zero-padded
 * past column n. A step then reads every weight once, sequentially, and the micro-kernel keeps
 * an MR x NR block of out in registers, MR rows of `a` sharing each load of a panel row:
 * MR * NR accumulators + NR loads + 1 broadcast <= the register file. This is the
 * packed-weights GEMM of oneDNN's RNN: OpenBLAS packs w_hh again on every step's call.
 * A last partial vector goes through `stage` (MR x NRW), so lanes past n never touch out.
 */
#if RF_VBYTES == 64
#define RF_PANEL_MR 8 /* 24 accumulators of 32 registers */
#else
#define RF_PANEL_MR 4 /* 12 of 16 */
#endif

#define RF_PANEL_KERNEL(T, SFX, NR, MR)                                                          \
    static inline __attribute__((always_inline)) void RF(panel_##SFX##_##NR##_##MR)(            \
        T *out, ptrdiff_t ldo, const T *a, ptrdiff_t lda, const T *panel, ptrdiff_t k)           \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        VT acc[MR][NR];                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < NR; v++)                                 \
                acc[r][v] = *(const VT *)(out + r * ldo + v * VL);                               \
        for (ptrdiff_t j = 0; j < k; j++) {                                                      \
            const T *row = panel + j * (NR * VL);                                                \
            VT w[NR];                                                                            \
            _Pragma("GCC unroll 4") for (int v = 0; v < NR; v++)                                 \
                w[v] = *(const VT *)(row + v * VL);                                              \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) {                               \
                T s = a[r * lda + j];                                                            \
                _Pragma("GCC unroll 4") for (int v = 0; v < NR; v++) acc[r][v] += s * w[v];      \
            }                                                                                    \
        }                                                                                        \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < NR; v++)                                 \
                *(VT *)(out + r * ldo + v * VL) = acc[r][v];                                     \
    }

#define RF_PANEL_CASE(SFX, NR, MR)                                                               \
    case MR: RF(panel_##SFX##_##NR##_##MR)(out, ldo, a, lda, panel, k); return;

/* One kernel per block height 1..RF_PANEL_MR, and the switch that picks one. */
#if RF_PANEL_MR == 8
#define RF_PANEL_HEIGHTS(X, ...)                                                                 \
    X(__VA_ARGS__, 1) X(__VA_ARGS__, 2) X(__VA_ARGS__, 3) X(__VA_ARGS__, 4)                      \
    X(__VA_ARGS__, 5) X(__VA_ARGS__, 6) X(__VA_ARGS__, 7) X(__VA_ARGS__, 8)
#else
#define RF_PANEL_HEIGHTS(X, ...)                                                                 \
    X(__VA_ARGS__, 1) X(__VA_ARGS__, 2) X(__VA_ARGS__, 3) X(__VA_ARGS__, 4)
#endif

#define RF_PANEL_WIDTH(T, SFX, NR)                                                               \
    RF_PANEL_HEIGHTS(RF_PANEL_KERNEL, T, SFX, NR)                                                \
    static void RF(panel_block_##SFX##_##NR)(int mr, T *out, ptrdiff_t ldo, const T *a,         \
                                             ptrdiff_t lda, const T *panel, ptrdiff_t k)         \
    {                                                                                            \
        switch (mr) {                                                                            \
            RF_PANEL_HEIGHTS(RF_PANEL_CASE, SFX, NR)                                             \
        default: return;                                                                         \
        }                                                                                        \
    }

#if RF_PANEL_NR != 3
#error "the panel product instantiates panel widths 1 to 3 vectors"
#endif

#define RF_PANEL(T, SFX)                                                                         \
    RF_PANEL_WIDTH(T, SFX, 1) RF_PANEL_WIDTH(T, SFX, 2) RF_PANEL_WIDTH(T, SFX, 3)                \
    /* One block of mr <= RF_PANEL_MR rows against one panel of nr vectors. */                   \
    static void RF(panel_block_##SFX)(int nr, int mr, T *out, ptrdiff_t ldo, const T *a,         \
                                      ptrdiff_t lda, const T *panel, ptrdiff_t k)                \
    {                                                                                            \
        if (nr == 3) RF(panel_block_##SFX##_3)(mr, out, ldo, a, lda, panel, k);                  \
        else if (nr == 2) RF(panel_block_##SFX##_2)(mr, out, ldo, a, lda, panel, k);             \
        else RF(panel_block_##SFX##_1)(mr, out, ldo, a, lda, panel, k);                          \
    }                                                                                            \
    /* Panel q: its first column c0 and width in vectors (NR, the last one fewer). */            \
    static inline void RF(panel_span_##SFX)(ptrdiff_t q, ptrdiff_t n, ptrdiff_t *c0, int *nr)    \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), NRW = RF_PANEL_NR * VL };                             \
        *c0 = q * NRW;                                                                           \
        const ptrdiff_t left = n - *c0;                                                          \
        *nr = left >= NRW ? RF_PANEL_NR : (int)((left + VL - 1) / VL);                           \
    }                                                                                            \
    /* dst: panel q at dst + c0 * k, dst[c0 * k + j * w + c] = m[j, c0 + c] (0 past n), w its    \
     * width; m[j, i] = src[j * ld + i], or src[i * ld + j] when `transposed` (the forward       \
     * packs w_hh.T from w_hh as stored). dst holds k * (n rounded up to whole vectors). */      \
    static void RF(pack_panels_##SFX)(T *restrict dst, const T *restrict src, ptrdiff_t k,       \
                                      ptrdiff_t n, ptrdiff_t ld, int transposed)                 \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), NRW = RF_PANEL_NR * VL };                             \
        for (ptrdiff_t q = 0; q * NRW < n; q++) {                                                \
            ptrdiff_t c0;                                                                        \
            int nr;                                                                              \
            RF(panel_span_##SFX)(q, n, &c0, &nr);                                                \
            const ptrdiff_t w = nr * VL, valid = n - c0 < w ? n - c0 : w;                        \
            T *panel = dst + c0 * k;                                                             \
            if (!transposed) { /* each row of the panel: a row segment of m, zeros past n */     \
                for (ptrdiff_t j = 0; j < k; j++) {                                              \
                    memcpy(panel + j * w, src + j * ld + c0, (size_t)valid * sizeof(T));         \
                    memset(panel + j * w + valid, 0, (size_t)(w - valid) * sizeof(T));           \
                }                                                                                \
                continue;                                                                        \
            }                                                                                    \
            /* transposed: whole VL x VL tiles, then the rest of the panel element by element */ \
            const ptrdiff_t c_tiled = valid / VL * VL, j_tiled = k / VL * VL;                    \
            for (ptrdiff_t c = 0; c < c_tiled; c += VL)                                          \
                for (ptrdiff_t j = 0; j < j_tiled; j += VL)                                      \
                    RF(transpose_tile_##SFX)(panel + j * w + c, w, src + (c0 + c) * ld + j, ld); \
            for (ptrdiff_t j = 0; j < k; j++) {                                                  \
                T *d = panel + j * w;                                                            \
                for (ptrdiff_t c = j < j_tiled ? c_tiled : 0; c < w; c++)                        \
                    d[c] = c0 + c >= n ? (T)0 : src[(c0 + c) * ld + j];                          \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* out (rows, n) += a (rows, k) @ m (k, n), m packed by pack_panels; only the columns of     \
     * panels q0 .. q1 - 1 (stage, for a last partial panel, may be NULL if that is not among    \
     * them). */                                                                                 \
    static void RF(panel_addmm_##SFX)(T *out, const T *a, ptrdiff_t rows, ptrdiff_t k,           \
                                      ptrdiff_t n, const T *packed, T *stage, ptrdiff_t q0,      \
                                      ptrdiff_t q1)                                              \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), NRW = RF_PANEL_NR * VL, MR = RF_PANEL_MR };           \
        for (ptrdiff_t q = q0; q < q1 && q * NRW < n; q++) {                                     \
            ptrdiff_t c0;                                                                        \
            int nr;                                                                              \
            RF(panel_span_##SFX)(q, n, &c0, &nr);                                                \
            const T *panel = packed + c0 * k;                                                    \
            const ptrdiff_t width = n - c0 < NRW ? n - c0 : NRW, w = nr * VL;                    \
            for (ptrdiff_t r = 0; r < rows; r += MR) {                                           \
                const int mr = rows - r < MR ? (int)(rows - r) : MR;                             \
                T *o = out + r * n + c0;                                                         \
                if (width == w) {                                                                \
                    RF(panel_block_##SFX)(nr, mr, o, n, a + r * k, k, panel, k);                 \
                    continue;                                                                    \
                }                                                                                \
                for (int i = 0; i < mr; i++)                                                     \
                    memcpy(stage + i * w, o + i * n, width * sizeof(T));                         \
                RF(panel_block_##SFX)(nr, mr, stage, w, a + r * k, k, panel, k);                 \
                for (int i = 0; i < mr; i++)                                                     \
                    memcpy(o + i * n, stage + i * w, width * sizeof(T));                         \
            }                                                                                    \
        }                                                                                        \
    }

RF_PANEL(float, f32)
RF_PANEL(double, f64)

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
 * already. Two lines, not four: bench/experiments/step_dot.c at offset 4, three runs each
 * (before the passes alternated direction), D=32 H=128 0.97-0.98 us against 1.03-1.07 and
 * D=48 H=256 3.34-3.43 against 3.69-3.79, but D=32 H=64 (all in L1) 0.30-0.32 against
 * 0.27-0.28. */
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
     * lines read last are read first again, from L1 where the weights do not fit in it.         \
     * bench/experiments/step_dot.c, B=1, the products before and after, alternating: D=32       \
     * H=128 0.78-0.81 -> 0.61 us (five pairs), D=65 H=100 1.08-1.11 -> 0.83-0.84 (two); D=48    \
     * H=256 2.95-3.03 -> 2.64-2.66 (two, with the units past the last block taken last both     \
     * ways). A unit's sum is the same in either direction. `flip` is shared by all threads,     \
     * and a lost update costs only that reuse. */                                               \
    static void RF(step_dot_##SFX)(T *restrict out, const T *restrict a, const T *restrict wa,   \
                                   ptrdiff_t ka, const T *restrict c, const T *restrict wc,      \
                                   ptrdiff_t kc, const T *restrict bias, ptrdiff_t rows,         \
                                   ptrdiff_t n)                                                  \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), R_MAX = VL < 4 ? VL : 4 };                            \
        static int flip;                                                                         \
        const int ma = RF(dot_shift)(wa, ka, sizeof(T));                                         \
        const int mc = c == NULL ? 0 : RF(dot_shift)(wc, kc, sizeof(T));                         \
        int backward = !__atomic_load_n(&flip, __ATOMIC_RELAXED);                                \
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
        __atomic_store_n(&flip, !backward, __ATOMIC_RELAXED);                                    \
    }

RF_DOT(float, f32)
RF_DOT(double, f64)

#undef RF_TANH_ABS_CAPPED
#undef RF_TANH_SELECT
#undef RF_RB
#undef RF_BLOCK
#undef RF_ROWS
#undef RF_ALL_NV
#undef RF_NV_MAX
#undef RF_CASE
#undef RF_SMALL_ADDMM
#undef RF_CASES_WIDE
#undef RF_ELEMENTWISE
#undef RF_DOT
#undef RF_DOT_ROWS
#undef RF_DOT_PASS
#undef RF_PANEL_MR
#undef RF_PANEL_KERNEL
#undef RF_PANEL_CASE
#undef RF_PANEL_WIDTH
#undef RF_PANEL_HEIGHTS
#undef RF_PANEL
#undef RF_MASK_U
#undef RF_MASK_V
#undef RF_LANES2
#undef RF_LANES4
#undef RF_LANES8
#undef RF_LANES16
#undef RF_FOLD
#undef RF_SWAP
#undef RF_LEVELS_2
#undef RF_LEVELS_4
#undef RF_LEVELS_8
#undef RF_LEVELS_16
#undef RF_LEVELS_N2
#undef RF_LEVELS_N
#undef RF_REDUCE
#undef RF_TRANSPOSE
