// Matrix products for CPUs with AVX-512 (fp32) and AVX512_BF16 (bf16 inputs, fp32 accumulation).
//
// C (M x N) = A (M x K) · Bᵀ, B (N x K): the PyTorch `nn.Linear` product with the (out, in) weight
// as B. Blocked like BLIS: A is packed into panels of MR rows, B into panels of NR columns, and an
// MR x NR micro-kernel accumulates a tile in registers over a block of KC values of k.
//
// Determinism: every element of C is computed by one chain of fused multiply-adds over k = 0..K-1
// in order (bf16: over pairs of k, VDPBF16PS), starting from 0 (or from C when accumulating),
// then + bias. Partial sums between k blocks round-trip through C exactly. Which tile, task or
// thread computes an element, and which other rows share its panel, do not change that chain, so
// the result bits depend neither on the thread count nor on the batch a row is part of.
//
// Packed layouts (esize = 4 for fp32, 2 for bf16; Kp = K, or K rounded up to even for bf16):
//   A: by blocks of KC values of k (KC = 256 fp32, 512 bf16), and within a block by panels of MR
//      rows, each [k][MR] (fp32) or [k/2][MR][2] (bf16): one block of all rows is contiguous, so
//      the micro-kernels stream it in order.
//   B: panel q (columns 48q..48q+47) at q * Kp * NR elements: fp32 [k][NR]; bf16 [k/2][NR][2]
// Rows and columns past M, N (and the odd k of bf16) are zero.
//
// bf16 on FMAs: on CPUs where VDPBF16PS runs at half the rate of fp32 FMAs (Intel; measured on
// Emerald Rapids with tools/bench/peak.c: one per 2 cycles), the bf16 products of A not
// pre-packed run on the fp32 micro-kernel instead: A is packed as its bf16-rounded values in
// fp32, and each k block of a bf16 B panel is widened to fp32 once per task. VDPBF16PS adds a
// pair's odd product, then its even one, each rounded, with denormal inputs read as zero and
// denormal results flushed (checked on Emerald Rapids); the widened layout puts each pair's odd k
// first and the loop runs with MXCSR.DAZ|FTZ, so every element is the same chain of roundings and
// the same bits as VDPBF16PS gives (`bf16ProductsOnFMAsGiveTheBitsOfVDPBF16PS`, on every CPU with
// AVX512_BF16: AMD's Zen 4 rounds as Intel's, so bf16 products give the same bits on both).
#include "gridit_kernels.h"
#include "gk_math.h"

#include <stdatomic.h>
#include <stdlib.h>

#define MR 8
#define NR 48
#define KC_F32 256      // k per block; a B panel block (KC x NR) is 48 KB in either precision
#define KC_BF16 512
#define MC 256          // rows of A per block: an A block (MC x KC) stays in L2 across a task's panels
#define GROUP 4         // most B panels per task, when A is large (see gk_gemm)
#define ALIGN 64

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

// MARK: CPU features

static atomic_int isa_detected = -1;
static atomic_int bf16_on_fma;  // set with isa_detected: this CPU's VDPBF16PS is the slower way

// VDPBF16PS at half the fp32 FMA rate: measured on Intel's Emerald Rapids, assumed for Intel's
// other AVX512_BF16 cores; AMD's Zen 5 runs it at twice its FMA rate (docs/PERFORMANCE.md).
static int prefers_bf16_on_fma(void) {
#if GK_HAVE_X86
    return __builtin_cpu_is("intel");
#else
    return 0;
#endif
}

int gk_isa(void) {
    int d = atomic_load_explicit(&isa_detected, memory_order_relaxed);
    if (d < 0) {
        d = GK_ISA_PORTABLE;
#if GK_HAVE_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")) {
            d = __builtin_cpu_supports("avx512bf16") ? GK_ISA_AVX512BF16 : GK_ISA_AVX512;
        }
#endif
        atomic_store_explicit(&bf16_on_fma, prefers_bf16_on_fma(), memory_order_relaxed);
        atomic_store_explicit(&isa_detected, d, memory_order_relaxed);
    }
    return d;
}

int gk_bf16_on_fma(void) {
    return gk_isa() >= GK_ISA_AVX512BF16 && atomic_load_explicit(&bf16_on_fma, memory_order_relaxed);
}

#if GK_HAVE_X86

// MARK: packing

// Transposes 8 rows of 8 floats: r[i][j] -> r[j][i].
GK_AVX512 static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// dst[k][w] = src[w * ld + k] for w < rows, 0 for rows <= w < width; k < kc. width: a multiple of 8.
GK_AVX512 static void pack_rows_f32(const float *src, size_t ld, size_t rows, size_t width, size_t kc, float *dst) {
    for (size_t w0 = 0; w0 < width; w0 += 8) {
        for (size_t k = 0; k < kc; k += 8) {
            size_t kn = min_sz(8, kc - k);
            __mmask8 mask = (__mmask8)((1u << kn) - 1);
            __m256 r[8];
            for (int i = 0; i < 8; i++) {
                r[i] = w0 + i < rows ? _mm256_maskz_loadu_ps(mask, src + (w0 + i) * ld + k) : _mm256_setzero_ps();
            }
            transpose8(r);
            for (size_t i = 0; i < kn; i++) _mm256_storeu_ps(dst + (k + i) * width + w0, r[i]);
        }
    }
}

