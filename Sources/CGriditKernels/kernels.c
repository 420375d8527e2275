#include "gridit_kernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__clang__)
#define GK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GK_CLONES
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

static inline float gk_max(const float *x, size_t n) {
    float acc[GK_LANES];
    for (int l = 0; l < GK_LANES; l++) acc[l] = x[0];
    size_t i = 0;
    for (; i + GK_LANES <= n; i += GK_LANES)
        for (int l = 0; l < GK_LANES; l++) acc[l] = acc[l] > x[i + l] ? acc[l] : x[i + l];
    float m = acc[0];
    for (int l = 1; l < GK_LANES; l++) m = m > acc[l] ? m : acc[l];
    for (; i < n; i++) m = m > x[i] ? m : x[i];
    return m;
}

GK_CLONES
void gk_exp(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gk_expf(x[i]);
}

GK_CLONES
void gk_layernorm_modulate(float *out, const float *x, const float *shift, const float *scale,
                           size_t T, size_t D, float eps) {
    for (size_t t = 0; t < T; t++) {
        const float *row = x + t * D;
        float *o = out + t * D;
        float mean = gk_sum(row, D) / (float)D;
        float sq = gk_centered_sq(row, D, mean);
        float rstd = 1.0f / sqrtf(sq / (float)D + eps);
        if (shift && scale) {
            for (size_t d = 0; d < D; d++) o[d] = (row[d] - mean) * rstd * (1.0f + scale[d]) + shift[d];
        } else {
            for (size_t d = 0; d < D; d++) o[d] = (row[d] - mean) * rstd;
        }
    }
}

GK_CLONES
void gk_gelu_tanh(float *x, size_t n) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = k0 * (v + k1 * v * v * v);
        u = fminf(fmaxf(u, -10.0f), 10.0f);       // tanh(10) is 1 in float
        float th = 1.0f - 2.0f / (gk_expf(2.0f * u) + 1.0f);
        x[i] = 0.5f * v * (1.0f + th);
    }
}

GK_CLONES
void gk_silu(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = v / (1.0f + gk_expf(-v));
    }
}

GK_CLONES
void gk_softmax_rows(float *x, size_t rows, size_t cols, size_t ld, float scale) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        float m = gk_max(row, cols);
        for (size_t c = 0; c < cols; c++) row[c] = gk_expf((row[c] - m) * scale);
        float inv = 1.0f / gk_sum(row, cols);
        for (size_t c = 0; c < cols; c++) row[c] *= inv;
    }
}

GK_CLONES
void gk_softmax_rows_unnormalized(float *x, size_t rows, size_t cols, size_t ld, float scale, float *sums) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        float m = gk_max(row, cols);
        for (size_t c = 0; c < cols; c++) row[c] = gk_expf((row[c] - m) * scale);
        sums[r] = gk_sum(row, cols);
    }
}

GK_CLONES
void gk_divide_rows(float *x, const float *sums, size_t rows, size_t cols, size_t ld) {
    for (size_t r = 0; r < rows; r++) {
        float inv = 1.0f / sums[r];
        for (size_t c = 0; c < cols; c++) x[r * ld + c] *= inv;
    }
}

GK_CLONES
void gk_gate_residual(float *x, const float *y, const float *gate, size_t T, size_t D) {
    for (size_t t = 0; t < T; t++) {
        float *xr = x + t * D;
        const float *yr = y + t * D;
        for (size_t d = 0; d < D; d++) xr[d] += gate[d] * yr[d];
    }
}

void gk_fill_rows(float *out, const float *row, size_t T, size_t D) {
    for (size_t t = 0; t < T; t++) memcpy(out + t * D, row, D * sizeof(float));
}
