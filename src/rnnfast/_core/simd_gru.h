/* The GRU cell's pointwise parts, per target (included by simd_target.h after
 * simd_elementwise.h, whose tanh and sigmoid they use).
 *
 * A row of one batch element, H units, gates in PyTorch's order r, z, n:
 *   forward:  r = sig(gx_r + gh_r), z = sig(gx_z + gh_z), a = gh_n (W_hn h + b_hn),
 *             n = tanh(gx_n + r * a), h' = n + z * (h - n)   (= (1 - z) n + z h, as PyTorch)
 *   where gx = x W_ih^T + b_ih (+ b_hh for r and z) and gh = h W_hh^T (+ b_hn for n).
 *   The training forward keeps ws = [r, z, n, a] (4H) per row.
 *   backward: from d = dL/dh' and ws, h:
 *             dn = d (1 - z) (1 - n^2)            (the n pre-activation, input side)
 *             dz = d (h - n) z (1 - z),  dr = dn a r (1 - r)
 *             ws <- [dr, dz, r dn, dn]            (in place: da_h its first 3H columns,
 *                                                  da_x = [dr, dz, dn] -> dW_ih, dx, db_ih)
 *             da_h = [dr, dz, r dn]               (also apart: -> dh_prev)
 *             d <- d z                            (the direct part of dL/dh)
 */

/* The logistic function a vector at a time: simd_elementwise.h's, shared with the LSTM. */
#define RF_GRU_SIG_f32(v) RF(sigmoid_f32)(v)
#define RF_GRU_SIG_f64(v) RF(sigmoid_f64)(v)

/* gru_forward_rows with constant flags (biased, has_h, keep), the other arguments as named. */
#define RF_GRU_ROWS_(SFX, B_, P_, K_)                                                            \
    RF(gru_forward_rows_##SFX)(g, ldg, gh, ldh, sh, jh, bx, bhn, hp, out, ws, rows, H, j0, j1,   \
                               B_, P_, K_)

