// Elementwise hot loops of the inference core, in C so that clang vectorises them (including exp
// and tanh, written as polynomials). Each function is compiled for AVX-512, AVX2 and baseline x86-64
// and the loader picks one per CPU (target_clones). Naive twins live in Tests/GriditTensorTests.
//
// Shape legend as in GriditTensor/Tensor.swift: T rows (tokens), D columns (channels).
// All buffers are contiguous float32; `out` may alias `x` where noted.
#ifndef GRIDIT_KERNELS_H
#define GRIDIT_KERNELS_H
#include <stddef.h>

/// out[t,:] = norm(x[t,:]) * (1 + scale) + shift, norm = layer norm without affine (eps).
/// x, out: (T, D); shift, scale: (D) or both NULL for a plain layer norm. out may alias x.
void gk_layernorm_modulate(float *out, const float *x, const float *shift, const float *scale,
                           size_t T, size_t D, float eps);

/// x = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place, n elements.
void gk_gelu_tanh(float *x, size_t n);

/// out = x * sigmoid(x), n elements; out may alias x.
void gk_silu(float *out, const float *x, size_t n);

/// Each of the `rows` rows of x (row stride `ld`, `cols` used) becomes softmax(scale * row), in place.
void gk_softmax_rows(float *x, size_t rows, size_t cols, size_t ld, float scale);

/// Like gk_softmax_rows without the division: row becomes exp(scale * (row - max)), and
/// sums[r] receives the row's sum, so the caller can normalise a smaller product instead.
void gk_softmax_rows_unnormalized(float *x, size_t rows, size_t cols, size_t ld, float scale, float *sums);

/// x[r, c] *= 1 / sums[r] for c < cols; x has row stride ld.
void gk_divide_rows(float *x, const float *sums, size_t rows, size_t cols, size_t ld);

/// x[t,:] += gate * y[t,:]; x, y: (T, D); gate: (D).
void gk_gate_residual(float *x, const float *y, const float *gate, size_t T, size_t D);

/// out[t,:] = row, for t < T; row: (D). Used to start a GEMM from its bias (beta = 1).
void gk_fill_rows(float *out, const float *row, size_t T, size_t D);

/// out[i] = exp(x[i]) with the same polynomial the other kernels use (tests compare with libm).
void gk_exp(float *out, const float *x, size_t n);
#endif
