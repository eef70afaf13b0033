/* Compiles the header named by RF_TARGET_HEADER once per instruction-set level, with RF_SUFFIX
 * and RF_VBYTES set: AVX-512 (F, VL, BW, DQ) and AVX2 + FMA where simd.h defined
 * RNNFAST_X86_DISPATCH (x86-64, GCC), and the build's baseline everywhere. simd.h compiles its
 * loops (simd_target.h) so, and decoder.h its softmax passes. No include guard: once per header.
 */
#ifdef RNNFAST_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define RF_SUFFIX _avx512
#define RF_VBYTES 64
#include RF_TARGET_HEADER
#undef RF_SUFFIX
#undef RF_VBYTES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RF_SUFFIX _avx2
#define RF_VBYTES 32
#include RF_TARGET_HEADER
#undef RF_SUFFIX
#undef RF_VBYTES
#pragma GCC pop_options
#endif

#define RF_SUFFIX _base
#define RF_VBYTES 16
#include RF_TARGET_HEADER
#undef RF_SUFFIX
#undef RF_VBYTES
