/* The vector loops of the RNN kernels, compiled once per instruction set: the vector types and
 * lane shuffles they share, then one header per job (elementwise, small product, panel product,
 * streaming dot).
 *
 * No include guard: simd.h includes this file once per target (AVX-512, AVX2+FMA, baseline
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

#include "simd_elementwise.h"
#include "simd_gru.h"
#include "simd_small.h"
#include "simd_panel.h"
#include "simd_dot.h"

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