// fp32 [kc][width] -> bf16 pairs [ceil(kc/2)][width][2] (round to nearest even), odd k padded with 0.
GK_AVX512BF16 static void pairs_bf16(const float *src, size_t kc, size_t width, uint16_t *dst) {
    for (size_t p = 0; p < (kc + 1) / 2; p++) {
        const float *r0 = src + 2 * p * width;
        const float *r1 = 2 * p + 1 < kc ? r0 + width : NULL;
        for (size_t j = 0; j < width; j += 16) {
            __mmask16 m = gk_mask16(width - j);
            __m512 a = _mm512_maskz_loadu_ps(m, r0 + j);
            __m512 b = r1 ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
            __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
            __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
            _mm512_mask_storeu_epi32(dst + (p * width + j) * 2, m, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

// bf16 pairs [kp][width] (32 bits each: even k low, odd k high) -> their fp32 values [kp][2][width],
// the odd k first (the order VDPBF16PS adds them in): the operands of the bf16 products on FMAs.
GK_AVX512 static void widen_pairs(const uint32_t *src, size_t kp, size_t width, float *dst) {
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    for (size_t p = 0; p < kp; p++) {
        for (size_t j = 0; j < width; j += 16) {
            __mmask16 m = gk_mask16(width - j);
            __m512i v = _mm512_maskz_loadu_epi32(m, src + p * width + j);
            _mm512_mask_storeu_epi32(dst + 2 * p * width + j, m, _mm512_and_si512(v, high));
            _mm512_mask_storeu_epi32(dst + (2 * p + 1) * width + j, m, _mm512_slli_epi32(v, 16));
        }
    }
}

// dst[0 ..< n] = src[0 ..< n] (src NULL: zeros), n <= NR, with masked vector moves (runs are short:
// library calls would cost more than the copy).
GK_AVX512 static inline void move_run(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = gk_mask16(n - i);
        _mm512_mask_storeu_ps(dst + i, m, src ? _mm512_maskz_loadu_ps(m, src + i) : _mm512_setzero_ps());
    }
}

// A run of a column block's output positions along one output row.
typedef struct { size_t oy, ox, len; } conv_run;

// Cuts columns n0 ..< n0 + nvalid (output positions) into runs along output rows.
static size_t cut_runs(const gk_conv_geometry *g, size_t n0, size_t nvalid, conv_run runs[NR]) {
    size_t nruns = 0;
    for (size_t j = 0, oy = n0 / g->Wo, ox = n0 % g->Wo; j < nvalid; oy++, ox = 0) {
        size_t len = min_sz(nvalid - j, g->Wo - ox);
        runs[nruns].oy = oy;
        runs[nruns].ox = ox;
        runs[nruns].len = len;
        nruns++;
        j += len;
    }
    return nruns;
}

// Column block n0 ..< n0 + nvalid of im2col(image) for k in k0 ..< k0 + kc, as fp32 [kc][NR]:
// column n is output position (n / Wo, n % Wo), k is (c, ki, kj) like the flattened conv weight.
// The block's positions are cut once into runs along output rows, and (c, ki, kj) advances
// incrementally, so the loop over k does no division.
GK_AVX512 static void pack_im2col_f32(const gk_conv_geometry *g, const float *img, size_t n0, size_t nvalid, size_t k0,
                                      size_t kc, float *dst) {
    conv_run runs[NR];
    size_t nruns = cut_runs(g, n0, nvalid, runs);
    const size_t taps = g->KH * g->KW;
    size_t c = k0 / taps, ki = k0 % taps / g->KW, kj = k0 % g->KW;
    // The image rows a block reads jump between channel planes, which the hardware prefetchers
    // do not follow: fetch the rows of the (channel, kernel row) PREFETCH_ROWS ahead.
    enum { PREFETCH_ROWS = 4 };
    size_t pc_ = c, pki = ki;
    for (int a = 0; a < PREFETCH_ROWS; a++) {
        if (++pki == g->KH) {
            pki = 0;
            pc_++;
        }
    }
    for (size_t kk = 0; kk < kc; kk++) {
        if (kj == 0 && pc_ < g->C) {
            for (size_t r = 0; r < nruns; r++) {
                long iy = (long)(runs[r].oy * g->stride + pki) - (long)g->pad_top;
                if (iy < 0 || iy >= (long)g->H) continue;
                const char *src = (const char *)(img + (pc_ * g->H + (size_t)iy) * g->W + runs[r].ox * g->stride);
                size_t bytes = (runs[r].len * g->stride + 16) * sizeof(float);
                for (size_t b = 0; b < bytes; b += 64) _mm_prefetch(src + b, _MM_HINT_T0);
            }
        }
        if (kj == 0 && ++pki == g->KH) {
            pki = 0;
            pc_++;
        }
        float *row = dst + kk * NR;
        const float *plane = img + c * g->H * g->W;
        size_t j = 0;
        for (size_t r = 0; r < nruns; r++) {
            size_t run = runs[r].len;
            long iy = (long)(runs[r].oy * g->stride + ki) - (long)g->pad_top;
            if (iy < 0 || iy >= (long)g->H) {
                move_run(row + j, NULL, run);
            } else {
                const float *line = plane + (size_t)iy * g->W;
                long ix0 = (long)(runs[r].ox * g->stride + kj) - (long)g->pad_left;
                if (g->stride == 1) {
                    // ix = ix0 + t: copy the in-range span [lo, hi), zero the rest.
                    long lo = ix0 < 0 ? -ix0 : 0, hi = (long)g->W - ix0;
                    if (hi > (long)run) hi = (long)run;
                    if (lo > (long)run) lo = (long)run;
                    if (hi < lo) hi = lo;
                    move_run(row + j, NULL, (size_t)lo);
                    move_run(row + j + lo, line + ix0 + lo, (size_t)(hi - lo));
                    move_run(row + j + hi, NULL, run - (size_t)hi);
                } else {
                    for (size_t t = 0; t < run; t++) {
                        long ix = ix0 + (long)(t * g->stride);
                        row[j + t] = ix >= 0 && ix < (long)g->W ? line[ix] : 0.0f;
                    }
                }
            }
            j += run;
        }
        move_run(row + nvalid, NULL, NR - nvalid);
        if (++kj == g->KW) {
            kj = 0;
            if (++ki == g->KH) {
                ki = 0;
                c++;
            }
        }
    }
}

// The column block n0 ..< n0 + nvalid, k in k0 ..< k0 + kc (both even), of the im2col matrix of a
// channel-pair image (gk_conv_pairs; k = (ki, kj, c)), as bf16 pairs [kc/2][NR][2]: a pair of k
// is one 32-bit value of the image, so with stride 1 every row is a run of 32-bit moves whose
// bounds depend only on the tap (ki, kj), computed once per tap.
GK_AVX512 static void pack_conv_pairs(const gk_conv_geometry *g, const uint16_t *img, size_t n0, size_t nvalid,
                                      size_t k0, size_t kc, uint16_t *dst) {
    conv_run runs[NR];
    size_t nruns = cut_runs(g, n0, nvalid, runs);
    const size_t cp = g->C / 2, plane = g->H * g->W;
    const uint32_t *src32 = (const uint32_t *)img;
    enum { AHEAD = 4 };  // channel pairs prefetched ahead (planes apart: the prefetchers miss them)
    size_t p = k0 / 2, p1 = (k0 + kc) / 2;
    float *out = (float *)dst;
    while (p < p1) {
        size_t tap = p / cp, c0 = p % cp, c1 = min_sz(cp, c0 + (p1 - p));
        long ki = (long)(tap / g->KW), kj = (long)(tap % g->KW);
        // Per run: the source offset of its first in-range value and the in-range span [lo, hi).
        struct { long off; size_t lo, hi; long iy, ix0; } span[NR];
        for (size_t r = 0; r < nruns; r++) {
            long iy = (long)(runs[r].oy * g->stride) + ki - (long)g->pad_top;
            long ix0 = (long)(runs[r].ox * g->stride) + kj - (long)g->pad_left;
            long lo = 0, hi = 0;
            if (iy >= 0 && iy < (long)g->H && g->stride == 1) {
                lo = ix0 < 0 ? -ix0 : 0;
                hi = (long)g->W - ix0;
                if (hi > (long)runs[r].len) hi = (long)runs[r].len;
                if (lo > (long)runs[r].len) lo = (long)runs[r].len;
                if (hi < lo) hi = lo;
            }
            span[r].off = iy * (long)g->W + ix0;
            span[r].lo = (size_t)lo;
            span[r].hi = (size_t)hi;
            span[r].iy = iy;
            span[r].ix0 = ix0;
        }
        for (size_t c = c0; c < c1; c++, p++) {
            const uint32_t *pl = src32 + c * plane;
            float *row = out + (p - k0 / 2) * NR;
            size_t j = 0;
            for (size_t r = 0; r < nruns; r++) {
                size_t run = runs[r].len, lo = span[r].lo, hi = span[r].hi;
                if (g->stride != 1) {
                    // Strided (the encoder's downsample): gather value by value.
                    uint32_t *o = (uint32_t *)(row + j);
                    long iy = span[r].iy;
                    for (size_t t = 0; t < run; t++) {
                        long ix = span[r].ix0 + (long)(t * g->stride);
                        o[t] = iy >= 0 && iy < (long)g->H && ix >= 0 && ix < (long)g->W ? pl[iy * (long)g->W + ix] : 0;
                    }
                } else if (hi > lo) {
                    const uint32_t *s = pl + span[r].off + (long)lo;
                    if (c + AHEAD < cp) {
                        const char *f = (const char *)(s + AHEAD * plane);
                        for (size_t b = 0; b < (hi - lo) * 4 + 63; b += 64) _mm_prefetch(f + b, _MM_HINT_T0);
                    }
                    move_run(row + j, NULL, lo);
                    move_run(row + j + lo, (const float *)s, hi - lo);
                    move_run(row + j + hi, NULL, run - hi);
                } else {
                    move_run(row + j, NULL, run);
                }
                j += run;
            }
            move_run(row + nvalid, NULL, NR - nvalid);
        }
    }
}

// MARK: micro-kernels

typedef struct {
    int load_c;             // start from C (partial sums, or accumulation into C) instead of 0
    int finish;             // last k block: add biases, apply GELU
    const float *bias_n;    // at this tile's first column, or NULL
    size_t nvalid;          // valid columns (bias loads)
    const float *bias_m;    // at this tile's first row, or NULL
    size_t mvalid;          // valid rows (bias loads)
    int gelu;
} tile_epilogue;

// Inlined into the micro-kernels, so the accumulators stay in registers (called out of line, the
// tile went through the stack on every call).
GK_AVX512 static inline __attribute__((always_inline)) void finish_tile(__m512 acc[MR][3], const tile_epilogue *e) {
    if (e->bias_n) {
        for (int j = 0; j < 3; j++) {
            size_t left = e->nvalid > 16 * (size_t)j ? e->nvalid - 16 * (size_t)j : 0;
            __m512 b = _mm512_maskz_loadu_ps(gk_mask16(left), e->bias_n + 16 * j);
            for (int i = 0; i < MR; i++) acc[i][j] = _mm512_add_ps(acc[i][j], b);
        }
    }
    if (e->bias_m) {
        for (int i = 0; i < MR; i++) {
            if ((size_t)i >= e->mvalid) break;
            __m512 b = _mm512_set1_ps(e->bias_m[i]);
            for (int j = 0; j < 3; j++) acc[i][j] = _mm512_add_ps(acc[i][j], b);
        }
    }
    if (e->gelu) {
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < 3; j++) acc[i][j] = gk_gelu16(acc[i][j]);
    }
}

// The accumulators from C (partial sums) or zero, as masked loads (a mask of 0 reads nothing): a
// zeroing loop here became a memset of a tile in memory and a reload per tile.
GK_AVX512 static inline __attribute__((always_inline)) void init_tile(__m512 acc[MR][3], const float *c, size_t ldc,
                                                                      int load_c) {
    __mmask16 m = load_c ? (__mmask16)0xFFFF : 0;
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++) acc[i][j] = _mm512_maskz_loadu_ps(m, c + i * ldc + 16 * j);
}

// Keeps the accumulators' operations on their side of an MXCSR write (the compiler does not order
// register arithmetic against it).
#define PIN_ACC(acc)                                                                                       \
    do {                                                                                                   \
        for (int i_ = 0; i_ < MR; i_++)                                                                    \
            for (int j_ = 0; j_ < 3; j_++) __asm__ volatile("" : "+v"(acc[i_][j_]));                       \
    } while (0)

// daz: the k loop runs with MXCSR.DAZ|FTZ (bf16 on FMAs, VDPBF16PS's denormal handling); the
// epilogue runs in the caller's mode either way.
GK_AVX512 static inline __attribute__((always_inline)) void ukr_f32_mode(size_t kc, const float *a, const float *b,
                                                                         float *c, size_t ldc, const tile_epilogue *e,
                                                                         int daz) {
    __m512 acc[MR][3];
    init_tile(acc, c, ldc, e->load_c);
    unsigned csr = 0;
    if (daz) {
        csr = gk_daz_on();
        PIN_ACC(acc);
    }
    for (size_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = _mm512_loadu_ps(b + k * NR + 16), b2 = _mm512_loadu_ps(b + k * NR + 32);
        for (int i = 0; i < MR; i++) {
            __m512 av = _mm512_set1_ps(a[k * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(av, b2, acc[i][2]);
        }
    }
    if (daz) {
        PIN_ACC(acc);
        gk_set_mxcsr(csr);
        PIN_ACC(acc);
    }
    if (e->finish) finish_tile(acc, e);
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++) _mm512_storeu_ps(c + i * ldc + 16 * j, acc[i][j]);
}

GK_AVX512 static void ukr_f32(size_t kc, const float *a, const float *b, float *c, size_t ldc, const tile_epilogue *e) {
    ukr_f32_mode(kc, a, b, c, ldc, e, 0);
}

// bf16 on FMAs: kc is twice the pairs of the block, a and b the widened operands.
GK_AVX512 static void ukr_bf16_fma(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                                   const tile_epilogue *e) {
    ukr_f32_mode(kc, a, b, c, ldc, e, 1);
}

GK_AVX512BF16 static void ukr_bf16(size_t kp, const uint16_t *a, const uint16_t *b, float *c, size_t ldc,
                                   const tile_epilogue *e) {
    const uint32_t *a32 = (const uint32_t *)a;
    __m512 acc[MR][3];
    init_tile(acc, c, ldc, e->load_c);
    for (size_t k = 0; k < kp; k++) {
        const uint16_t *bk = b + k * NR * 2;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bk), b1 = (__m512bh)_mm512_loadu_si512(bk + 32);
        __m512bh b2 = (__m512bh)_mm512_loadu_si512(bk + 64);
        for (int i = 0; i < MR; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a32[k * MR + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
            acc[i][2] = _mm512_dpbf16_ps(acc[i][2], av, b2);
        }
    }
    if (e->finish) finish_tile(acc, e);
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++) _mm512_storeu_ps(c + i * ldc + 16 * j, acc[i][j]);
}

// MARK: driver

typedef struct {
    const gk_gemm_args *g;
    int bf16;
    size_t esize, kc, Kp;
    int fma16;                    // bf16 on FMAs (see the top): A packed widened, B panels widened per task
    size_t aesize;                // bytes per packed A value: esize, or 4 with fma16
    const unsigned char *apack;   // packed A (scratch or g->a_packed)
    unsigned char *apack_out;     // where phase 1 packs A (NULL when pre-packed)
    size_t apanels;               // panels of MR rows
    size_t b_stride;              // panel stride of pre-packed B in bytes
    size_t npanels, group, msplit, mchunk;   // a task: `group` B panels x `mchunk` rows
    unsigned char *worker_base;
    size_t worker_bytes;
} gemm_job;

// Per-worker scratch: GROUP B panels [KC][NR] (packed, or widened with fma16), fp32 staging for bf16
// [KC_BF16][NR], one C tile, one bf16 B panel block [KC_F32 / 2][NR] (fma16: before widening).
#define BBUF_BYTES (GROUP * KC_F32 * NR * 4)
#define STAGING_BYTES (KC_BF16 * NR * 4)
#define TILE_BYTES (MR * NR * 4)
static size_t worker_scratch_bytes(void) {
    return round_up(BBUF_BYTES, ALIGN) + round_up(STAGING_BYTES, ALIGN) + round_up(TILE_BYTES, ALIGN) +
           round_up(KC_F32 * NR * 2, ALIGN);
}

static size_t packed_a_bytes(size_t M, size_t K, int bf16) {
    return round_up(M, MR) * (bf16 ? round_up(K, 2) * 2 : K * 4);
}

// Bytes of the A that gk_gemm packs itself: bf16 values may be packed widened (fp32 size).
static size_t own_a_bytes(size_t M, size_t K, int bf16) {
    return round_up(M, MR) * (bf16 ? round_up(K, 2) : K) * 4;
}

size_t gk_packed_a_bytes(size_t M, size_t K, int bf16) { return packed_a_bytes(M, K, bf16); }
size_t gk_packed_b_bytes(size_t N, size_t K, int bf16) {
    return round_up(N, NR) * (bf16 ? round_up(K, 2) * 2 : K * 4);
}

size_t gk_gemm_scratch_bytes(size_t M, size_t K, int bf16, int a_packed, int workers) {
    if (workers < 1) workers = 1;
    return (a_packed ? 0 : round_up(own_a_bytes(M, K, bf16), ALIGN)) + (size_t)workers * worker_scratch_bytes();
}

// Packs `rows` rows x kc values of k of an fp32 (., ld) matrix as `width`-wide panel data at dst
// (fp32 [kc][width] or bf16 [kc/2][width][2]); staging: fp32 scratch for bf16.
GK_AVX512 static void pack_panel(const float *src, size_t ld, size_t rows, size_t width, size_t kc, int bf16,
                                 void *dst, float *staging) {
    pack_rows_f32(src, ld, rows, width, kc, bf16 ? staging : (float *)dst);
    if (bf16) pairs_bf16(staging, kc, width, (uint16_t *)dst);
}

// Byte offset of A panel p at the start k0 (a multiple of kc) of a k block.
static size_t a_offset(const gemm_job *j, size_t p, size_t k0) {
    size_t kcur = min_sz(j->kc, j->g->K - k0);
    if (j->bf16) kcur = round_up(kcur, 2);
    return (k0 * j->apanels + p * kcur) * MR * j->aesize;
}

// Packs A panel p (all k blocks) into j->apack_out.
static void pack_a_panel(const gemm_job *j, size_t p, float *staging) {
    const gk_gemm_args *g = j->g;
    size_t rows = min_sz(MR, g->M - p * MR);
    for (size_t k0 = 0; k0 < g->K; k0 += j->kc) {
        size_t kc = min_sz(j->kc, g->K - k0);
        unsigned char *dst = j->apack_out + a_offset(j, p, k0);
        if (j->fma16) {
            // bf16 pairs after the fp32 block in staging, then widened into place.
            uint32_t *pairs = (uint32_t *)(staging + j->kc * MR);
            pack_panel(g->a + p * MR * g->lda + k0, g->lda, rows, MR, kc, 1, pairs, staging);
            widen_pairs(pairs, (kc + 1) / 2, MR, (float *)dst);
        } else {
            pack_panel(g->a + p * MR * g->lda + k0, g->lda, rows, MR, kc, j->bf16, dst, staging);
        }
    }
}

static void pack_a_task(void *ctx, size_t p, int worker) {
    const gemm_job *j = ctx;
    pack_a_panel(j, p, (float *)(j->worker_base + (size_t)worker * j->worker_bytes + round_up(BBUF_BYTES, ALIGN)));
}

// B panel q (columns 48q ..) for k in [pc, pc + kc), packed into `buf` unless pre-packed.
GK_AVX512 static const void *b_panel(const gemm_job *j, size_t q, size_t pc, size_t kc, unsigned char *buf,
                                     float *staging) {
    const gk_gemm_args *g = j->g;
    if (g->b_packed) return (const unsigned char *)g->b_packed + q * j->b_stride + pc * NR * j->esize;
    size_t n0 = q * NR, nvalid = min_sz(NR, g->N - n0);
    if (g->conv) {
        if (j->bf16 && g->b_pairs) {
            pack_conv_pairs(g->conv, g->b_pairs, n0, nvalid, pc, kc, (uint16_t *)buf);
        } else if (j->bf16) {
            pack_im2col_f32(g->conv, g->b, n0, nvalid, pc, kc, staging);
            pairs_bf16(staging, kc, NR, (uint16_t *)buf);
        } else {
            pack_im2col_f32(g->conv, g->b, n0, nvalid, pc, kc, (float *)buf);
        }
    } else {
        pack_panel(g->b + n0 * g->ldb + pc, g->ldb, nvalid, NR, kc, j->bf16, buf, staging);
    }
    return buf;
}

GK_AVX512 static void gemm_task(void *ctx, size_t t, int worker) {
    const gemm_job *j = ctx;
    const gk_gemm_args *g = j->g;
    unsigned char *ws = j->worker_base + (size_t)worker * j->worker_bytes;
    float *staging = (float *)(ws + round_up(BBUF_BYTES, ALIGN));
    float *tile = (float *)(ws + round_up(BBUF_BYTES, ALIGN) + round_up(STAGING_BYTES, ALIGN));
    unsigned char *narrow = (unsigned char *)tile + round_up(TILE_BYTES, ALIGN);
    size_t q0 = t / j->msplit * j->group, ms = t % j->msplit;
    size_t q1 = min_sz(j->npanels, q0 + j->group);
    size_t m0 = ms * j->mchunk, m1 = min_sz(g->M, m0 + j->mchunk);
    const size_t panel_bytes = KC_F32 * NR * 4;  // = KC_BF16 * NR * 2
    for (size_t pc = 0; pc < g->K; pc += j->kc) {
        size_t kc = min_sz(j->kc, g->K - pc);
        size_t groups = j->bf16 ? (kc + 1) / 2 : kc;
        const void *bp[GROUP];
        for (size_t q = q0; q < q1; q++) {
            unsigned char *buf = ws + (q - q0) * panel_bytes;
            if (j->fma16) {
                widen_pairs(b_panel(j, q, pc, kc, narrow, staging), groups, NR, (float *)buf);
                bp[q - q0] = buf;
            } else {
                bp[q - q0] = b_panel(j, q, pc, kc, buf, staging);
            }
        }
        tile_epilogue e = {.load_c = pc > 0 || g->accumulate, .finish = pc + j->kc >= g->K, .gelu = g->gelu};
        for (size_t ic = m0; ic < m1; ic += MC) {
            size_t ie = min_sz(m1, ic + MC);
            for (size_t q = q0; q < q1; q++) {
                size_t n0 = q * NR, nvalid = min_sz(NR, g->N - n0);
                e.bias_n = g->bias_n ? g->bias_n + n0 : NULL;
                e.nvalid = nvalid;
                for (size_t ir = ic; ir < ie; ir += MR) {
                    const unsigned char *ap = j->apack + a_offset(j, ir / MR, pc);
                    size_t mvalid = min_sz(MR, g->M - ir);
                    e.bias_m = g->bias_m ? g->bias_m + ir : NULL;
                    e.mvalid = mvalid;
                    float *c = g->c + ir * g->ldc + n0;
                    int full = mvalid == MR && nvalid == NR;
                    float *dst = full ? c : tile;
                    size_t ldd = full ? g->ldc : NR;
                    if (!full && e.load_c) {
                        for (size_t i = 0; i < mvalid; i++) memcpy(tile + i * NR, c + i * g->ldc, nvalid * sizeof(float));
                    }
                    if (j->fma16) {
                        ukr_bf16_fma(2 * groups, (const float *)ap, bp[q - q0], dst, ldd, &e);
                    } else if (j->bf16) {
                        ukr_bf16(groups, (const uint16_t *)ap, bp[q - q0], dst, ldd, &e);
                    } else {
                        ukr_f32(groups, (const float *)ap, bp[q - q0], dst, ldd, &e);
                    }
                    if (!full) {
                        for (size_t i = 0; i < mvalid; i++) memcpy(c + i * g->ldc, tile + i * NR, nvalid * sizeof(float));
                    }
                }
            }
        }
    }
}

void gk_gemm(const gk_gemm_args *g, void *scratch, int workers) {
    if (g->M == 0 || g->N == 0) return;
    if (workers < 1) workers = 1;
    gemm_job j = {.g = g, .bf16 = g->bf16 != 0};
    j.esize = j.bf16 ? 2 : 4;
    j.fma16 = j.bf16 && !g->a_packed &&
              (g->bf16_kernel == GK_BF16_FMA || (g->bf16_kernel == GK_BF16_AUTO && gk_bf16_on_fma()));
    j.aesize = j.fma16 ? 4 : j.esize;
    j.kc = j.bf16 && !j.fma16 ? KC_BF16 : KC_F32;
    j.Kp = j.bf16 ? round_up(g->K, 2) : g->K;
    j.apanels = round_up(g->M, MR) / MR;
    j.b_stride = j.Kp * NR * j.esize;
    unsigned char *s = scratch;
    if (g->a_packed) {
        j.apack = g->a_packed;
    } else {
        j.apack_out = s;
        j.apack = s;
        s += round_up(own_a_bytes(g->M, g->K, j.bf16), ALIGN);
    }
    j.worker_base = s;
    j.worker_bytes = worker_scratch_bytes();
    if (g->K == 0) {
        // No products: C = (accumulate ? C : 0) + biases, through the same epilogue path.
        for (size_t i = 0; i < g->M; i++)
            for (size_t n = 0; n < g->N; n++) {
                float v = g->accumulate ? g->c[i * g->ldc + n] : 0.0f;
                if (g->bias_n) v += g->bias_n[n];
                if (g->bias_m) v += g->bias_m[i];
                g->c[i * g->ldc + n] = g->gelu ? gk_gelu1(v) : v;
            }
        return;
    }
    if (!g->a_packed) gk_parallel_for(j.apanels, workers, pack_a_task, &j);
    // Tasks: B panels, times a split of the rows when there are few panels. A task streams all of
    // packed A past its panels: when A is large (> 8 MB, a quarter of L3) a task takes up to GROUP
    // panels and reuses each (MC x KC) block of A across them from L2 (measured: fp32 products with
    // K = 4608, +15-40%); otherwise one panel, which stays in L1 (measured: smaller A, +5-15%). The
    // split only balances the threads; the arithmetic of every element is the same for any split.
    j.npanels = round_up(g->N, NR) / NR;
    size_t want = 3 * (size_t)workers;
    j.group = round_up(g->M, MR) * j.Kp * j.aesize > (8u << 20) ? GROUP : 1;
    while (j.group > 1 && (j.npanels + j.group - 1) / j.group < want) j.group--;
    size_t ngroups = (j.npanels + j.group - 1) / j.group;
    j.msplit = 1;
    if (ngroups < want) {
        j.msplit = (want + ngroups - 1) / ngroups;
        size_t max_split = (g->M + 63) / 64;
        if (j.msplit > max_split) j.msplit = max_split ? max_split : 1;
    }
    j.mchunk = round_up((g->M + j.msplit - 1) / j.msplit, MR);
    j.msplit = (g->M + j.mchunk - 1) / j.mchunk;
    gk_parallel_for(ngroups * j.msplit, workers, gemm_task, &j);
}

// Prepacking (gk_pack_b, gk_pack_a): a worker's fp32 staging block (bf16 panels are converted
// through it), or NULL for fp32.
static float *pack_staging(const gemm_job *j, int worker) {
    return j->bf16 ? (float *)j->worker_base + (size_t)worker * KC_BF16 * NR : NULL;
}

// Zeroes the `bytes` of dst, then packs its `panels` panels with `task` on `workers` threads.
// 0, or -1 when the staging blocks could not be allocated.
static int run_pack(gemm_job *j, void *dst, size_t bytes, size_t panels, int workers, gk_task_fn task) {
    float *staging = NULL;
    if (j->bf16 && !(staging = malloc((size_t)workers * KC_BF16 * NR * sizeof(float)))) return -1;
    j->worker_base = (unsigned char *)staging;
    memset(dst, 0, bytes);
    gk_parallel_for(panels, workers, task, j);
    free(staging);
    return 0;
}

static void pack_b_task(void *ctx, size_t q, int worker) {
    const gemm_job *j = ctx;
    const gk_gemm_args *g = j->g;
    float *staging = pack_staging(j, worker);
    unsigned char *dst = (unsigned char *)g->c + q * j->b_stride;
    size_t rows = min_sz(NR, g->N - q * NR);
    for (size_t k0 = 0; k0 < g->K; k0 += KC_BF16) {
        size_t kc = min_sz(KC_BF16, g->K - k0);
        pack_panel(g->b + q * NR * g->ldb + k0, g->ldb, rows, NR, kc, j->bf16, dst + k0 * NR * j->esize, staging);
    }
}

static void pack_a_full_task(void *ctx, size_t p, int worker) {
    const gemm_job *j = ctx;
    pack_a_panel(j, p, pack_staging(j, worker));
}

int gk_pack_b(const float *b, size_t ldb, size_t N, size_t K, int bf16, void *dst, int workers) {
    if (workers < 1) workers = 1;
    gk_gemm_args g = {.N = N, .K = K, .b = b, .ldb = ldb, .c = dst};
    gemm_job j = {.g = &g, .bf16 = bf16 != 0};
    j.esize = j.bf16 ? 2 : 4;
    j.b_stride = (j.bf16 ? round_up(K, 2) : K) * NR * j.esize;
    return run_pack(&j, dst, gk_packed_b_bytes(N, K, bf16), round_up(N, NR) / NR, workers, pack_b_task);
}

typedef struct {
    const uint16_t *b;
    size_t ldb, N, K;
    uint32_t *dst;
} pack_bits_job;

// Panel q: pair p of column n is (b[n][2p], b[n][2p + 1]) as one 32-bit word, [Kp/2][NR] per panel;
// columns past N and the odd k past K stay zero (the caller zeroed dst).
static void pack_bits_task(void *ctx, size_t q, int worker) {
    (void)worker;
    const pack_bits_job *j = ctx;
    size_t pairs = (j->K + 1) / 2, rows = min_sz(NR, j->N - q * NR);
    uint32_t *panel = j->dst + q * pairs * NR;
    for (size_t n = 0; n < rows; n++) {
        const uint16_t *row = j->b + (q * NR + n) * j->ldb;
        for (size_t p = 0; p < j->K / 2; p++) {
            panel[p * NR + n] = (uint32_t)row[2 * p] | (uint32_t)row[2 * p + 1] << 16;
        }
        if (j->K % 2) panel[(pairs - 1) * NR + n] = row[j->K - 1];
    }
}

void gk_pack_b_from_bf16(const uint16_t *b, size_t ldb, size_t N, size_t K, void *dst, int workers) {
    pack_bits_job j = {.b = b, .ldb = ldb, .N = N, .K = K, .dst = dst};
    memset(dst, 0, gk_packed_b_bytes(N, K, 1));
    gk_parallel_for(round_up(N, NR) / NR, workers < 1 ? 1 : workers, pack_bits_task, &j);
}

int gk_pack_a(const float *a, size_t lda, size_t M, size_t K, int bf16, void *dst, int workers) {
    if (workers < 1) workers = 1;
    gk_gemm_args g = {.M = M, .K = K, .a = a, .lda = lda};
    gemm_job j = {.g = &g, .bf16 = bf16 != 0};
    j.esize = j.bf16 ? 2 : 4;
    j.aesize = j.esize;
    j.kc = j.bf16 ? KC_BF16 : KC_F32;
    j.apanels = round_up(M, MR) / MR;
    j.apack_out = dst;
    return run_pack(&j, dst, gk_packed_a_bytes(M, K, bf16), j.apanels, workers, pack_a_full_task);
}

// MARK: products with few rows (per-sample vectors: timestep MLP, adaLN)

// y[m, n] = bias[n] + dot(x[m, :], w[n, :]) with 16 (fp32) or 32 (bf16) partial sums over k and a
// fixed reduction, so each element's bits do not depend on M or on the split over threads.
typedef struct {
    const float *x;
    float *y;
    size_t ldx, M, K, ldy;
    int bf16;
    const uint16_t *xb;         // x in bf16, rows of round_up(K, 32) (bf16 only)
    size_t ldxb;
    const gk_small_segment *segs;
    const size_t *first_task;   // first task of each segment
    size_t nsegs;
    const float *zeros;         // a zero row for the padding rows of a 4-row group
} small_job;

#define SMALL_BLOCK 16

// Four rows of x against weight row w: acc[i] = 16 partial sums of x[i] · w.
GK_AVX512 static void dot4_f32(const float *const xr[4], const float *w, size_t K, __m512 acc[4]) {
    for (size_t k = 0; k < K; k += 16) {
        __mmask16 mk = gk_mask16(K - k);
        __m512 wv = _mm512_maskz_loadu_ps(mk, w + k);
        for (int i = 0; i < 4; i++) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, xr[i] + k), wv, acc[i]);
    }
}

