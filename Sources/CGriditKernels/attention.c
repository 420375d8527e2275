// Multi-head attention with an online softmax (flash attention): for each (sample, head, tile of
// BR query rows), keys are visited in blocks of BC; a block's BR x BC scores are the only part of
// the T x T matrix that ever exists. Per query row: running max m, running sum l, output O:
//   S = q kᵀ · scale;  m' = max(m, max S);  P = exp(S - m');  l = l·exp(m - m') + ΣP;
//   O = O·exp(m - m') + P v;  finally out = O / l.
// Written with 16-float vectors (clang vector extensions) and compiled for AVX-512, AVX2 and
// baseline x86-64 (picked per CPU at load), so it is also the fallback.
//
// Determinism: a query row's arithmetic depends only on T, the head dim and the block constants,
// not on which tile or thread computes it, nor on the other samples of the batch.
#include "gridit_kernels.h"
#include "gk_math.h"

#include <float.h>

#define BR 32
#define BC 64

typedef float v16 __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));

// Vector helpers are macros: functions taking or returning 16-float vectors would change the ABI
// between the clones that have AVX-512 and those that do not.
#define LOAD16(p) ({ v16 _v; __builtin_memcpy(&_v, (p), sizeof _v); _v; })
#define STORE16(p, v) do { v16 _t = (v); __builtin_memcpy((p), &_t, sizeof _t); } while (0)

// gk_expf on 16 lanes (same polynomial).
#define EXP16(xin) ({ \
    v16 _x = __builtin_elementwise_min(__builtin_elementwise_max((xin), (v16)(-87.3f)), (v16)(88.7f)); \
    v16 _n = __builtin_elementwise_floor(_x * 1.44269504088896341f + 0.5f); \
    v16 _r = _x - _n * 0.693359375f; \
    _r = _r + _n * 2.12194440e-4f; \
    v16 _p = (v16)(1.9875691500e-4f); \
    _p = _p * _r + 1.3981999507e-3f; \
    _p = _p * _r + 8.3334519073e-3f; \
    _p = _p * _r + 4.1665795894e-2f; \
    _p = _p * _r + 1.6666665459e-1f; \
    _p = _p * _r + 5.0000001201e-1f; \
    _p = _p * _r * _r + _r + 1.0f; \
    v16i _bits = (__builtin_convertvector(_n, v16i) + 127) << 23; \
    _p * (v16)_bits; })

// Sum and max of the 16 lanes, in lane order.
static inline float sum_lanes(const float *a) {
    float t = 0;
    for (int l = 0; l < 16; l++) t += a[l];
    return t;
}

static inline float max_lanes(const float *a) {
    float m = a[0];
    for (int l = 1; l < 16; l++) m = a[l] > m ? a[l] : m;
    return m;
}

typedef struct {
    const float *q, *k, *v;
    size_t ld, N, T, D, NH, HD, Tp, HDp;
    float scale;
    float *out;
    size_t ldo;
    float *kt, *vp;         // packed per (n, h): Kᵀ by key blocks [Tp/BC][HD][BC], V (T x HDp); zero-padded
    float *worker_scratch;  // per worker: O (BR x HDp), S (BR x BC), m, l (BR each)
    size_t tiles;
} attention_job;

static size_t head_kt_floats(const attention_job *j) { return j->HD * j->Tp; }
static size_t head_vp_floats(const attention_job *j) { return j->T * j->HDp; }
static size_t worker_floats(size_t HDp) { return BR * HDp + BR * BC + 2 * BR; }

