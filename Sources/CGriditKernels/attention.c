// Multi-head attention with a blocked softmax (flash attention): for each (sample, head, tile of
// BR query rows), keys are visited in chunks of up to KMAX; a chunk's KC x BR scores are the only
// part of the T x T matrix that ever exists. Per query row: running max m, running sum l, output O:
//   S = (q · scale) kᵀ;  m' = max(m, max S);  P = exp(S - m');  l = l·exp(m - m') + ΣP;
//   O = O·exp(m - m') + P v;  finally out = O / l.
// Everything is kept transposed, query rows in vector lanes (Sᵀ: KC x BR, Oᵀ: HD x BR), so the
// softmax's max, exp, sum and rescale are lane-wise vector ops: no horizontal reductions, which
// are latency-bound and with one per row and 64-key block cost as much as the matmuls at head
// dim 32. The matmuls broadcast K and V straight from their rows (only a tile's qᵀ is packed),
// and the head dim needs no padding to the vector width. T <= KMAX (every model here) is one
// chunk, so O is never rescaled; longer sequences rescale once per chunk (cheap, lane-wise), which
// keeps the scores in L2. KMAX 256 .. 2048 measured the same within noise at T = 1024 .. 4096.
// Written with 16-float vectors (clang vector extensions) and compiled for AVX-512, AVX2 and
// baseline x86-64 (picked per CPU at load), so it is also the fallback.
//
// Determinism: a query row is one lane of the same vector operations, whatever the lane; its
// arithmetic depends only on T, the head dim and the constants here (the chunks follow from T),
// not on which tile or thread computes it, nor on the other samples of the batch.
//
// bf16 (the bf16 DiTs' attention): q · scale, K, V and the softmax's P are rounded to bf16 (nearest
// even) and both products accumulate in fp32 by VDPBF16PS, pairs of head dims for the scores and
// pairs of keys for P v (the sums l and the rest of the softmax stay fp32, from the unrounded P).
// K and V are rounded once per call into the scratch, as pairs (the 32-bit operand VDPBF16PS
// broadcasts). Where VDPBF16PS is the slower way (gk_bf16_on_fma), or missing, the fp32 tile code
// runs on the rounded values, each pair's odd element first and the products under MXCSR.DAZ|FTZ:
// the same chain of roundings as VDPBF16PS, so the same bits (as the bf16 GEMM, see gemm.c) on
// x86 CPUs with FMA (a separate multiply would flush a product below the normal range first).
#include "gridit_kernels.h"
#include "gk_math.h"

#include <float.h>
#include <string.h>

#define BR 32    // query rows per tile: NV vectors of lanes
#define NV (BR / 16)
#define KMAX 512  // keys per softmax chunk
#define RT 8     // keys per register tile of Sᵀ
#define RD 8     // head dims per register tile of Oᵀ

typedef float v16 __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));
typedef uint32_t v16u __attribute__((ext_vector_type(16)));

// Vector helpers are macros: functions taking or returning 16-float vectors would change the ABI
// between the clones that have AVX-512 and those that do not.
#define LOAD16(p) ({ v16 _v; __builtin_memcpy(&_v, (p), sizeof _v); _v; })
#define STORE16(p, v) do { v16 _t = (v); __builtin_memcpy((p), &_t, sizeof _t); } while (0)
// A plain compare-select: one vmaxps, where elementwise_max adds a NaN fix-up.
#define VMAX(a, b) ({ v16 _l = (a), _m = (b); _l > _m ? _l : _m; })
// bf16 rounding (nearest even) of finite values: the bf16 bits in the high half, the low half 0.
#define BF16_ROUND(x) ({ v16u _b = (v16u)(x); (v16)((_b + 0x7fffu + ((_b >> 16) & 1u)) & 0xffff0000u); })
// The VDPBF16PS operand of two rounded vectors: lo's bf16 in the low half of each lane, hi's above.
#define BF16_PAIR(lo, hi) (((v16u)(lo) >> 16) | (v16u)(hi))

