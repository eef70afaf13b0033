/* Elementwise passes, per target (included by simd_target.h): tanh and sigmoid a vector at a
 * time, bias + activation, the activation's derivative, and the column sums of the bias gradient. */

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

/* exp(y) for -cap <= y <= 0 (cap 746, float 104: the caller caps), the sigmoid's and the
 * softmax's (decoder_target.h): Cody-Waite reduction, then 2^n applied in two halves so that
 * the result reaches the subnormals. */
static inline __attribute__((always_inline)) RF(vec_f64) RF(exp_nonpositive_f64)(RF(vec_f64) y)
{
    typedef RF(vec_f64) VF;
    typedef RF(ivec_f64) VI;
    typedef RF(mask_f64) SI;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const VF t = y * 1.4426950408889634 + shifter;
    const VF n = t - shifter;
    VF r = y - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    /* 1 + r + r^2 P(r), P Taylor's tail to degree 14 (< 1e-19; degree 12 left 1.5e-16), the
     * rounding of the chain falling on the small part */
    VF e = (VF){0} + 1.0 / 87178291200.0;
    e = e * r + 1.0 / 6227020800.0;
    e = e * r + 1.0 / 479001600.0;
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
    e = e * (r * r) + r + 1.0;
    /* n (>= -1077) as an integer, halved with a logical shift (AVX2 has no 64-bit arithmetic
     * one): 2^n1 and 2^n2 are both normal, and the second product rounds once. */
    const SI ni = (SI)t - (SI)((VF){0} + shifter);
    const SI n1 = (SI)((VI)(ni + 2048) >> 1) - 1024;
    const SI n2 = ni - n1;
    e = e * (VF)((VI)(n1 + 1023) << 52);
    return e * (VF)((VI)(n2 + 1023) << 52);
}

static inline __attribute__((always_inline)) RF(vec_f32) RF(exp_nonpositive_f32)(RF(vec_f32) y)
{
    typedef RF(vec_f32) VF;
    typedef RF(ivec_f32) VI;
    typedef RF(mask_f32) SI;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    const VF t = y * 1.44269504f + shifter;
    const VF n = t - shifter;
    VF r = y - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    /* Cephes expf's minimax form, 1 + r + r^2 P(r): its last additions round less than a
     * Taylor Horner chain's (which came out at 2.1 ulp here without FMA) */
    VF e = (VF){0} + 1.9875691500e-4f;
    e = e * r + 1.3981999507e-3f;
    e = e * r + 8.3334519073e-3f;
    e = e * r + 4.1665795894e-2f;
    e = e * r + 1.6666665459e-1f;
    e = e * r + 5.0000001201e-1f;
    e = e * (r * r) + r + 1.0f;
    const SI ni = (SI)t - (SI)((VF){0} + shifter); /* >= -150 */
    const SI n1 = (SI)((VI)(ni + 256) >> 1) - 128;
    const SI n2 = ni - n1;
    e = e * (VF)((VI)(n1 + 127) << 23);
    return e * (VF)((VI)(n2 + 127) << 23);
}

/* ---- sigmoid, a vector of lanes at a time ---------------------------------------------------
 * sigmoid(x) = num / (1 + e), e = exp(-|x|), num = e for x < 0 and 1 otherwise: one division, no
 * cancellation on either side, the result in (0, 1]. exp as in tanh above (Cody-Waite, Taylor),
 * but 2^n is applied in two halves, so that e reaches the subnormals: |x| is capped at 746
 * (float: 104), beyond which the sigmoid rounds to 0 or 1. NaN propagates (the cap's compare is
 * false for it); +-Inf give 1 and 0. The gated cells share it (LSTM: i, f, o; GRU: r, z).
 * tests/test_simd.py measures it against a long-double oracle on a dense grid (within 2 ulp).
 */