// The same in bf16 (x rows zero-padded to a multiple of 32 values).
GK_AVX512BF16 static void dot4_bf16(const uint16_t *const xr[4], const uint16_t *w, size_t K, __m512 acc[4]) {
    for (size_t k = 0; k < K; k += 32) {
        size_t left = K - k;
        __mmask32 mk = left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
        __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mk, w + k);
        for (int i = 0; i < 4; i++) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_loadu_si512(xr[i] + k), wv);
    }
}

GK_AVX512 static void small_task(void *ctx, size_t t, int worker) {
    (void)worker;
    const small_job *j = ctx;
    size_t s = 0;
    while (s + 1 < j->nsegs && j->first_task[s + 1] <= t) s++;
    const gk_small_segment *seg = &j->segs[s];
    size_t n0 = (t - j->first_task[s]) * SMALL_BLOCK, n1 = min_sz(seg->n, n0 + SMALL_BLOCK);
    for (size_t n = n0; n < n1; n++) {
        for (size_t m0 = 0; m0 < j->M; m0 += 4) {
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            if (!j->bf16) {
                const float *xr[4];
                for (int i = 0; i < 4; i++) xr[i] = m0 + i < j->M ? j->x + (m0 + i) * j->ldx : j->zeros;
                dot4_f32(xr, (const float *)seg->w + n * j->K, j->K, acc);
            } else {
                const uint16_t *xr[4];
                for (int i = 0; i < 4; i++) {
                    xr[i] = m0 + i < j->M ? j->xb + (m0 + i) * j->ldxb : (const uint16_t *)j->zeros;
                }
                dot4_bf16(xr, (const uint16_t *)seg->w + n * j->K, j->K, acc);
            }
            for (int i = 0; i < 4 && m0 + (size_t)i < j->M; i++) {
                float v = _mm512_reduce_add_ps(acc[i]);
                if (seg->bias) v += seg->bias[n];
                j->y[(m0 + i) * j->ldy + seg->y_offset + n] = v;
            }
        }
    }
}