// exp on 16 lanes for x <= 0 (scores minus their max): gk_expf's reduction and polynomial, n
// rounded with the 1.5·2²³ trick, whose low bits then hold n + 127 for the exponent.
#define EXP16(xin) ({ \
    v16 _x = __builtin_elementwise_max((xin), (v16)(-87.3f)); \
    v16 _t = _x * 1.44269504088896341f + 12583039.0f; \
    v16 _n = _t - 12583039.0f; \
    v16 _r = _x - _n * 0.693359375f; \
    _r = _r + _n * 2.12194440e-4f; \
    v16 _p = (v16)(1.9875691500e-4f); \
    _p = _p * _r + 1.3981999507e-3f; \
    _p = _p * _r + 8.3334519073e-3f; \
    _p = _p * _r + 4.1665795894e-2f; \
    _p = _p * _r + 1.6666665459e-1f; \
    _p = _p * _r + 5.0000001201e-1f; \
    _p = _p * _r * _r + _r + 1.0f; \
    _p * (v16)((v16i)_t << 23); })

// In-place transpose of 16 vectors of 16 (x[i][l] <-> x[l][i]): stage s swaps bit s of the
// vector index with bit s of the lane index.
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define UNPAREN(...) __VA_ARGS__
#define TRANSPOSE_STAGE(x, s, lo, hi) \
    for (int _i = 0; _i < 16; _i++) \
        if (!(_i & (s))) { \
            v16 _a = (x)[_i], _b = (x)[_i + (s)]; \
            (x)[_i] = SHUF(_a, _b, UNPAREN lo); \
            (x)[_i + (s)] = SHUF(_a, _b, UNPAREN hi); \
        }
#define TRANSPOSE16(x) do { \
    TRANSPOSE_STAGE(x, 8, (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23), \
                    (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)); \
    TRANSPOSE_STAGE(x, 4, (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27), \
                    (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31)); \
    TRANSPOSE_STAGE(x, 2, (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29), \
                    (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31)); \
    TRANSPOSE_STAGE(x, 1, (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30), \
                    (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31)); \
} while (0)

enum { FP32 = 0, BF16_DP = 1, BF16_FMA = 2 };

typedef struct {
    const float *q, *k, *v;
    size_t ld, N, T, D, NH, HD, HDp, HDr, KC;
    float scale;
    float *out;
    size_t ldo;
    float *worker_scratch;  // per worker: qᵀ (HDr x BR), Oᵀ (HDr x BR), Sᵀ ((KC + RT) x BR)
    size_t tiles;
    int mode;
    // bf16: each (sample, head)'s K and V rounded (kv_floats apart). BF16_DP: K [T][HDp/2] and
    // V [ceil(T/2)][HD] of 32-bit pairs (K: dims 2i, 2i + 1 of a key; V: keys 2j, 2j + 1 of a dim);
    // BF16_FMA: K [T][HDp] and V [round_up(T, 2)][HD] of their fp32 values. Zero past T and HD.
    float *kv;
    size_t kv_floats;
} attention_job;

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
static size_t worker_floats(size_t HD, size_t KC) { return BR * (2 * round_up(HD, RD) + KC + RT); }
static size_t kv_floats(size_t T, size_t HD) { return T * round_up(HD, 2) + round_up(T, 2) * HD; }

// The first n <= 16 floats at p (zeros past n), and the first n lanes of v stored at p.
#define LOADN(p, n) ({ \
    v16 _r; \
    if ((n) == 16) _r = LOAD16(p); \
    else { float _buf[16] = {0}; __builtin_memcpy(_buf, (p), (n) * sizeof(float)); _r = LOAD16(_buf); } \
    _r; })
#define STOREN(p, v, n) do { \
    if ((n) == 16) STORE16((p), (v)); \
    else { float _buf[16]; STORE16(_buf, (v)); __builtin_memcpy((p), _buf, (n) * sizeof(float)); } \
} while (0)

