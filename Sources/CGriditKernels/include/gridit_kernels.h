// Elementwise hot loops of the inference core, in C so that clang vectorises them (including exp
// and tanh, written as polynomials). Each function is compiled for AVX-512, AVX2 and baseline x86-64
// and the loader picks one per CPU (target_clones). Naive twins live in Tests/GriditTensorTests.
//
// Shape legend as in GriditTensor/Tensor.swift: T rows (tokens), D columns (channels).
// All buffers are contiguous float32; `out` may alias `x` where noted.
#ifndef GRIDIT_KERNELS_H
#define GRIDIT_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/// x = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place, n elements.
void gk_gelu_tanh(float *x, size_t n);

/// out = x * sigmoid(x), n elements; out may alias x.
void gk_silu(float *out, const float *x, size_t n);

/// out[t,:] = row, for t < T; row: (D). Used to start a GEMM from its bias (beta = 1).
void gk_fill_rows(float *out, const float *row, size_t T, size_t D);

/// out[i] = exp(x[i]) with the same polynomial the other kernels use (tests compare with libm).
void gk_exp(float *out, const float *x, size_t n);

/// Group norm of one sample and group (PyTorch GroupNorm): x, out: (channels, plane) with `per`
/// channels; statistics over all of them (float partial sums, combined in double), then
/// out = (x - mean) * rstd * weight[c] + bias[c], then SiLU when `silu`. out may alias x.
void gk_group_norm(const float *x, float *out, size_t per, size_t plane, const float *weight, const float *bias,
                   float eps, int silu);
/// gk_group_norm of one group (per even) written as bf16 channel pairs (per/2, plane, 2) at `out`
/// (gk_conv_pairs of gk_group_norm's output, bit for bit). Needs AVX512_BF16.
void gk_group_norm_pairs(const float *x, uint16_t *out, size_t per, size_t plane, const float *weight,
                         const float *bias, float eps, int silu);

/// The DiT's row passes over a batch on the thread pool: for sample n, with m = mod + n * mod_stride,
/// y == NULL: out = norm(x) * (1 + m[scale..]) + m[shift..];
/// else:      x += m[gate..] * y, then out = norm(x) * (1 + m[scale..]) + m[shift..]
/// (the residual of one DiT sub-block fused with the norm of the next); norm = layer norm without
/// affine (eps). x, y, out: (N, T, D); out may not alias x. Row results do not depend on the split.
void gk_residual_layernorm_modulate_batch(float *x, const float *y, float *out, size_t N, size_t T, size_t D,
                                          const float *mod, size_t mod_stride, size_t gate, size_t shift, size_t scale,
                                          float eps, int workers);

// MARK: CPU features (gemm.c)

enum { GK_ISA_PORTABLE = 0, GK_ISA_AVX512 = 1, GK_ISA_AVX512BF16 = 2 };

/// What this CPU runs: GK_ISA_AVX512 needs AVX-512 F/BW/VL/DQ, GK_ISA_AVX512BF16 also AVX512_BF16.
int gk_isa(void);

// MARK: thread pool (pool.c)

typedef void (*gk_task_fn)(void *ctx, size_t task, int worker);

/// Runs fn(ctx, t, worker) for t < tasks on up to `workers` threads (the caller included) and
/// returns when all are done. worker < workers indexes per-thread scratch; the task-to-worker
/// assignment is dynamic, so tasks must not depend on it. Two callers can run jobs at once (two
/// pools); nested calls, and calls while both pools are busy, run serially on the caller.
void gk_parallel_for(size_t tasks, int workers, gk_task_fn fn, void *ctx);

// MARK: matrix products (gemm.c, AVX-512 only: callers check gk_isa() >= GK_ISA_AVX512)

/// Geometry of a 2-D convolution whose im2col matrix is the B operand: column n is output position
/// (n / Wo, n % Wo), k = (c, ki, kj) as in the flattened (Cout, C, KH, KW) weight. Zero padding.
typedef struct gk_conv_geometry {
    size_t C, H, W, KH, KW, stride, pad_top, pad_left, Ho, Wo;
} gk_conv_geometry;

/// C (M x N, ldc) = A (M x K) · Bᵀ (B: N x K) [+ C] [+ bias_n per column] [+ bias_m per row] [GELU].
/// A: fp32 rows `a` (lda), or `a_packed` (gk_pack_a, same precision). B: fp32 rows `b` (ldb), or
/// `b_packed` (gk_pack_b), or with `conv` set, `b` is one (C, H, W) image and B its im2col matrix.
/// bf16: inputs rounded to bfloat16 (nearest even), products accumulated in fp32.
typedef struct gk_gemm_args {
    size_t M, N, K;
    int bf16;
    const float *a;
    size_t lda;
    const void *a_packed;
    const float *b;
    size_t ldb;
    const void *b_packed;
    const gk_conv_geometry *conv;
    /// bf16 with `conv`: B is the im2col of this channel-pair image (gk_conv_pairs of `b`'s image,
    /// C even, stride 1) with k = (ki, kj, c), so the weight must be (M, KH, KW, C); NULL: of `b`.
    const uint16_t *b_pairs;
    float *c;
    size_t ldc;
    const float *bias_n;
    const float *bias_m;
    int accumulate;
    int gelu;
    /// bf16 with `a` unpacked: GK_BF16_AUTO (0) picks this CPU's faster way; the others force one
    /// (both give the same bits on CPUs whose VDPBF16PS rounds as Intel's: see gemm.c).
    int bf16_kernel;
} gk_gemm_args;