GK_CLONES
static void pack_head(void *ctx, size_t item, int worker) {
    (void)worker;
    const attention_job *j = ctx;
    size_t n = item / j->NH, h = item % j->NH;
    const float *k = j->k + n * j->T * j->ld + h * j->HD, *v = j->v + n * j->T * j->ld + h * j->HD;
    float *kt = j->kt + item * head_kt_floats(j), *vp = j->vp + item * head_vp_floats(j);
    for (size_t t = 0; t < j->T; t++) {
        const float *kr = k + t * j->ld, *vr = v + t * j->ld;
        float *kb = kt + t / BC * j->HD * BC + t % BC;
        for (size_t d = 0; d < j->HD; d++) kb[d * BC] = kr[d];
        float *vo = vp + t * j->HDp;
        for (size_t d = 0; d < j->HD; d++) vo[d] = vr[d];
        for (size_t d = j->HD; d < j->HDp; d++) vo[d] = 0;
    }
    for (size_t t = j->T; t < j->Tp; t++)
        for (size_t d = 0; d < j->HD; d++) kt[t / BC * j->HD * BC + d * BC + t % BC] = 0;
}

// S[i][0..BC) = scale · q_i · Kᵀ of one key block (kt: [HD][BC]) for 4 query rows.
static inline __attribute__((always_inline)) void scores4(const float *const qr[4], const float *kt, size_t HD,
                                                          float scale, float *S) {
    v16 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) acc[i][c] = (v16)0.0f;
    for (size_t d = 0; d < HD; d++) {
        const float *kd = kt + d * BC;
        v16 k0 = LOAD16(kd), k1 = LOAD16(kd + 16), k2 = LOAD16(kd + 32), k3 = LOAD16(kd + 48);
        for (int i = 0; i < 4; i++) {
            v16 qd = (v16)qr[i][d];
            acc[i][0] += qd * k0;
            acc[i][1] += qd * k1;
            acc[i][2] += qd * k2;
            acc[i][3] += qd * k3;
        }
    }
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) STORE16(S + i * BC + 16 * c, acc[i][c] * scale);
}

// O[i][c0 .. c0+16·nc) += Σ_j P[i][j] · V[j][c0 ..] for 4 rows, j < jv.
static inline __attribute__((always_inline)) void pv4(const float *P, const float *vp, size_t HDp, size_t jv,
                                                      float *O, int nc) {
    v16 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < nc; c++) acc[i][c] = LOAD16(O + i * HDp + 16 * c);
    for (size_t t = 0; t < jv; t++) {
        const float *vr = vp + t * HDp;
        v16 vv[4];
        for (int c = 0; c < nc; c++) vv[c] = LOAD16(vr + 16 * c);
        for (int i = 0; i < 4; i++) {
            v16 p = (v16)P[i * BC + t];
            for (int c = 0; c < nc; c++) acc[i][c] += p * vv[c];
        }
    }
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < nc; c++) STORE16(O + i * HDp + 16 * c, acc[i][c]);
}

