/* The packed-panel product, per target (included by simd_target.h). */

/* ---- panel product: out (rows, n) += a (rows, k) @ m (k, n), m packed once -----------------
 * For the per-step product of batched steps. m is packed once per call (pack_panels) into
 * column panels of RF_PANEL_NR (simd.h) whole vectors, and a last narrower panel of as many
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
        T *out, ptrdiff_t ldo, ptrdiff_t vs, const T *a, ptrdiff_t lda, const T *panel,          \
        ptrdiff_t pld, ptrdiff_t k)                                                              \
    {                                                                                            \
        typedef RF(vec_##SFX) VT;                                                                \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        VT acc[MR][NR];                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < NR; v++)                                 \
                acc[r][v] = *(const VT *)(out + r * ldo + v * vs);                               \
        for (ptrdiff_t j = 0; j < k; j++) {                                                      \
            const T *row = panel + j * pld;                                                      \
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
                *(VT *)(out + r * ldo + v * vs) = acc[r][v];                                     \
    }

#define RF_PANEL_CASE(SFX, NR, MR)                                                               \
    case MR: RF(panel_##SFX##_##NR##_##MR)(out, ldo, vs, a, lda, panel, pld, k); return;

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
    static void RF(panel_block_##SFX##_##NR)(int mr, T *out, ptrdiff_t ldo, ptrdiff_t vs,        \
                                             const T *a, ptrdiff_t lda, const T *panel,          \
                                             ptrdiff_t pld, ptrdiff_t k)                         \
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
    /* One block of mr <= RF_PANEL_MR rows against one panel of nr vectors: out's vectors vs    \
     * apart, the panel's rows pld apart (a plain panel: VL and nr * VL). */                     \
    static void RF(panel_block_##SFX)(int nr, int mr, T *out, ptrdiff_t ldo, ptrdiff_t vs,       \
                                      const T *a, ptrdiff_t lda, const T *panel, ptrdiff_t pld,  \
                                      ptrdiff_t k)                                               \
    {                                                                                            \
        if (nr == 3) RF(panel_block_##SFX##_3)(mr, out, ldo, vs, a, lda, panel, pld, k);         \
        else if (nr == 2) RF(panel_block_##SFX##_2)(mr, out, ldo, vs, a, lda, panel, pld, k);    \
        else RF(panel_block_##SFX##_1)(mr, out, ldo, vs, a, lda, panel, pld, k);                 \
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
                    RF(panel_block_##SFX)(nr, mr, o, n, VL, a + r * k, k, panel, w, k);          \
                    continue;                                                                    \
                }                                                                                \
                for (int i = 0; i < mr; i++)                                                     \
                    memcpy(stage + i * w, o + i * n, width * sizeof(T));                         \
                RF(panel_block_##SFX)(nr, mr, stage, w, VL, a + r * k, k, panel, w, k);          \
                for (int i = 0; i < mr; i++)                                                     \
                    memcpy(o + i * n, stage + i * w, width * sizeof(T));                         \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* Gate panels: unit block u (units u VL .. u VL + VL - 1 of `units`) is one panel of      \
     * `gates` vectors, the columns of each gate of those units (the LSTM's i, f, g, o; the     \
     * GRU's r, z, n), at dst + u * k * gates VL, zero past the last unit; from w_hh (gates     \
     * units, k) as stored. A block's product then gives all that its units' pointwise step     \
     * needs, so that a split forward can hand out blocks (kernels.pyx); each output's sum runs \
     * as in the plain panels. dst holds k * gates * (units rounded up to whole vectors). */    \
    static void RF(pack_unit_panels_##SFX)(T *restrict dst, const T *restrict src, ptrdiff_t k,  \
                                           ptrdiff_t units, int gates)                           \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T) };                                                     \
        const ptrdiff_t W = gates * VL, j_tiled = k / VL * VL;                                   \
        for (ptrdiff_t u0 = 0; u0 < units; u0 += VL) {                                           \
            T *panel = dst + u0 * gates * k;                                                     \
            const ptrdiff_t valid = units - u0 < VL ? units - u0 : VL;                           \
            for (int q = 0; q < gates; q++) {                                                    \
                const T *rows = src + (q * units + u0) * k; /* gate q's rows of the block */     \
                if (valid == VL)                                                                 \
                    for (ptrdiff_t j = 0; j < j_tiled; j += VL)                                  \
                        RF(transpose_tile_##SFX)(panel + j * W + q * VL, W, rows + j, k);       \
                for (ptrdiff_t j = valid == VL ? j_tiled : 0; j < k; j++)                        \
                    for (ptrdiff_t l = 0; l < VL; l++)                                           \
                        panel[j * W + q * VL + l] = l < valid ? rows[l * k + j] : (T)0;          \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* The LSTM forward's: four gates. */                                                        \
    static void RF(pack_gate_panels_##SFX)(T *restrict dst, const T *restrict src, ptrdiff_t k,  \
                                           ptrdiff_t units)                                      \
    {                                                                                            \
        RF(pack_unit_panels_##SFX)(dst, src, k, units, 4);                                      \
    }                                                                                            \
    /* out (rows, 4 units) += a (rows, k) @ w_hh.T, the columns of unit blocks u0 .. u1 - 1      \
     * only (a u1 past the last block: up to the end), w_hh packed by pack_gate_panels; stage    \
     * (RF_PANEL_MR x 4 vectors) for a last partial block. Each block in two halves of two      \
     * vectors (gates i, f then g, o), out's vectors `units` apart. */                           \
    static void RF(panel_gates_addmm_##SFX)(T *out, const T *a, ptrdiff_t rows, ptrdiff_t k,     \
                                            ptrdiff_t units, const T *packed, T *stage,          \
                                            ptrdiff_t u0, ptrdiff_t u1)                          \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), W = 4 * VL, MR = RF_PANEL_MR };                       \
        const ptrdiff_t n = 4 * units;                                                           \
        for (ptrdiff_t u = u0; u < u1 && u * VL < units; u++) {                                 \
            const T *panel = packed + u * k * W;                                                 \
            const ptrdiff_t c0 = u * VL, width = units - c0 < VL ? units - c0 : VL;              \
            for (ptrdiff_t r = 0; r < rows; r += MR) {                                           \
                const int mr = rows - r < MR ? (int)(rows - r) : MR;                             \
                T *o = out + r * n + c0;                                                         \
                if (width == VL) {                                                               \
                    RF(panel_block_##SFX)(2, mr, o, n, units, a + r * k, k, panel, W, k);        \
                    RF(panel_block_##SFX)(2, mr, o + 2 * units, n, units, a + r * k, k,          \
                                          panel + 2 * VL, W, k);                                 \
                    continue;                                                                    \
                }                                                                                \
                for (int i = 0; i < mr; i++)                                                     \
                    for (int q = 0; q < 4; q++)                                                  \
                        memcpy(stage + i * W + q * VL, o + i * n + q * units,                    \
                               width * sizeof(T));                                               \
                RF(panel_block_##SFX)(2, mr, stage, W, VL, a + r * k, k, panel, W, k);           \
                RF(panel_block_##SFX)(2, mr, stage + 2 * VL, W, VL, a + r * k, k,                \
                                      panel + 2 * VL, W, k);                                     \
                for (int i = 0; i < mr; i++)                                                     \
                    for (int q = 0; q < 4; q++)                                                  \
                        memcpy(o + i * n + q * units, stage + i * W + q * VL,                    \
                               width * sizeof(T));                                               \
            }                                                                                    \
        }                                                                                        \
    }

RF_PANEL(float, f32)
RF_PANEL(double, f64)

/* The GRU forward's step on its gate panels (pack_unit_panels, 3 gates): for unit blocks
 * u0 .. u1 - 1 (a u1 past the last block: up to the end), each block of RF_PANEL_MR rows'
 * product hp @ w_hh.T on the block's r, z, n columns into a stage that stays in L1, then
 * those rows' and units' pointwise step (simd_gru.h: g (rows, ldg) the projection, bx, bhn,
 * out, ws as gru_forward_cols takes them). hp (rows, H) NULL: zeros, no product. A unit's
 * product sums as the plain panels' do, from zero, so that the bits are those of the whole
 * step (gh zeroed, panel_addmm, gru_forward) whichever blocks a call covers. */
#define RF_GRU_PANEL(T, SFX)                                                                     \
    static void RF(gru_panel_forward_##SFX)(const T *g, ptrdiff_t ldg, const T *bx,              \
                                            const T *bhn, const T *hp, T *out, T *ws,            \
                                            ptrdiff_t rows, ptrdiff_t H, const T *packed,        \
                                            ptrdiff_t u0, ptrdiff_t u1)                          \
    {                                                                                            \
        enum { VL = RF_VBYTES / sizeof(T), W = 3 * VL, MR = RF_PANEL_MR };                       \
        T stage[MR * W] __attribute__((aligned(RF_VBYTES)));                                     \
        for (ptrdiff_t u = u0; u < u1 && u * VL < H; u++) {                                      \
            const T *panel = packed + u * H * W;                                                 \
            const ptrdiff_t j0 = u * VL, j1 = H - j0 < VL ? H : j0 + VL;                         \
            for (ptrdiff_t r = 0; r < rows; r += MR) {                                           \
                const int mr = rows - r < MR ? (int)(rows - r) : MR;                             \
                for (int i = 0; i < mr * 3; i++) /* (memset: a slower rep stos) */   \
                    *(RF(vec_##SFX) *)(stage + i * VL) = (RF(vec_##SFX)){0};                     \
                /* these rows' projection, often written by the other core: fetched during the  \
                 * product (a block's columns are 3 lines a row, which no prefetcher follows) */ \
                for (int i = 0; i < mr; i++)                                                     \
                    for (int q = 0; q < 3; q++)                                                  \
                        __builtin_prefetch(g + (r + i) * ldg + q * H + j0, 0, 3);                \
                if (hp != NULL)                                                                  \
                    RF(panel_block_##SFX)(3, mr, stage, W, VL, hp + r * H, H, panel, W, H);      \
                RF(gru_forward_cols_##SFX)(g + r * ldg, ldg, stage, W, VL, j0, bx, bhn,          \
                                           hp == NULL ? NULL : hp + r * H, out + r * H,          \
                                           ws == NULL ? NULL : ws + r * 4 * H, mr, H, j0, j1);   \
            }                                                                                    \
        }                                                                                        \
    }

RF_GRU_PANEL(float, f32)
RF_GRU_PANEL(double, f64)

#undef RF_PANEL_MR
#undef RF_PANEL_KERNEL
#undef RF_PANEL_CASE
#undef RF_PANEL_WIDTH
#undef RF_PANEL_HEIGHTS
#undef RF_PANEL
#undef RF_GRU_PANEL
