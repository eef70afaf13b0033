/* The decoder's softmax cross-entropy passes for one instruction set (decoder.h includes this
 * once per target, as simd.h includes simd_target.h, whose vector types it uses).
 *
 * The logits are transposed, (V, n): a vector holds VL examples' logits of one class, so the
 * softmax's reductions over the classes are lane-wise (a column block of V x VL values stays in
 * L1 through the three passes: max, exp and sum, scale).
 */

/* exp(y) for y <= 0 (the logits minus their column's maximum): simd_elementwise.h's, with y
 * below the cap (-inf included) taken as the cap, whose exp rounds to 0; NaN propagates. */
static inline __attribute__((always_inline)) RF(vec_f32) RF(xent_exp_f32)(RF(vec_f32) y)
{
    typedef RF(ivec_f32) VI;
    const VI low = (VI)(y < -104.0f);
    y = (RF(vec_f32))(((VI)y & ~low) | ((VI)((RF(vec_f32)){0} - 104.0f) & low));
    return RF(exp_nonpositive_f32)(y);
}

static inline __attribute__((always_inline)) RF(vec_f64) RF(xent_exp_f64)(RF(vec_f64) y)
{
    typedef RF(ivec_f64) VI;
    const VI low = (VI)(y < -746.0);
    y = (RF(vec_f64))(((VI)y & ~low) | ((VI)((RF(vec_f64)){0} - 746.0) & low));
    return RF(exp_nonpositive_f64)(y);
}

/* See rf_softmax_xent_* in decoder.h. Whole vectors of columns here; the last n % VL columns
 * one at a time with libm's exp. */
#define RF_DECODER_PASSES(T, SFX, EXP, LOG)                                                      \
    static double RF(softmax_xent_##SFX)(T *restrict z, ptrdiff_t ld, ptrdiff_t V, ptrdiff_t n, \
                                         const T *restrict bias, const int64_t *restrict tgt,    \
                                         T scale)                                                \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        typedef RF(ivec_##SFX) VI;                                                               \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        T mx[VL] __attribute__((aligned(RF_VBYTES)));                                            \
        T sm[VL] __attribute__((aligned(RF_VBYTES)));                                            \
        double loss = 0;                                                                         \
        ptrdiff_t j = 0;                                                                         \
        for (; j + VL <= n; j += VL) {                                                           \
            T *col = z + j;                                                                      \
            VT m = *(VT *)col;                                                                   \
            if (bias) m = m + bias[0];                                                           \
            for (ptrdiff_t v = 0; v < V; v++) {                                                  \
                VT a = *(VT *)(col + v * ld);                                                    \
                if (bias) {                                                                      \
                    a = a + bias[v];                                                             \
                    *(VT *)(col + v * ld) = a;                                                   \
                }                                                                                \
                const VI k = (VI)(a > m);                                                        \
                m = (VT)(((VI)a & k) | ((VI)m & ~k));                                            \
            }                                                                                    \
            *(VT *)mx = m;                                                                       \
            T shifted[VL];                                                                       \
            for (int l = 0; l < VL; l++) shifted[l] = col[tgt[j + l] * ld + l] - mx[l];          \
            VT s = (VT){0};                                                                      \
            for (ptrdiff_t v = 0; v < V; v++) {                                                  \
                const VT e = RF(xent_exp_##SFX)(*(VT *)(col + v * ld) - m);                      \
                *(VT *)(col + v * ld) = e;                                                       \
                s += e;                                                                          \
            }                                                                                    \
            *(VT *)sm = s;                                                                       \
            for (int l = 0; l < VL; l++) loss += (double)(LOG(sm[l]) - shifted[l]);             \
            const VT f = scale / s;                                                              \
            for (ptrdiff_t v = 0; v < V; v++) *(VT *)(col + v * ld) *= f;                        \
            for (int l = 0; l < VL; l++) col[tgt[j + l] * ld + l] -= scale;                      \
        }                                                                                        \
        for (; j < n; j++) {                                                                     \
            T *col = z + j;                                                                      \
            T m = col[0] + (bias ? bias[0] : 0);                                                 \
            for (ptrdiff_t v = 0; v < V; v++) {                                                  \
                if (bias) col[v * ld] += bias[v];                                                \
                if (col[v * ld] > m) m = col[v * ld];                                            \
            }                                                                                    \
            const T shifted = col[tgt[j] * ld] - m;                                              \
            T s = 0;                                                                             \
            for (ptrdiff_t v = 0; v < V; v++) {                                                  \
                col[v * ld] = EXP(col[v * ld] - m);                                              \
                s += col[v * ld];                                                                \
            }                                                                                    \
            loss += (double)(LOG(s) - shifted);                                                  \
            const T f = scale / s;                                                               \
            for (ptrdiff_t v = 0; v < V; v++) col[v * ld] *= f;                                  \
            col[tgt[j] * ld] -= scale;                                                           \
        }                                                                                        \
        return loss;                                                                             \
    }                                                                                            \
    static void RF(row_sums_##SFX)(T *restrict out, const T *restrict a, ptrdiff_t rows,        \
                                   ptrdiff_t n, ptrdiff_t ld)                                    \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                   \
            const T *row = a + r * ld;                                                           \
            VT acc[4] = {{0}, {0}, {0}, {0}};                                                    \
            ptrdiff_t j = 0;                                                                     \
            for (; j + 4 * VL <= n; j += 4 * VL)                                                 \
                for (int q = 0; q < 4; q++) acc[q] += *(const VT *)(row + j + q * VL);           \
            for (; j + VL <= n; j += VL) acc[0] += *(const VT *)(row + j);                      \
            const VT v = (acc[0] + acc[1]) + (acc[2] + acc[3]);                                 \
            T s = 0;                                                                             \
            for (int l = 0; l < VL; l++) s += v[l];                                              \
            for (; j < n; j++) s += row[j];                                                      \
            out[r] = s;                                                                          \
        }                                                                                        \
    }

RF_DECODER_PASSES(float, f32, expf, logf)
RF_DECODER_PASSES(double, f64, exp, log)
#undef RF_DECODER_PASSES