static inline __attribute__((always_inline)) RF(vec_f64) RF(sigmoid_f64)(RF(vec_f64) x)
{
    typedef RF(vec_f64) VF;
    typedef RF(ivec_f64) VI;
    RF_TANH_ABS_CAPPED(VF, VI, UINT64_C(1) << 63, x, 746.0);
    (void)sign;
    VF e = RF(exp_nonpositive_f64)(-ax);
    const VF num = (VF)(((VI)e & (VI)(x < 0)) | ((VI)((VF){0} + 1.0) & ~(VI)(x < 0)));
    /* 1 + e = d + d_lo exactly (e <= 1): the quotient's correction for d_lo keeps the
     * rounding of 1 + e out of the result (a whole ulp of it for x < 0 otherwise) */
    const VF d = 1.0 + e;
    const VF d_lo = e - (d - 1.0);
    const VF q = num / d;
    return q - q * d_lo / d;
}

static inline __attribute__((always_inline)) RF(vec_f32) RF(sigmoid_f32)(RF(vec_f32) x)
{
    typedef RF(vec_f32) VF;
    typedef RF(ivec_f32) VI;
    RF_TANH_ABS_CAPPED(VF, VI, UINT32_C(1) << 31, x, 104.0f);
    (void)sign;
    VF e = RF(exp_nonpositive_f32)(-ax);
    const VF num = (VF)(((VI)e & (VI)(x < 0)) | ((VI)((VF){0} + 1.0f) & ~(VI)(x < 0)));
    /* 1 + e = d + d_lo exactly (e <= 1): the quotient's correction for d_lo keeps the
     * rounding of 1 + e out of the result (a whole ulp of it for x < 0 otherwise) */
    const VF d = 1.0f + e;
    const VF d_lo = e - (d - 1.0f);
    const VF q = num / d;
    return q - q * d_lo / d;
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

/* ---- sigmoid over an array (in place allowed): whole vectors, then the rest through one
 * zero-padded vector ------------------------------------------------------------------------ */
#define RF_SIGMOID_ARRAY(T, SFX)                                                                 \
    static void RF(sigmoid_array_##SFX)(T *out, const T *in, ptrdiff_t n)                        \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        ptrdiff_t i = 0;                                                                         \
        for (; i + VL <= n; i += VL) *(VT *)(out + i) = RF(sigmoid_##SFX)(*(const VT *)(in + i)); \
        if (i < n) {                                                                             \
            T part[VL] __attribute__((aligned(RF_VBYTES))) = {0};                                \
            memcpy(part, in + i, (size_t)(n - i) * sizeof(T));                                   \
            const VT v = RF(sigmoid_##SFX)(*(const VT *)part);                                   \
            memcpy(out + i, &v, (size_t)(n - i) * sizeof(T));                                    \
        }                                                                                        \
    }
RF_SIGMOID_ARRAY(float, f32)
RF_SIGMOID_ARRAY(double, f64)
#undef RF_SIGMOID_ARRAY

/* ---- the LSTM cell's pointwise parts --------------------------------------------------------
 * Rows of the step's gates hold 4H columns in PyTorch's order i, f, g, o; the states c, h rows
 * of H. A row runs whole vectors of its H units, then the rest through zero-padded vectors in
 * locals (so H need not be a multiple of the vector width, and nothing is read past a row).
 *
 * Forward, per unit: the gate pre-activations (+ bias) become i = sig, f = sig, g = tanh,
 * o = sig, written back in place (the training forward's workspace); c = f * c_prev + i * g;
 * h = o * tanh(c). c_prev NULL: zeros; bias NULL: none.
 * Backward, per unit, from dh (the gradient into h: from outside and from step t + 1), the
 * carried dc (from step t + 1; replaced by the carry into step t - 1), dc_ext (the gradient
 * into c from outside, or NULL), the saved activations and c, c_prev:
 *   tc = tanh(c), dct = dc + dc_ext + dh * o * (1 - tc^2),
 *   di = dct * g * i (1 - i), df = dct * c_prev * f (1 - f), dg = dct * i (1 - g^2),
 *   do = dh * tc * o (1 - o), and the carry dct * f.
 */
#define RF_LSTM(T, SFX)                                                                          \
    static inline __attribute__((always_inline)) void RF(lstm_fwd_vec_##SFX)(                    \
        T *gi, T *gf, T *gg, T *go, const T *b, ptrdiff_t H, const T *cp, T *c, T *h)            \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        VT vi = *(VT *)gi, vf = *(VT *)gf, vg = *(VT *)gg, vo = *(VT *)go;                       \
        if (b != NULL) {                                                                         \
            vi += *(const VT *)b;                                                                \
            vf += *(const VT *)(b + H);                                                          \
            vg += *(const VT *)(b + 2 * H);                                                      \
            vo += *(const VT *)(b + 3 * H);                                                      \
        }                                                                                        \
        vi = RF(sigmoid_##SFX)(vi);                                                              \
        vf = RF(sigmoid_##SFX)(vf);                                                              \
        vg = RF(tanh_##SFX)(vg);                                                                 \
        vo = RF(sigmoid_##SFX)(vo);                                                              \
        *(VT *)gi = vi;                                                                          \
        *(VT *)gf = vf;                                                                          \
        *(VT *)gg = vg;                                                                          \
        *(VT *)go = vo;                                                                          \
        VT vc = vi * vg;                                                                         \
        if (cp != NULL) vc = vf * *(const VT *)cp + vc;                                          \
        *(VT *)c = vc;                                                                           \
        *(VT *)h = vo * RF(tanh_##SFX)(vc);                                                      \
    }                                                                                            \
    /* units j0 .. j1 - 1 of each row only (j0 a multiple of the vector width, or j1 = H) */    \
    static void RF(lstm_forward_##SFX)(T *gates, const T *b, const T *c_prev, T *c, T *h,        \
                                       ptrdiff_t rows, ptrdiff_t H, ptrdiff_t j0, ptrdiff_t j1)  \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                   \
            T *g = gates + r * 4 * H;                                                            \
            const T *cp = c_prev == NULL ? NULL : c_prev + r * H;                                \
            T *cr = c + r * H, *hr = h + r * H;                                                  \
            ptrdiff_t j = j0;                                                                    \
            for (; j + VL <= j1; j += VL)                                                        \
                RF(lstm_fwd_vec_##SFX)(g + j, g + H + j, g + 2 * H + j, g + 3 * H + j,          \
                                       b == NULL ? NULL : b + j, H,                              \
                                       cp == NULL ? NULL : cp + j, cr + j, hr + j);              \
            if (j < j1) {                                                                        \
                const size_t m = (size_t)(j1 - j) * sizeof(T);                                   \
                T lg[4][VL] __attribute__((aligned(RF_VBYTES))) = {{0}};                         \
                T lb[4][VL] __attribute__((aligned(RF_VBYTES))) = {{0}};                         \
                T lcp[VL] __attribute__((aligned(RF_VBYTES))) = {0};                             \
                T lc[VL] __attribute__((aligned(RF_VBYTES)));                                    \
                T lh[VL] __attribute__((aligned(RF_VBYTES)));                                    \
                for (int q = 0; q < 4; q++) {                                                    \
                    memcpy(lg[q], g + q * H + j, m);                                             \
                    if (b != NULL) memcpy(lb[q], b + q * H + j, m);                              \
                }                                                                                \
                if (cp != NULL) memcpy(lcp, cp + j, m);                                          \
                RF(lstm_fwd_vec_##SFX)(lg[0], lg[1], lg[2], lg[3], b == NULL ? NULL : lb[0], VL, \
                                       cp == NULL ? NULL : lcp, lc, lh);                         \
                for (int q = 0; q < 4; q++) memcpy(g + q * H + j, lg[q], m);                     \
                memcpy(cr + j, lc, m);                                                           \
                memcpy(hr + j, lh, m);                                                           \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    static inline __attribute__((always_inline)) void RF(lstm_bwd_vec_##SFX)(                    \
        T *d, ptrdiff_t ldd, const T *dh, T *dc, const T *dce, const T *a, ptrdiff_t H,          \
        const T *c, const T *cp)                                                                 \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        const VT vi = *(const VT *)a, vf = *(const VT *)(a + H);                                 \
        const VT vg = *(const VT *)(a + 2 * H), vo = *(const VT *)(a + 3 * H);                   \
        const VT vdh = *(const VT *)dh;                                                          \
        const VT tc = RF(tanh_##SFX)(*(const VT *)c);                                            \
        VT dct = *(VT *)dc + vdh * vo * (1 - tc * tc);                                           \
        if (dce != NULL) dct += *(const VT *)dce;                                                \
        *(VT *)d = dct * vg * (vi * (1 - vi));                                                   \
        const VT vcp = cp == NULL ? (VT){0} : *(const VT *)cp;                                   \
        *(VT *)(d + ldd) = dct * vcp * (vf * (1 - vf));                                          \
        *(VT *)(d + 2 * ldd) = dct * vi * (1 - vg * vg);                                         \
        *(VT *)(d + 3 * ldd) = vdh * tc * (vo * (1 - vo));                                       \
        *(VT *)dc = dct * vf;                                                                    \
    }                                                                                            \
    static void RF(lstm_backward_##SFX)(T *dgates, const T *dh, T *dc, const T *dc_ext,          \
                                        const T *act, const T *c, const T *c_prev,               \
                                        ptrdiff_t rows, ptrdiff_t H)                             \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                   \
            T *d = dgates + r * 4 * H, *dcr = dc + r * H;                                        \
            const T *a = act + r * 4 * H, *dhr = dh + r * H, *cr = c + r * H;                    \
            const T *dce = dc_ext == NULL ? NULL : dc_ext + r * H;                               \
            const T *cp = c_prev == NULL ? NULL : c_prev + r * H;                                \
            ptrdiff_t j = 0;                                                                     \
            for (; j + VL <= H; j += VL)                                                         \
                RF(lstm_bwd_vec_##SFX)(d + j, H, dhr + j, dcr + j,                               \
                                       dce == NULL ? NULL : dce + j, a + j, H, cr + j,           \
                                       cp == NULL ? NULL : cp + j);                              \
            if (j < H) {                                                                         \
                const size_t m = (size_t)(H - j) * sizeof(T);                                    \
                T ld[4][VL] __attribute__((aligned(RF_VBYTES)));                                 \
                T la[4][VL] __attribute__((aligned(RF_VBYTES))) = {{0}};                         \
                T ldh[VL] __attribute__((aligned(RF_VBYTES))) = {0};                             \
                T ldc[VL] __attribute__((aligned(RF_VBYTES))) = {0};                             \
                T ldce[VL] __attribute__((aligned(RF_VBYTES))) = {0};                            \
                T lc[VL] __attribute__((aligned(RF_VBYTES))) = {0};                              \
                T lcp[VL] __attribute__((aligned(RF_VBYTES))) = {0};                             \
                for (int q = 0; q < 4; q++) memcpy(la[q], a + q * H + j, m);                     \
                memcpy(ldh, dhr + j, m);                                                         \
                memcpy(ldc, dcr + j, m);                                                         \
                if (dce != NULL) memcpy(ldce, dce + j, m);                                       \
                memcpy(lc, cr + j, m);                                                           \
                if (cp != NULL) memcpy(lcp, cp + j, m);                                          \
                RF(lstm_bwd_vec_##SFX)(ld[0], VL, ldh, ldc, dce == NULL ? NULL : ldce, la[0],    \
                                       VL, lc, cp == NULL ? NULL : lcp);                         \
                for (int q = 0; q < 4; q++) memcpy(d + q * H + j, ld[q], m);                     \
                memcpy(dcr + j, ldc, m);                                                         \
            }                                                                                    \
        }                                                                                        \
    }
RF_LSTM(float, f32)
RF_LSTM(double, f64)
#undef RF_LSTM

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

#undef RF_TANH_ABS_CAPPED
#undef RF_TANH_SELECT
#undef RF_ELEMENTWISE
#undef RF_COL_SUMS