GK_CLONES
static void attend_tile(void *ctx, size_t item, int worker) {
    const attention_job *j = ctx;
    size_t nh = item / j->tiles, tile = item % j->tiles;
    size_t n = nh / j->NH, h = nh % j->NH;
    size_t r0 = tile * BR, rows = j->T - r0 < BR ? j->T - r0 : BR;
    const float *kt = j->kt + nh * head_kt_floats(j), *vp = j->vp + nh * head_vp_floats(j);
    float *O = j->worker_scratch + (size_t)worker * worker_floats(j->HDp);
    float *S = O + BR * j->HDp, *m = S + BR * BC, *l = m + BR;
    for (size_t i = 0; i < BR * j->HDp; i++) O[i] = 0;
    for (size_t i = 0; i < BR; i++) {
        m[i] = -FLT_MAX;
        l[i] = 0;
    }
    const float *q = j->q + n * j->T * j->ld + h * j->HD;
    for (size_t j0 = 0; j0 < j->T; j0 += BC) {
        size_t jv = j->T - j0 < BC ? j->T - j0 : BC;
        for (size_t i4 = 0; i4 < rows; i4 += 4) {
            const float *qr[4];
            for (size_t i = 0; i < 4; i++) qr[i] = q + (r0 + (i4 + i < rows ? i4 + i : rows - 1)) * j->ld;
            scores4(qr, kt + j0 * j->HD, j->HD, j->scale, S + i4 * BC);
        }
        for (size_t i = 0; i < rows; i++) {
            float *s = S + i * BC;
            for (size_t t = jv; t < BC; t++) s[t] = -FLT_MAX;
            float lanes[16];
            v16 mx = LOAD16(s);
            for (int c = 1; c < BC / 16; c++) mx = __builtin_elementwise_max(mx, LOAD16(s + 16 * c));
            STORE16(lanes, mx);
            float m_new = max_lanes(lanes);
            if (m[i] > m_new) m_new = m[i];
            float alpha = gk_expf(m[i] - m_new);
            for (int c = 0; c < BC / 16; c++) STORE16(s + 16 * c, EXP16(LOAD16(s + 16 * c) - m_new));
            for (size_t t = jv; t < BC; t++) s[t] = 0;  // exp of the padding is tiny, not 0
            v16 sum = LOAD16(s);
            for (int c = 1; c < BC / 16; c++) sum += LOAD16(s + 16 * c);
            STORE16(lanes, sum);
            float total = sum_lanes(lanes);
            l[i] = l[i] * alpha + total;
            m[i] = m_new;
            float *o = O + i * j->HDp;
            for (size_t d = 0; d < j->HDp; d++) o[d] *= alpha;
        }
        for (size_t i = rows; i < BR; i++)
            for (size_t t = 0; t < BC; t++) S[i * BC + t] = 0;
        for (size_t i4 = 0; i4 < rows; i4 += 4) {
            for (size_t c0 = 0; c0 < j->HDp; c0 += 64) {
                int nc = (int)((j->HDp - c0) / 16 < 4 ? (j->HDp - c0) / 16 : 4);
                const float *vb = vp + j0 * j->HDp + c0;
                float *Ob = O + i4 * j->HDp + c0;
                switch (nc) {
                case 1: pv4(S + i4 * BC, vb, j->HDp, jv, Ob, 1); break;
                case 2: pv4(S + i4 * BC, vb, j->HDp, jv, Ob, 2); break;
                case 3: pv4(S + i4 * BC, vb, j->HDp, jv, Ob, 3); break;
                default: pv4(S + i4 * BC, vb, j->HDp, jv, Ob, 4); break;
                }
            }
        }
    }
    for (size_t i = 0; i < rows; i++) {
        float inv = 1.0f / l[i];
        float *dst = j->out + (n * j->T + r0 + i) * j->ldo + h * j->HD;
        const float *o = O + i * j->HDp;
        for (size_t d = 0; d < j->HD; d++) dst[d] = o[d] * inv;
    }
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

size_t gk_attention_scratch_floats(size_t N, size_t T, size_t D, size_t NH, int workers) {
    size_t HD = D / NH, Tp = round_up(T, BC), HDp = round_up(HD, 16);
    if (workers < 1) workers = 1;
    return N * NH * (HD * Tp + T * HDp) + (size_t)workers * worker_floats(HDp);
}

void gk_attention(const float *q, const float *k, const float *v, size_t ld, size_t N, size_t T, size_t D, size_t NH,
                  float *out, size_t ldo, float *scratch, int workers) {
    if (N == 0 || T == 0) return;
    if (workers < 1) workers = 1;
    attention_job j = {.q = q, .k = k, .v = v, .ld = ld, .N = N, .T = T, .D = D, .NH = NH, .out = out, .ldo = ldo};
    j.HD = D / NH;
    j.Tp = round_up(T, BC);
    j.HDp = round_up(j.HD, 16);
    j.scale = 1.0f / sqrtf((float)j.HD);
    j.kt = scratch;
    j.vp = j.kt + N * NH * head_kt_floats(&j);
    j.worker_scratch = j.vp + N * NH * head_vp_floats(&j);
    j.tiles = (T + BR - 1) / BR;
    gk_parallel_for(N * NH, workers, pack_head, &j);
    gk_parallel_for(N * NH * j.tiles, workers, attend_tile, &j);
}
