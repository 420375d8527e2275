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
#include "gridit_kernels.h"
#include "gk_math.h"

#include <float.h>

#define BR 32    // query rows per tile: NV vectors of lanes
#define NV (BR / 16)
#define KMAX 512  // keys per softmax chunk
#define RT 8     // keys per register tile of Sᵀ
#define RD 8     // head dims per register tile of Oᵀ

typedef float v16 __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));

// Vector helpers are macros: functions taking or returning 16-float vectors would change the ABI
// between the clones that have AVX-512 and those that do not.
#define LOAD16(p) ({ v16 _v; __builtin_memcpy(&_v, (p), sizeof _v); _v; })
#define STORE16(p, v) do { v16 _t = (v); __builtin_memcpy((p), &_t, sizeof _t); } while (0)
// A plain compare-select: one vmaxps, where elementwise_max adds a NaN fix-up.
#define VMAX(a, b) ({ v16 _l = (a), _m = (b); _l > _m ? _l : _m; })

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

typedef struct {
    const float *q, *k, *v;
    size_t ld, N, T, D, NH, HD, HDr, KC;
    float scale;
    float *out;
    size_t ldo;
    float *worker_scratch;  // per worker: qᵀ (HD x BR), Oᵀ (HDr x BR), Sᵀ ((KC + RT) x BR)
    size_t tiles;
} attention_job;

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
static size_t worker_floats(size_t HD, size_t KC) { return BR * (HD + round_up(HD, RD) + KC + RT); }

// Sᵀ[t][0..BR) = Σ_d K[t][d] · qᵀ[d] for RT keys (rows of K ld apart); mx: running max per lane.
static inline __attribute__((always_inline)) void scores_tile(const float *const kr[RT], const float *qt, size_t HD,
                                                              float *St, v16 mx[NV]) {
    v16 acc[RT][NV];
    for (int e = 0; e < RT; e++)
        for (int c = 0; c < NV; c++) acc[e][c] = (v16)0.0f;
    for (size_t d = 0; d < HD; d++) {
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
static inline __attribute__((always_inline)) void pv_tile(const float *Pt, const float *v, size_t ld, size_t kv,
                                                          size_t d0, size_t HD, float *Ot) {
    v16 acc[RD][NV];
    size_t dc[RD];
    for (int e = 0; e < RD; e++) {
        dc[e] = min_size(d0 + e, HD - 1);
        for (int c = 0; c < NV; c++) acc[e][c] = LOAD16(Ot + (d0 + e) * BR + 16 * c);
    }
    for (size_t t = 0; t < kv; t++) {
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

GK_CLONES
static void attend_tile(void *ctx, size_t item, int worker) {
    const attention_job *j = ctx;
    size_t nh = item / j->tiles, tile = item % j->tiles;
    size_t n = nh / j->NH, h = nh % j->NH, HD = j->HD, ld = j->ld, T = j->T;
    size_t r0 = tile * BR, rows = min_size(T - r0, BR);
    const float *q = j->q + (n * T + r0) * ld + h * HD;
    const float *k = j->k + n * T * ld + h * HD, *v = j->v + n * T * ld + h * HD;
    float *qt = j->worker_scratch + (size_t)worker * worker_floats(HD, j->KC);
    float *Ot = qt + HD * BR, *St = Ot + j->HDr * BR;
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
        for (size_t t0 = 0; t0 < kv; t0 += RT) {
            const float *kr[RT];
            for (size_t e = 0; e < RT; e++) kr[e] = k + (j0 + min_size(t0 + e, kv - 1)) * ld;
            scores_tile(kr, qt, HD, St + t0 * BR, mx);
        }
        // alpha rescales what earlier chunks summed (none in the first: l and O are 0 there).
        v16 alpha[NV], sum0[NV], sum1[NV];  // two sums per vector: not one long dependency chain
        for (int c = 0; c < NV; c++) {
            alpha[c] = EXP16(m[c] - mx[c]);
            m[c] = mx[c];
            sum0[c] = sum1[c] = (v16)0.0f;
        }
        for (size_t t = 0; t < kv; t += 2)
            for (int c = 0; c < NV; c++) {
                float *s = St + t * BR + 16 * c;
                v16 p = EXP16(LOAD16(s) - m[c]);
                STORE16(s, p);
                sum0[c] += p;
                if (t + 1 < kv) {
                    p = EXP16(LOAD16(s + BR) - m[c]);
                    STORE16(s + BR, p);
                    sum1[c] += p;
                }
            }
        for (int c = 0; c < NV; c++) l[c] = l[c] * alpha[c] + (sum0[c] + sum1[c]);
        if (j0 > 0)
            for (size_t d = 0; d < HD; d++)
                for (int c = 0; c < NV; c++) STORE16(Ot + d * BR + 16 * c, LOAD16(Ot + d * BR + 16 * c) * alpha[c]);
        for (size_t d0 = 0; d0 < HD; d0 += RD) pv_tile(St, v + j0 * ld, ld, kv, d0, HD, Ot);
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

size_t gk_attention_scratch_floats(size_t N, size_t T, size_t D, size_t NH, int workers) {
    (void)N;
    if (workers < 1) workers = 1;
    return (size_t)workers * worker_floats(D / NH, min_size(T, KMAX));
}

void gk_attention(const float *q, const float *k, const float *v, size_t ld, size_t N, size_t T, size_t D, size_t NH,
                  float *out, size_t ldo, float *scratch, int workers) {
    if (N == 0 || T == 0) return;
    if (workers < 1) workers = 1;
    attention_job j = {.q = q, .k = k, .v = v, .ld = ld, .N = N, .T = T, .D = D, .NH = NH, .out = out, .ldo = ldo};
    j.HD = D / NH;
    j.HDr = round_up(j.HD, RD);
    j.KC = min_size(T, KMAX);
    j.scale = 1.0f / sqrtf((float)j.HD);
    j.worker_scratch = scratch;
    j.tiles = (T + BR - 1) / BR;
    gk_parallel_for(N * NH * j.tiles, workers, attend_tile, &j);
}
