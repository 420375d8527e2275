// Helpers shared by the C kernels (not part of the module's interface).
#ifndef GK_MATH_H
#define GK_MATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__clang__)
#define GK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define GK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define GK_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))
#define GK_HAVE_X86 1
#include <immintrin.h>
#else
#define GK_CLONES
#define GK_HAVE_X86 0
#endif

// exp(x) for float, max relative error about 2e-7 on [-87, 88]: x = n ln2 + r, |r| <= ln2/2,
// exp(r) by a degree-6 polynomial, 2^n by building the exponent bits. No branches, so it vectorises.
static inline float gk_expf(float x) {
    x = fminf(fmaxf(x, -87.3f), 88.7f);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;      // ln2 split in two parts so r is exact
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// tanh-form GELU of one value: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as
// x / (1 + exp(-2u)), the same function with one exponential and one division. -2u is clamped to
// [-20, 88]: exp(-20) + 1 rounds to 1, and gk_expf's range ends at 88.
#define GK_GELU_C0 (-2 * 0.7978845608028654f)             // -2u = x (C0 + C1 x^2)
#define GK_GELU_C1 (-2 * 0.7978845608028654f * 0.044715f)
static inline float gk_gelu1(float v) {
    float t = v * (GK_GELU_C0 + GK_GELU_C1 * v * v);
    t = fminf(fmaxf(t, -20.0f), 88.0f);
    return v / (gk_expf(t) + 1.0f);
}

#if GK_HAVE_X86
// The same polynomial on 16 lanes.
GK_AVX512 static inline __m512 gk_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                    _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

// gk_gelu1 on 16 lanes. The division stays a division: vdivps is correctly rounded on every CPU,
// while a reciprocal estimate (vrcp14ps) may differ between vendors, and so would the bits.
GK_AVX512 static inline __m512 gk_gelu16(__m512 v) {
    __m512 t = _mm512_mul_ps(
        v, _mm512_fmadd_ps(_mm512_set1_ps(GK_GELU_C1), _mm512_mul_ps(v, v), _mm512_set1_ps(GK_GELU_C0)));
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-20.0f)), _mm512_set1_ps(88.0f));
    return _mm512_div_ps(v, _mm512_add_ps(gk_exp16(t), _mm512_set1_ps(1.0f)));
}

// MXCSR.DAZ|FTZ around the bf16 products on FMAs (VDPBF16PS's denormal handling, gemm.c and
// attention.c): gk_daz_on returns the caller's MXCSR for gk_set_mxcsr to restore. The "memory"
// clobber keeps loads and stores on their side of the write; arithmetic that stays in registers
// must be pinned by the caller (gemm.c's PIN_ACC).
static inline void gk_set_mxcsr(unsigned v) { __asm__ volatile("ldmxcsr %0" : : "m"(v) : "memory"); }
static inline unsigned gk_daz_on(void) {
    unsigned csr = _mm_getcsr();
    gk_set_mxcsr(csr | 0x8040u);  // FTZ | DAZ
    return csr;
}

// Mask of the first n (0...16) lanes.
static inline __mmask16 gk_mask16(size_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }
#else
static inline void gk_set_mxcsr(unsigned v) { (void)v; }
static inline unsigned gk_daz_on(void) { return 0; }
#endif
#endif