enum { GK_BF16_AUTO = 0, GK_BF16_DPBF16 = 1, GK_BF16_FMA = 2 };

/// Whether bf16 products (A unpacked) run on fp32 FMAs on this CPU (VDPBF16PS is the slower way).
int gk_bf16_on_fma(void);

/// Scratch bytes `gk_gemm` needs for these sizes and `workers` threads.
size_t gk_gemm_scratch_bytes(size_t M, size_t K, int bf16, int a_packed, int workers);
void gk_gemm(const gk_gemm_args *args, void *scratch, int workers);

/// Pre-packed operands (done once, e.g. at model load). Return 0, or -1 when out of memory.
size_t gk_packed_a_bytes(size_t M, size_t K, int bf16);
int gk_pack_a(const float *a, size_t lda, size_t M, size_t K, int bf16, void *dst, int workers);
size_t gk_packed_b_bytes(size_t N, size_t K, int bf16);
int gk_pack_b(const float *b, size_t ldb, size_t N, size_t K, int bf16, void *dst, int workers);
/// The bf16 layout of `gk_pack_b` from bf16 bit patterns (N, K) with rows `ldb` apart (a bf16
/// checkpoint's weight, no fp32 copy): the same bytes as `gk_pack_b` of their float values.
void gk_pack_b_from_bf16(const uint16_t *b, size_t ldb, size_t N, size_t K, void *dst, int workers);

/// Products with few rows (per-sample vectors), several layers on the same x at once: for each
/// segment, y[m * ldy + y_offset + n] = bias[n] + x[m, :] · w[n, :] for n < seg.n, m < M;
/// w: fp32 (n, K) rows, or bf16 (n, K) rows (uint16 bit patterns). Each element is a fixed-order
/// dot product (16 or 32 partial sums, then a fixed reduction), whatever M and the thread split.
typedef struct gk_small_segment {
    const void *w;
    const float *bias;
    size_t n;
    size_t y_offset;
} gk_small_segment;

size_t gk_linear_small_scratch_bytes(size_t M, size_t K, int bf16);
void gk_linear_small(const float *x, size_t ldx, size_t M, size_t K, int bf16, const gk_small_segment *segs,
                     size_t nsegs, float *y, size_t ldy, void *scratch, int workers);

// MARK: attention (attention.c)

/// softmax(q kᵀ / sqrt(HD)) v per (sample, head), online softmax over chunks of keys. q, k, v:
/// (N, T, D) views with token rows `ld` floats apart (3D inside a packed qkv); heads (NH, HD)
/// head-major within D; out: (N, T, D) with rows `ldo` apart. scratch: gk_attention_scratch_floats.
/// bf16: q, k, v and the softmax's weights rounded to bf16, products accumulated in fp32;
/// bf16_kernel as gk_gemm_args's (VDPBF16PS or FMAs, the same bits; FMAs where VDPBF16PS is missing).
size_t gk_attention_scratch_floats(size_t N, size_t T, size_t D, size_t NH, int workers, int bf16);
void gk_attention(const float *q, const float *k, const float *v, size_t ld, size_t N, size_t T, size_t D, size_t NH,
                  float *out, size_t ldo, float *scratch, int workers, int bf16, int bf16_kernel);

/// One (C, H, W) image, C even, as bf16 channel pairs (C/2, H, W, 2):
/// out[((c / 2) * plane + i) * 2 + c % 2] = bf16(x[c * plane + i]), plane = H * W.
void gk_conv_pairs(const float *x, size_t C, size_t plane, uint16_t *out, int workers);
/// Nearest 2x upsampling of (C, H, W), C even, as bf16 channel pairs (C/2, 2H, 2W, 2).
void gk_upsample2x_pairs(const float *x, size_t C, size_t H, size_t W, uint16_t *out, int workers);
/// out[2i] = bf16(a[i]), out[2i + 1] = bf16(b[i]), i < n (needs AVX512_BF16).
void gk_zip_bf16(const float *a, const float *b, size_t n, uint16_t *out);

/// fp32 -> bf16 bit patterns, round to nearest even (the conversion the bf16 kernels apply).
void gk_to_bf16(const float *x, uint16_t *out, size_t n);
#endif
