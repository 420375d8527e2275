#include "gridit_kernels.h"
#include "gk_math.h"

// Reductions keep 16 independent partial results: the loops vectorise without reassociation
// flags, and the summation order is fixed by the code, not by the vector width of the CPU.
#define GK_LANES 16

static inline float gk_sum(const float *x, size_t n) {
    float acc[GK_LANES] = {0};
    size_t i = 0;
    for (; i + GK_LANES <= n; i += GK_LANES)
        for (int l = 0; l < GK_LANES; l++) acc[l] += x[i + l];
    float s = 0.0f;
    for (int l = 0; l < GK_LANES; l++) s += acc[l];
    for (; i < n; i++) s += x[i];
    return s;
}

static inline float gk_centered_sq(const float *x, size_t n, float mean) {
    float acc[GK_LANES] = {0};
    size_t i = 0;
    for (; i + GK_LANES <= n; i += GK_LANES)
        for (int l = 0; l < GK_LANES; l++) {
            float c = x[i + l] - mean;
            acc[l] += c * c;
        }
    float s = 0.0f;
    for (int l = 0; l < GK_LANES; l++) s += acc[l];
    for (; i < n; i++) s += (x[i] - mean) * (x[i] - mean);
    return s;
}

GK_CLONES
void gk_exp(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gk_expf(x[i]);
}

static inline void layernorm_row(float *o, const float *row, const float *shift, const float *scale, size_t D,
                                 float eps) {
    float mean = gk_sum(row, D) / (float)D;
    float sq = gk_centered_sq(row, D, mean);
    float rstd = 1.0f / sqrtf(sq / (float)D + eps);
    if (shift && scale) {
        for (size_t d = 0; d < D; d++) o[d] = (row[d] - mean) * rstd * (1.0f + scale[d]) + shift[d];
    } else {
        for (size_t d = 0; d < D; d++) o[d] = (row[d] - mean) * rstd;
    }
}

GK_CLONES
static void layernorm_modulate(float *out, const float *x, const float *shift, const float *scale,
                           size_t T, size_t D, float eps) {
    for (size_t t = 0; t < T; t++) layernorm_row(out + t * D, x + t * D, shift, scale, D, eps);
}

GK_CLONES
static void residual_layernorm_modulate(float *x, const float *y, const float *gate, float *out, const float *shift,
                                    const float *scale, size_t T, size_t D, float eps) {
    for (size_t t = 0; t < T; t++) {
        float *xr = x + t * D;
        const float *yr = y + t * D;
        for (size_t d = 0; d < D; d++) xr[d] += gate[d] * yr[d];
        layernorm_row(out + t * D, xr, shift, scale, D, eps);
    }
}

GK_CLONES
void gk_gelu_tanh(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = gk_gelu1(x[i]);
}

GK_CLONES
void gk_silu(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = v / (1.0f + gk_expf(-v));
    }
}

void gk_fill_rows(float *out, const float *row, size_t T, size_t D) {
    for (size_t t = 0; t < T; t++) memcpy(out + t * D, row, D * sizeof(float));
}

// Mean and 1/std of one group (per channels of plane values), in double.
__attribute__((always_inline)) static inline void group_stats(const float *x, size_t per, size_t plane, float eps,
                                                              float *mean_out, double *rstd_out) {
    size_t n = per * plane;
    double sum = 0;
    for (size_t c = 0; c < per; c++) sum += gk_sum(x + c * plane, plane);
    float mean = (float)(sum / (double)n);
    double sq = 0;
    for (size_t c = 0; c < per; c++) sq += gk_centered_sq(x + c * plane, plane, mean);
    *mean_out = mean;
    *rstd_out = 1.0 / sqrt(sq / (double)n + eps);
}

// d[i] = s[i] * scale + shift, SiLU'd when asked: the one formula of both group norm outputs (always
// inlined, so both are compiled for the same clone target and give the same bits).
__attribute__((always_inline)) static inline void norm_row(const float *s, float *d, size_t n, float scale, float shift,
                                                           int silu) {
    if (silu) {
        for (size_t i = 0; i < n; i++) {
            float v = s[i] * scale + shift;
            d[i] = v / (1.0f + gk_expf(-v));
        }
    } else {
        for (size_t i = 0; i < n; i++) d[i] = s[i] * scale + shift;
    }
}

GK_CLONES
void gk_group_norm(const float *x, float *out, size_t per, size_t plane, const float *weight, const float *bias,
                   float eps, int silu) {
    float mean;
    double rstd;
    group_stats(x, per, plane, eps, &mean, &rstd);
    for (size_t c = 0; c < per; c++) {
        float scale = (float)(rstd * weight[c]);
        float shift = (float)(bias[c] - mean * rstd * weight[c]);
        norm_row(x + c * plane, out + c * plane, plane, scale, shift, silu);
    }
}

GK_CLONES
void gk_group_norm_pairs(const float *x, uint16_t *out, size_t per, size_t plane, const float *weight,
                         const float *bias, float eps, int silu) {
    enum { CHUNK = 512 };
    float mean;
    double rstd;
    group_stats(x, per, plane, eps, &mean, &rstd);
    float rows[2][CHUNK] __attribute__((aligned(64)));
    for (size_t c = 0; c < per; c += 2) {
        float scale[2], shift[2];
        for (int h = 0; h < 2; h++) {
            scale[h] = (float)(rstd * weight[c + h]);
            shift[h] = (float)(bias[c + h] - mean * rstd * weight[c + h]);
        }
        for (size_t i = 0; i < plane; i += CHUNK) {
            size_t n = plane - i < CHUNK ? plane - i : CHUNK;
            for (int h = 0; h < 2; h++) norm_row(x + (c + h) * plane + i, rows[h], n, scale[h], shift[h], silu);
            gk_zip_bf16(rows[0], rows[1], n, out + (c / 2 * plane + i) * 2);
        }
    }
}

// MARK: row passes of a batch, over the thread pool

#define GK_ROW_BLOCK 64

typedef struct {
    float *x;
    const float *y;
    float *out;
    size_t T, D, blocks;
    const float *mod;
    size_t mod_stride, gate, shift, scale;
    float eps;
} rows_job;

static void residual_rows_task(void *ctx, size_t item, int worker) {
    (void)worker;
    const rows_job *j = ctx;
    size_t n = item / j->blocks, r0 = item % j->blocks * GK_ROW_BLOCK;
    size_t rows = j->T - r0 < GK_ROW_BLOCK ? j->T - r0 : GK_ROW_BLOCK;
    size_t at = (n * j->T + r0) * j->D;
    const float *m = j->mod + n * j->mod_stride;
    if (j->y) {
        residual_layernorm_modulate(j->x + at, j->y + at, m + j->gate, j->out + at, m + j->shift, m + j->scale, rows,
                                    j->D, j->eps);
    } else {
        layernorm_modulate(j->out + at, j->x + at, m + j->shift, m + j->scale, rows, j->D, j->eps);
    }
}

void gk_residual_layernorm_modulate_batch(float *x, const float *y, float *out, size_t N, size_t T, size_t D,
                                          const float *mod, size_t mod_stride, size_t gate, size_t shift, size_t scale,
                                          float eps, int workers) {
    rows_job j = {.x = x, .y = y, .out = out, .T = T, .D = D, .blocks = (T + GK_ROW_BLOCK - 1) / GK_ROW_BLOCK,
                  .mod = mod, .mod_stride = mod_stride, .gate = gate, .shift = shift, .scale = scale, .eps = eps};
    gk_parallel_for(N * j.blocks, workers, residual_rows_task, &j);
}