GK_AVX512BF16 static void rows_to_bf16(const float *x, size_t ldx, size_t M, size_t K, size_t kr, uint16_t *xb) {
    for (size_t m = 0; m < M; m++) {
        for (size_t k = 0; k < kr; k += 16) {
            __m512 v = _mm512_maskz_loadu_ps(gk_mask16(k < K ? K - k : 0), x + m * ldx + k);
            _mm256_storeu_si256((__m256i *)(xb + m * kr + k), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}

size_t gk_linear_small_scratch_bytes(size_t M, size_t K, int bf16) {
    size_t kr = round_up(K, 32);
    return round_up(kr * 4, ALIGN) + (bf16 ? round_up(M * kr * 2, ALIGN) : 0);
}

void gk_linear_small(const float *x, size_t ldx, size_t M, size_t K, int bf16, const gk_small_segment *segs,
                     size_t nsegs, float *y, size_t ldy, void *scratch, int workers) {
    if (M == 0 || nsegs == 0) return;
    size_t first[nsegs + 1];
    first[0] = 0;
    for (size_t s = 0; s < nsegs; s++) first[s + 1] = first[s] + (segs[s].n + SMALL_BLOCK - 1) / SMALL_BLOCK;
    size_t kr = round_up(K, 32);
    small_job j = {.x = x, .y = y, .ldx = ldx, .M = M, .K = K, .ldy = ldy, .bf16 = bf16 != 0, .segs = segs,
                   .first_task = first, .nsegs = nsegs};
    float *zeros = scratch;
    memset(zeros, 0, kr * 4);
    j.zeros = zeros;
    if (j.bf16) {
        uint16_t *xb = (uint16_t *)((unsigned char *)scratch + round_up(kr * 4, ALIGN));
        rows_to_bf16(x, ldx, M, K, kr, xb);
        j.xb = xb;
        j.ldxb = kr;
    }
    gk_parallel_for(first[nsegs], workers, small_task, &j);
}

#else  // not x86-64: the callers use the portable paths (OpenBLAS); these are never reached.
size_t gk_packed_a_bytes(size_t M, size_t K, int bf16) { (void)M; (void)K; (void)bf16; return 0; }
size_t gk_packed_b_bytes(size_t N, size_t K, int bf16) { (void)N; (void)K; (void)bf16; return 0; }
size_t gk_gemm_scratch_bytes(size_t M, size_t K, int bf16, int a_packed, int workers) {
    (void)M; (void)K; (void)bf16; (void)a_packed; (void)workers; return 0;
}
void gk_gemm(const gk_gemm_args *g, void *scratch, int workers) { (void)g; (void)scratch; (void)workers; abort(); }
int gk_pack_a(const float *a, size_t lda, size_t M, size_t K, int bf16, void *dst, int workers) { abort(); }
int gk_pack_b(const float *b, size_t ldb, size_t N, size_t K, int bf16, void *dst, int workers) { abort(); }
void gk_pack_b_from_bf16(const uint16_t *b, size_t ldb, size_t N, size_t K, void *dst, int workers) { abort(); }
size_t gk_linear_small_scratch_bytes(size_t M, size_t K, int bf16) { return 0; }
void gk_linear_small(const float *x, size_t ldx, size_t M, size_t K, int bf16, const gk_small_segment *segs,
                     size_t nsegs, float *y, size_t ldy, void *scratch, int workers) { abort(); }
#endif

#if GK_HAVE_X86
GK_AVX512BF16 static void to_bf16_avx512(const float *x, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = gk_mask16(n - i);
        __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
        _mm256_mask_storeu_epi16(out + i, m, h);
    }
}
#endif

#if GK_HAVE_X86
typedef struct {
    const float *x;
    size_t plane;
    uint16_t *out;
} pairs_job;

// Rounded as pairs_bf16 does.
GK_AVX512BF16 static void zip_bf16(const float *a, const float *b, size_t n, uint16_t *o) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = gk_mask16(n - i);
        __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, a + i)));
        __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, b + i)));
        _mm512_mask_storeu_epi32(o + 2 * i, m, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

void gk_zip_bf16(const float *a, const float *b, size_t n, uint16_t *out) { zip_bf16(a, b, n, out); }

// Channel pair t: two planes zipped into (plane, 2) bf16.
static void conv_pairs_task(void *ctx, size_t t, int worker) {
    (void)worker;
    const pairs_job *j = ctx;
    const float *a = j->x + 2 * t * j->plane;
    zip_bf16(a, a + j->plane, j->plane, j->out + 2 * t * j->plane);
}

void gk_conv_pairs(const float *x, size_t C, size_t plane, uint16_t *out, int workers) {
    pairs_job j = {.x = x, .plane = plane, .out = out};
    gk_parallel_for(C / 2, workers, conv_pairs_task, &j);
}
typedef struct {
    const float *x;
    size_t H, W;
    uint16_t *out;
} upsample_job;

// Channel pair t: each row of the two planes zipped once, each pair doubled along the row
// (v | v << 32 over 64-bit lanes), the row written twice.
GK_AVX512BF16 static void upsample_pairs_task(void *ctx, size_t t, int worker) {
    (void)worker;
    const upsample_job *j = ctx;
    const size_t H = j->H, W = j->W;
    const float *a = j->x + 2 * t * H * W;
    uint32_t *o = (uint32_t *)j->out + t * 4 * H * W;
    enum { CHUNK = 256 };
    uint32_t zipped[CHUNK] __attribute__((aligned(64)));
    for (size_t y = 0; y < H; y++) {
        uint32_t *row = o + 2 * y * 2 * W;
        for (size_t x0 = 0; x0 < W; x0 += CHUNK) {
            size_t n = W - x0 < CHUNK ? W - x0 : CHUNK;
            zip_bf16(a + y * W + x0, a + H * W + y * W + x0, n, (uint16_t *)zipped);
            for (size_t i = 0; i < n; i += 8) {
                size_t left = n - i < 8 ? n - i : 8;
                __m512i v = _mm512_cvtepu32_epi64(_mm256_maskz_loadu_epi32((__mmask8)((1u << left) - 1), zipped + i));
                _mm512_mask_storeu_epi32(row + 2 * (x0 + i), gk_mask16(2 * left), _mm512_or_si512(v, _mm512_slli_epi64(v, 32)));
            }
        }
        memcpy(row + 2 * W, row, 2 * W * sizeof(uint32_t));
    }
}

void gk_upsample2x_pairs(const float *x, size_t C, size_t H, size_t W, uint16_t *out, int workers) {
    upsample_job j = {.x = x, .H = H, .W = W, .out = out};
    gk_parallel_for(C / 2, workers, upsample_pairs_task, &j);
}
#else
void gk_upsample2x_pairs(const float *x, size_t C, size_t H, size_t W, uint16_t *out, int workers) { abort(); }
void gk_conv_pairs(const float *x, size_t C, size_t plane, uint16_t *out, int workers) { abort(); }
void gk_zip_bf16(const float *a, const float *b, size_t n, uint16_t *out) { abort(); }
#endif

void gk_to_bf16(const float *x, uint16_t *out, size_t n) {
#if GK_HAVE_X86
    if (gk_isa() >= GK_ISA_AVX512BF16) {
        to_bf16_avx512(x, out, n);
        return;
    }
#endif
    // Round to nearest even (NaN kept quiet); the bf16 kernels never run without the instruction.
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
            out[i] = (uint16_t)((u >> 16) | 0x40);
        } else {
            out[i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
        }
    }
}