#define RF_GRU(T, SFX)                                                                           \
    /* One vector of units: the gates and the output from the pre-activation parts. */          \
    static inline __attribute__((always_inline)) void RF(gru_lanes_##SFX)(                      \
        RF(vec_##SFX) xr, RF(vec_##SFX) xz, RF(vec_##SFX) xn, RF(vec_##SFX) hr,                  \
        RF(vec_##SFX) hz, RF(vec_##SFX) a, RF(vec_##SFX) hp, RF(vec_##SFX) * r,                  \
        RF(vec_##SFX) * z, RF(vec_##SFX) * n, RF(vec_##SFX) * out)                               \
    {                                                                                            \
        *r = RF_GRU_SIG_##SFX(xr + hr);                                                          \
        *z = RF_GRU_SIG_##SFX(xz + hz);                                                          \
        *n = RF(tanh_##SFX)(xn + *r * a);                                                        \
        *out = *n + *z * (hp - *n);                                                              \
    }                                                                                            \
    /* Rows of the forward, units j0 .. j1 - 1: g (rows, ldg) the input projection without     \
     * bias (gates r, z, n H apart), gh the recurrent product without bias, unit j of gate q    \
     * of row b at gh[b * ldh + q * sh + j - jh] (the whole (rows, 3H): ldh = 3H, sh = H,       \
     * jh = 0; a block's stage: its own row length and gate stride, jh = j0), bx (3H) the       \
     * folded input-side bias and bhn (H) b_hn (both NULL: none), hp (rows, H) the state before \
     * (NULL: zeros); writes out (rows, H) and, unless NULL, ws (rows, 4H), which may be g      \
     * itself (ldg = 4H, or one row: each element is read before it is written). Per element;   \
     * the vector loop and the zero-padded tail give every lane the same arithmetic, so that    \
     * the bits do not depend on which units a call covers. */                                  \
    static inline __attribute__((always_inline)) void RF(gru_forward_rows_##SFX)(                \
        const T *g, ptrdiff_t ldg, const T *restrict gh, ptrdiff_t ldh, ptrdiff_t sh,           \
        ptrdiff_t jh, const T *restrict bx, const T *restrict bhn, const T *restrict hp,         \
        T *restrict out, T *ws, ptrdiff_t rows, ptrdiff_t H, ptrdiff_t j0, ptrdiff_t j1,         \
        int biased, int has_h, int keep)                                                         \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        for (ptrdiff_t b = 0; b < rows; b++) {                                                   \
            const T *gb = g + b * ldg, *hb = gh + b * ldh;                                       \
            const T *pb = has_h ? hp + b * H : NULL;                                             \
            T *ob = out + b * H, *wb = keep ? ws + b * 4 * H : NULL;                             \
            ptrdiff_t j = j0;                                                                    \
            for (; j + VL <= j1; j += VL) {                                                      \
                VT xr = *(const VT *)(gb + j), xz = *(const VT *)(gb + H + j);                   \
                VT xn = *(const VT *)(gb + 2 * H + j);                                           \
                VT a = *(const VT *)(hb + 2 * sh + j - jh);                                      \
                if (biased) {                                                                    \
                    xr += *(const VT *)(bx + j);                                                 \
                    xz += *(const VT *)(bx + H + j);                                             \
                    xn += *(const VT *)(bx + 2 * H + j);                                         \
                    a += *(const VT *)(bhn + j);                                                 \
                }                                                                                \
                VT p = has_h ? *(const VT *)(pb + j) : (VT){0};                                  \
                VT r, z, n, o;                                                                   \
                RF(gru_lanes_##SFX)(xr, xz, xn, *(const VT *)(hb + j - jh),                      \
                                    *(const VT *)(hb + sh + j - jh), a, p, &r, &z, &n, &o);      \
                *(VT *)(ob + j) = o;                                                             \
                if (keep) {                                                                      \
                    *(VT *)(wb + j) = r;                                                         \
                    *(VT *)(wb + H + j) = z;                                                     \
                    *(VT *)(wb + 2 * H + j) = n;                                                 \
                    *(VT *)(wb + 3 * H + j) = a;                                                 \
                }                                                                                \
            }                                                                                    \
            if (j < j1) {                                                                        \
                T v[7][VL] __attribute__((aligned(RF_VBYTES))) = {{0}};                          \
                const ptrdiff_t m = j1 - j;                                                      \
                for (ptrdiff_t i = 0; i < m; i++) {                                              \
                    v[0][i] = gb[j + i] + (biased ? bx[j + i] : (T)0);                           \
                    v[1][i] = gb[H + j + i] + (biased ? bx[H + j + i] : (T)0);                   \
                    v[2][i] = gb[2 * H + j + i] + (biased ? bx[2 * H + j + i] : (T)0);           \
                    v[3][i] = hb[j - jh + i];                                                    \
                    v[4][i] = hb[sh + j - jh + i];                                               \
                    v[5][i] = hb[2 * sh + j - jh + i] + (biased ? bhn[j + i] : (T)0);            \
                    v[6][i] = has_h ? pb[j + i] : (T)0;                                          \
                }                                                                                \
                VT r, z, n, o;                                                                   \
                RF(gru_lanes_##SFX)(*(const VT *)v[0], *(const VT *)v[1], *(const VT *)v[2],     \
                                    *(const VT *)v[3], *(const VT *)v[4], *(const VT *)v[5],     \
                                    *(const VT *)v[6], &r, &z, &n, &o);                          \
                for (ptrdiff_t i = 0; i < m; i++) {                                              \
                    ob[j + i] = o[i];                                                            \
                    if (keep) {                                                                  \
                        wb[j + i] = r[i];                                                        \
                        wb[H + j + i] = z[i];                                                    \
                        wb[2 * H + j + i] = n[i];                                                \
                        wb[3 * H + j + i] = v[5][i];                                             \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* One instance per case, so that the flags are constants in each loop; the arguments    \
     * after ws as gru_forward_rows's. */                                                        \
    static inline __attribute__((always_inline)) void RF(gru_forward_cols_##SFX)(                \
        const T *g, ptrdiff_t ldg, const T *gh, ptrdiff_t ldh, ptrdiff_t sh, ptrdiff_t jh,       \
        const T *bx, const T *bhn, const T *hp, T *out, T *ws, ptrdiff_t rows, ptrdiff_t H,      \
        ptrdiff_t j0, ptrdiff_t j1)                                                              \
    {                                                                                            \
        if (ws != NULL) {                                                                        \
            if (bx != NULL && hp != NULL) RF_GRU_ROWS_(SFX, 1, 1, 1);                            \
            else if (bx != NULL) RF_GRU_ROWS_(SFX, 1, 0, 1);                                     \
            else if (hp != NULL) RF_GRU_ROWS_(SFX, 0, 1, 1);                                     \
            else RF_GRU_ROWS_(SFX, 0, 0, 1);                                                     \
        } else {                                                                                 \
            if (bx != NULL && hp != NULL) RF_GRU_ROWS_(SFX, 1, 1, 0);                            \
            else if (bx != NULL) RF_GRU_ROWS_(SFX, 1, 0, 0);                                     \
            else if (hp != NULL) RF_GRU_ROWS_(SFX, 0, 1, 0);                                     \
            else RF_GRU_ROWS_(SFX, 0, 0, 0);                                                     \
        }                                                                                        \
    }                                                                                            \
    /* Whole rows (g and gh (rows, 3H)). */                                                      \
    static void RF(gru_forward_##SFX)(const T *g, const T *gh, const T *bx, const T *bhn,        \
                                      const T *hp, T *out, T *ws, ptrdiff_t rows, ptrdiff_t H)   \
    {                                                                                            \
        RF(gru_forward_cols_##SFX)(g, 3 * H, gh, 3 * H, H, 0, bx, bhn, hp, out, ws, rows, H, 0,  \
                                   H);                                                           \
    }                                                                                            \
    /* Rows of the backward (see the top): d (rows, H) in, d z out; ws (rows, 4H) [r, z, n, a] \
     * in, [dr, dz, r dn, dn] out (in place: each element is read before it is written);      \
     * hp (rows, H) the state before (NULL: zeros); writes da_h (rows, 3H) [dr, dz, r dn]. A   \
     * vector loop and a scalar tail (no transcendental: the same arithmetic either way). */    \
    static void RF(gru_backward_##SFX)(T *restrict d, T *ws, const T *restrict hp,              \
                                       T *restrict da_h, ptrdiff_t rows, ptrdiff_t H)            \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        const ptrdiff_t N = 3 * H;                                                               \
        for (ptrdiff_t b = 0; b < rows; b++) {                                                   \
            T *restrict db_ = d + b * H;                                                         \
            T *w = ws + b * 4 * H;                                                               \
            const T *restrict p = hp == NULL ? NULL : hp + b * H;                                \
            T *restrict gh = da_h + b * N;                                                       \
            ptrdiff_t j = 0;                                                                     \
            for (; j + VL <= H; j += VL) {                                                       \
                const VT r = *(const VT *)(w + j), z = *(const VT *)(w + H + j);                 \
                const VT n = *(const VT *)(w + 2 * H + j), a = *(const VT *)(w + 3 * H + j);     \
                const VT dd = *(const VT *)(db_ + j);                                            \
                const VT h = p == NULL ? (VT){0} : *(const VT *)(p + j);                         \
                const VT dn = dd * (1 - z) * (1 - n * n);                                        \
                const VT dz = dd * (h - n) * (z * (1 - z));                                      \
                const VT dr = dn * a * (r * (1 - r));                                            \
                const VT rdn = r * dn;                                                           \
                *(VT *)(w + j) = dr;                                                             \
                *(VT *)(w + H + j) = dz;                                                         \
                *(VT *)(w + 2 * H + j) = rdn;                                                    \
                *(VT *)(w + 3 * H + j) = dn;                                                     \
                *(VT *)(gh + j) = dr;                                                            \
                *(VT *)(gh + H + j) = dz;                                                        \
                *(VT *)(gh + 2 * H + j) = rdn;                                                   \
                *(VT *)(db_ + j) = dd * z;                                                       \
            }                                                                                    \
            for (; j < H; j++) {                                                                 \
                const T r = w[j], z = w[H + j], n = w[2 * H + j], a = w[3 * H + j];              \
                const T dd = db_[j], h = p == NULL ? (T)0 : p[j];                                \
                const T dn = dd * (1 - z) * (1 - n * n);                                         \
                const T dz = dd * (h - n) * (z * (1 - z));                                       \
                const T dr = dn * a * (r * (1 - r));                                             \
                w[j] = gh[j] = dr;                                                               \
                w[H + j] = gh[H + j] = dz;                                                       \
                w[2 * H + j] = gh[2 * H + j] = r * dn;                                           \
                w[3 * H + j] = dn;                                                               \
                db_[j] = dd * z;                                                                 \
            }                                                                                    \
        }                                                                                        \
    }

RF_GRU(float, f32)
RF_GRU(double, f64)

#undef RF_GRU
#undef RF_GRU_ROWS_
#undef RF_GRU_SIG_f32
#undef RF_GRU_SIG_f64