// Rounds K and V of one (sample, head) into the job's kv (the layouts above).
GK_CLONES
static void round_kv(void *ctx, size_t item, int worker) {
    (void)worker;
    const attention_job *j = ctx;
    size_t n = item / j->NH, h = item % j->NH, HD = j->HD, HDp = j->HDp, T = j->T, ld = j->ld;
    const float *k = j->k + n * T * ld + h * HD, *v = j->v + n * T * ld + h * HD;
    float *kr = j->kv + item * j->kv_floats;
    if (j->mode == BF16_DP) {
        // A key's dims 2i and 2i + 1 in pair i; keys 2j and 2j + 1 of a dim in V's pair j.
        float *vr = kr + T * HDp / 2;
        for (size_t t = 0; t < T; t++)
            for (size_t d0 = 0; d0 < HD; d0 += 32) {
                size_t n0 = min_size(HD - d0, 16), n1 = HD - d0 > 16 ? min_size(HD - d0 - 16, 16) : 0;
                v16 a = BF16_ROUND(LOADN(k + t * ld + d0, n0));
                v16 b = n1 ? BF16_ROUND(LOADN(k + t * ld + d0 + 16, n1)) : (v16)0.0f;
                v16 even = SHUF(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                v16 odd = SHUF(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                STOREN(kr + t * HDp / 2 + d0 / 2, (v16)BF16_PAIR(even, odd), (n0 + n1 + 1) / 2);
            }
        for (size_t t = 0; t < T; t += 2)
            for (size_t d0 = 0; d0 < HD; d0 += 16) {
                size_t m = min_size(HD - d0, 16);
                v16 lo = BF16_ROUND(LOADN(v + t * ld + d0, m));
                v16 hi = t + 1 < T ? BF16_ROUND(LOADN(v + (t + 1) * ld + d0, m)) : (v16)0.0f;
                STOREN(vr + t / 2 * HD + d0, (v16)BF16_PAIR(lo, hi), m);
            }
    } else {
        float *vr = kr + T * HDp;
        for (size_t t = 0; t < T; t++)
            for (size_t d0 = 0; d0 < HDp; d0 += 16) {
                size_t m = min_size(HDp - d0, 16);
                STOREN(kr + t * HDp + d0, BF16_ROUND(LOADN(k + t * ld + d0, min_size(HD - d0, m))), m);
            }
        for (size_t t = 0; t < round_up(T, 2); t++)
            for (size_t d0 = 0; d0 < HD; d0 += 16) {
                size_t m = min_size(HD - d0, 16);
                STOREN(vr + t * HD + d0, t < T ? BF16_ROUND(LOADN(v + t * ld + d0, m)) : (v16)0.0f, m);
            }
    }
}

// Sᵀ[t][0..BR) = Σ_d K[t][d] · qᵀ[d] for RT keys (rows of K ld apart); mx: running max per lane.
// pairs: d runs 1, 0, 3, 2, ... (HD even): VDPBF16PS's order.
static inline __attribute__((always_inline)) void scores_tile(const float *const kr[RT], const float *qt, size_t HD,
                                                              int pairs, float *St, v16 mx[NV]) {
    v16 acc[RT][NV];
    for (int e = 0; e < RT; e++)
        for (int c = 0; c < NV; c++) acc[e][c] = (v16)0.0f;
    for (size_t dd = 0; dd < HD; dd++) {
        size_t d = pairs ? dd ^ 1 : dd;
        v16 qv[NV];
        for (int c = 0; c < NV; c++) qv[c] = LOAD16(qt + d * BR + 16 * c);
        for (int e = 0; e < RT; e++) {
            v16 kb = (v16)kr[e][d];
            for (int c = 0; c < NV; c++) acc[e][c] += kb * qv[c];
        }
    }
    for (int e = 0; e < RT; e++)
        for (int c = 0; c < NV; c++) {
            STORE16(St + e * BR + 16 * c, acc[e][c]);
            mx[c] = VMAX(mx[c], acc[e][c]);
        }
}

// Oᵀ[d0 + e][0..BR) += Σ_{t < kv} V[t][d0 + e] · Pᵀ[t] for RD dims (V rows ld apart, dims clamped to HD).
// pairs: t runs 1, 0, 3, 2, ... (kv even).
static inline __attribute__((always_inline)) void pv_tile(const float *Pt, const float *v, size_t ld, size_t kv,
                                                          int pairs, size_t d0, size_t HD, float *Ot) {
    v16 acc[RD][NV];
    size_t dc[RD];
    for (int e = 0; e < RD; e++) {
        dc[e] = min_size(d0 + e, HD - 1);
        for (int c = 0; c < NV; c++) acc[e][c] = LOAD16(Ot + (d0 + e) * BR + 16 * c);
    }
    for (size_t tt = 0; tt < kv; tt++) {
        size_t t = pairs ? tt ^ 1 : tt;
        const float *vr = v + t * ld;
        v16 p[NV];
        for (int c = 0; c < NV; c++) p[c] = LOAD16(Pt + t * BR + 16 * c);
        for (int e = 0; e < RD; e++) {
            v16 vb = (v16)vr[dc[e]];
            for (int c = 0; c < NV; c++) acc[e][c] += vb * p[c];
        }
    }
    for (int e = 0; e < RD; e++)
        for (int c = 0; c < NV; c++) STORE16(Ot + (d0 + e) * BR + 16 * c, acc[e][c]);
}

#if GK_HAVE_X86
// One 32-bit pair of the rounded K or V (written as floats by round_kv).
static inline int load_pair(const uint32_t *p) {
    int x;
    memcpy(&x, p, sizeof x);
    return x;
}

// BF16_DP: Sᵀ of a chunk's kv keys (kb: the first key's pairs, HP per key) against qᵀ's pairs
// qp [HP][BR]; mx: each lane's running max (BR floats). scores_tile by VDPBF16PS.
GK_AVX512BF16 static void scores_dp(const uint32_t *kb, size_t HP, size_t kv, const uint32_t *qp, float *St,
                                    float *mx) {
    v16 m[NV];
    for (int c = 0; c < NV; c++) m[c] = LOAD16(mx + 16 * c);
    for (size_t t0 = 0; t0 < kv; t0 += RT) {
        const uint32_t *kr[RT];
        for (size_t e = 0; e < RT; e++) kr[e] = kb + min_size(t0 + e, kv - 1) * HP;
        __m512 acc[RT][NV];
        for (int e = 0; e < RT; e++)
            for (int c = 0; c < NV; c++) acc[e][c] = _mm512_setzero_ps();
        for (size_t p = 0; p < HP; p++) {
            __m512bh qv[NV];
            for (int c = 0; c < NV; c++) qv[c] = (__m512bh)_mm512_loadu_si512(qp + p * BR + 16 * c);
            for (int e = 0; e < RT; e++) {
                __m512bh kp = (__m512bh)_mm512_set1_epi32(load_pair(kr[e] + p));
                for (int c = 0; c < NV; c++) acc[e][c] = _mm512_dpbf16_ps(acc[e][c], kp, qv[c]);
            }
        }
        for (int e = 0; e < RT; e++)
            for (int c = 0; c < NV; c++) {
                STORE16(St + (t0 + e) * BR + 16 * c, (v16)acc[e][c]);
                m[c] = VMAX(m[c], (v16)acc[e][c]);
            }
    }
    for (int c = 0; c < NV; c++) STORE16(mx + 16 * c, m[c]);
}

// BF16_DP: Oᵀ[d][0..BR) += Σ_{j < np} V's pair j of dim d · Pᵀ's pair j (Pp [np][BR]), every d < HD
// (vb: V's pairs [np][HD]). pv_tile by VDPBF16PS.
GK_AVX512BF16 static void pv_dp(const uint32_t *Pp, const uint32_t *vb, size_t HD, size_t np, float *Ot) {
    for (size_t d0 = 0; d0 < HD; d0 += RD) {
        __m512 acc[RD][NV];
        size_t dc[RD];
        for (int e = 0; e < RD; e++) {
            dc[e] = min_size(d0 + e, HD - 1);
            for (int c = 0; c < NV; c++) acc[e][c] = _mm512_loadu_ps(Ot + (d0 + e) * BR + 16 * c);
        }
        for (size_t p = 0; p < np; p++) {
            const uint32_t *vr = vb + p * HD;
            __m512bh pp[NV];
            for (int c = 0; c < NV; c++) pp[c] = (__m512bh)_mm512_loadu_si512(Pp + p * BR + 16 * c);
            for (int e = 0; e < RD; e++) {
                __m512bh vp = (__m512bh)_mm512_set1_epi32(load_pair(vr + dc[e]));
                for (int c = 0; c < NV; c++) acc[e][c] = _mm512_dpbf16_ps(acc[e][c], vp, pp[c]);
            }
        }
        for (int e = 0; e < RD; e++)
            for (int c = 0; c < NV; c++) _mm512_storeu_ps(Ot + (d0 + e) * BR + 16 * c, acc[e][c]);
    }
}
#endif

GK_CLONES
static void attend_tile(void *ctx, size_t item, int worker) {
    const attention_job *j = ctx;
    size_t nh = item / j->tiles, tile = item % j->tiles;
    size_t n = nh / j->NH, h = nh % j->NH, HD = j->HD, ld = j->ld, T = j->T;
    size_t r0 = tile * BR, rows = min_size(T - r0, BR);
    const float *q = j->q + (n * T + r0) * ld + h * HD;
    const float *k = j->k + n * T * ld + h * HD, *v = j->v + n * T * ld + h * HD;
    float *qt = j->worker_scratch + (size_t)worker * worker_floats(HD, j->KC);
    float *Ot = qt + j->HDr * BR, *St = Ot + j->HDr * BR;
    const int mode = j->mode;
    const float *kvr = mode == FP32 ? NULL : j->kv + nh * j->kv_floats;  // this head's rounded K, then V
    size_t HDp = j->HDp;
    // Lanes past T in the last tile repeat its last row; they are computed and dropped.
    size_t HD16 = HD / 16 * 16;
    for (size_t i0 = 0; i0 < BR; i0 += 16) {
        const float *qr[16];
        for (size_t i = 0; i < 16; i++) qr[i] = q + min_size(i0 + i, rows - 1) * ld;
        for (size_t d0 = 0; d0 < HD16; d0 += 16) {
            v16 x[16];
            for (int i = 0; i < 16; i++) x[i] = LOAD16(qr[i] + d0) * j->scale;
            TRANSPOSE16(x);
            for (int d = 0; d < 16; d++) STORE16(qt + (d0 + d) * BR + i0, x[d]);
        }
        for (size_t i = 0; i < 16; i++)
#pragma clang loop vectorize(disable)
            for (size_t d = HD16; d < HD; d++) qt[d * BR + i0 + i] = qr[i][d] * j->scale;
    }
    // bf16: qᵀ rounded (BF16_FMA, a zero row past an odd HD), or as pairs of rows (BF16_DP; row p
    // is written once rows 2p and 2p + 1 are read).
    if (mode == BF16_FMA)
        for (size_t d = 0; d < HDp; d++)
            for (size_t i0 = 0; i0 < BR; i0 += 16)
                STORE16(qt + d * BR + i0, d < HD ? BF16_ROUND(LOAD16(qt + d * BR + i0)) : (v16)0.0f);
    if (mode == BF16_DP)
        for (size_t p = 0; p < HDp / 2; p++)
            for (size_t i0 = 0; i0 < BR; i0 += 16) {
                v16 lo = LOAD16(qt + 2 * p * BR + i0);
                v16 hi = 2 * p + 1 < HD ? LOAD16(qt + (2 * p + 1) * BR + i0) : (v16)0.0f;
                STORE16(qt + p * BR + i0, (v16)BF16_PAIR(BF16_ROUND(lo), BF16_ROUND(hi)));
            }
    for (size_t i = 0; i < j->HDr * BR; i++) Ot[i] = 0;
    v16 m[NV], l[NV];
    for (int c = 0; c < NV; c++) {
        m[c] = (v16)(-FLT_MAX);
        l[c] = (v16)0.0f;
    }
    for (size_t j0 = 0; j0 < T; j0 += j->KC) {
        size_t kv = min_size(T - j0, j->KC);
        // Keys past the chunk in the last register tile repeat its last key: the max is unchanged.
        v16 mx[NV];
        for (int c = 0; c < NV; c++) mx[c] = m[c];
#if GK_HAVE_X86
        if (mode == BF16_DP) {
            float mxs[BR];
            for (int c = 0; c < NV; c++) STORE16(mxs + 16 * c, mx[c]);
            scores_dp((const uint32_t *)kvr + j0 * HDp / 2, HDp / 2, kv, (const uint32_t *)qt, St, mxs);
            for (int c = 0; c < NV; c++) mx[c] = LOAD16(mxs + 16 * c);
        } else
#endif
        {
            unsigned csr = mode == BF16_FMA ? gk_daz_on() : 0;
            for (size_t t0 = 0; t0 < kv; t0 += RT) {
                const float *kr[RT];
                for (size_t e = 0; e < RT; e++) {
                    size_t t = j0 + min_size(t0 + e, kv - 1);
                    kr[e] = mode == BF16_FMA ? kvr + t * HDp : k + t * ld;
                }
                scores_tile(kr, qt, mode == BF16_FMA ? HDp : HD, mode == BF16_FMA, St + t0 * BR, mx);
            }
            if (mode == BF16_FMA) gk_set_mxcsr(csr);
        }
        // alpha rescales what earlier chunks summed (none in the first: l and O are 0 there).
        v16 alpha[NV], sum0[NV], sum1[NV];  // two sums per vector: not one long dependency chain
        for (int c = 0; c < NV; c++) {
            alpha[c] = EXP16(m[c] - mx[c]);
            m[c] = mx[c];
            sum0[c] = sum1[c] = (v16)0.0f;
        }
        // P over Sᵀ: fp32; rounded, with a zero row past an odd kv (BF16_FMA); pairs of rows (BF16_DP,
        // row t / 2 written once rows t and t + 1 are read).
        for (size_t t = 0; t < kv; t += 2)
            for (int c = 0; c < NV; c++) {
                float *s = St + t * BR + 16 * c;
                v16 p0 = EXP16(LOAD16(s) - m[c]), p1 = (v16)0.0f;
                sum0[c] += p0;
                if (t + 1 < kv) {
                    p1 = EXP16(LOAD16(s + BR) - m[c]);
                    sum1[c] += p1;
                }
                if (mode == FP32) {
                    STORE16(s, p0);
                    if (t + 1 < kv) STORE16(s + BR, p1);
                } else if (mode == BF16_FMA) {
                    STORE16(s, BF16_ROUND(p0));
                    STORE16(s + BR, BF16_ROUND(p1));
                } else {
                    STORE16(St + t / 2 * BR + 16 * c, (v16)BF16_PAIR(BF16_ROUND(p0), BF16_ROUND(p1)));
                }
            }
        for (int c = 0; c < NV; c++) l[c] = l[c] * alpha[c] + (sum0[c] + sum1[c]);
        // bf16: a rescaled O below the normal range is flushed to (signed) zero here, so neither
        // form starts its products from a denormal sum (which the FMA form's DAZ reads as zero).
        if (j0 > 0)
            for (size_t d = 0; d < HD; d++)
                for (int c = 0; c < NV; c++) {
                    v16 o = LOAD16(Ot + d * BR + 16 * c) * alpha[c];
                    if (mode != FP32) o = __builtin_elementwise_abs(o) < FLT_MIN ? o * 0.0f : o;
                    STORE16(Ot + d * BR + 16 * c, o);
                }
        size_t kvp = round_up(kv, 2);
#if GK_HAVE_X86
        if (mode == BF16_DP) {
            pv_dp((const uint32_t *)St, (const uint32_t *)kvr + T * HDp / 2 + j0 / 2 * HD, HD, kvp / 2, Ot);
        } else
#endif
        if (mode == BF16_FMA) {
            unsigned csr = gk_daz_on();
            for (size_t d0 = 0; d0 < HD; d0 += RD) pv_tile(St, kvr + T * HDp + j0 * HD, HD, kvp, 1, d0, HD, Ot);
            gk_set_mxcsr(csr);
        } else {
            for (size_t d0 = 0; d0 < HD; d0 += RD) pv_tile(St, v + j0 * ld, ld, kv, 0, d0, HD, Ot);
        }
    }
    float *out = j->out + (n * T + r0) * j->ldo + h * HD;
    for (int c = 0; c < NV; c++) {
        v16 inv = 1.0f / l[c];
        size_t i0 = 16 * (size_t)c, ni = rows > i0 ? min_size(rows - i0, 16) : 0;
        for (size_t d0 = 0; d0 < HD16; d0 += 16) {
            v16 x[16];
            for (int d = 0; d < 16; d++) x[d] = LOAD16(Ot + (d0 + d) * BR + i0) * inv;
            TRANSPOSE16(x);
            for (size_t i = 0; i < ni; i++) STORE16(out + (i0 + i) * j->ldo + d0, x[i]);
        }
        float invs[16];
        STORE16(invs, inv);
        for (size_t i = 0; i < ni; i++)
            for (size_t d = HD16; d < HD; d++) out[(i0 + i) * j->ldo + d] = Ot[d * BR + i0 + i] * invs[i];
    }
}

size_t gk_attention_scratch_floats(size_t N, size_t T, size_t D, size_t NH, int workers, int bf16) {
    if (workers < 1) workers = 1;
    size_t HD = D / NH;
    return (size_t)workers * worker_floats(HD, min_size(T, KMAX)) + (bf16 ? N * NH * kv_floats(T, HD) : 0);
}

void gk_attention(const float *q, const float *k, const float *v, size_t ld, size_t N, size_t T, size_t D, size_t NH,
                  float *out, size_t ldo, float *scratch, int workers, int bf16, int bf16_kernel) {
    if (N == 0 || T == 0) return;
    if (workers < 1) workers = 1;
    attention_job j = {.q = q, .k = k, .v = v, .ld = ld, .N = N, .T = T, .D = D, .NH = NH, .out = out, .ldo = ldo};
    j.HD = D / NH;
    j.HDp = round_up(j.HD, 2);
    j.HDr = round_up(j.HD, RD);
    j.KC = min_size(T, KMAX);
    j.scale = 1.0f / sqrtf((float)j.HD);
    j.worker_scratch = scratch;
    j.tiles = (T + BR - 1) / BR;
    int dp = gk_isa() >= GK_ISA_AVX512BF16 && bf16_kernel != GK_BF16_FMA &&
             (bf16_kernel == GK_BF16_DPBF16 || !gk_bf16_on_fma());
    j.mode = !bf16 ? FP32 : dp ? BF16_DP : BF16_FMA;
    if (bf16) {
        j.kv = scratch + (size_t)workers * worker_floats(j.HD, j.KC);
        j.kv_floats = kv_floats(T, j.HD);
        gk_parallel_for(N * NH, workers, round_kv, &j);
    }
    gk_parallel_for(N * NH * j.tiles, workers, attend_tile, &j);
}
