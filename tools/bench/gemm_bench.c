// The matrix products alone (Sources/CGriditKernels/gemm.c) on one thread, on the token
// products of the bundled pipeline and the DiT benchmarks, weights pre-packed as the models hold
// them: checks each against a double-precision naive product, then times it (best of the passes in
// half a second of thread CPU time, so other load on the machine skews it least). fp32, or with
// `bf16` as second argument bf16 products (weights packed in bf16, this CPU's bf16 kernel; checked
// against the double product of the bf16-rounded operands). Build and run from the repository root:
//     clang -O3 -ffp-contract=fast -ISources/CGriditKernels/include -ISources/CGriditKernels \
//         Sources/CGriditKernels/gemm.c Sources/CGriditKernels/kernels.c tools/bench/gemm_bench.c \
//         -lm -o /tmp/gridit-gemm && /tmp/gridit-gemm PEAK [bf16]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_bench.h"

// v rounded to bf16 (to nearest even), as a float.
static float bf16_round(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&v, &u, 4);
    return v;
}

// Largest |c - a·bᵀ - bias| over a sample of rows, relative to the largest |a·bᵀ| term sum.
static double max_error(const float *a, const float *b, const float *bias, int gelu, const float *c, size_t M,
                        size_t N, size_t K) {
    double worst = 0;
    for (size_t i = 0; i < M; i += 1 + M / 16)
        for (size_t n = 0; n < N; n++) {
            double s = bias[n], scale = fabs(bias[n]);
            for (size_t k = 0; k < K; k++) {
                s += (double)a[i * K + k] * b[n * K + k];
                scale += fabs((double)a[i * K + k] * b[n * K + k]);
            }
            if (gelu) s = 0.5 * s * (1 + tanh(0.7978845608028654 * (s + 0.044715 * s * s * s)));
            double e = fabs(c[i * N + n] - s) / scale;
            worst = e > worst ? e : worst;
        }
    return worst;
}

int main(int argc, char **argv) {
    double peak = argc > 1 ? atof(argv[1]) : 0;  // one core's GFLOP/s (tools/bench/peak.c), for "% of peak"
    int bf16 = argc > 2 && strcmp(argv[2], "bf16") == 0;
    if (gk_isa() < (bf16 ? GK_ISA_AVX512BF16 : GK_ISA_AVX512)) {
        fprintf(stderr, "this CPU lacks %s, which gk_gemm needs (elsewhere the products run on OpenBLAS)\n",
                bf16 ? "AVX512_BF16" : "AVX-512");
        return 2;
    }
    // fc1 runs with the GELU epilogue, as in the models.
    static const struct { const char *name; size_t M, N, K; int gelu; } shapes[] = {
        {"stage 1 qkv (1 grid)", 256, 384, 128, 0},     {"stage 1 fc1 + GELU", 256, 512, 128, 1},
        {"stage 1 fc2", 256, 128, 512, 0},              {"stage 1 proj", 256, 128, 128, 0},
        {"stage 2 qkv (16 frames)", 1024, 576, 192, 0}, {"stage 2 fc1 + GELU", 1024, 768, 192, 1},
        {"stage 2 fc2", 1024, 192, 768, 0},             {"stage 2 proj", 1024, 192, 192, 0},
        {"DiT-S/2 x2 qkv", 512, 1152, 384, 0},          {"DiT-S/2 x2 fc1 + GELU", 512, 1536, 384, 1},
        {"DiT-S/2 x2 fc2", 512, 384, 1536, 0},          {"DiT-B/2 x2 fc1 + GELU", 512, 3072, 768, 1},
        {"DiT-B/2 x2 fc2", 512, 768, 3072, 0},          {"DiT-XL/2 qkv", 1024, 3456, 1152, 0},
        {"DiT-XL/2 proj", 1024, 1152, 1152, 0},         {"DiT-XL/2 fc1 + GELU", 1024, 4608, 1152, 1},
        {"DiT-XL/2 fc2", 1024, 1152, 4608, 0},
    };
    printf("%-26s %6s %6s %6s %10s %9s %8s %9s\n", "product", "M", "N", "K", "us", "GFLOP/s", "% peak", "rel err");
    double total_flops = 0, total_time = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
        float *a = malloc(M * K * sizeof *a), *b = malloc(N * K * sizeof *b), *bias = malloc(N * sizeof *bias);
        float *c = malloc(M * N * sizeof *c);
        uint32_t seed = 12345u + (uint32_t)s;
        for (size_t i = 0; i < M * K; i++) a[i] = next_value(&seed, 2);
        for (size_t i = 0; i < N * K; i++) b[i] = next_value(&seed, 2);
        for (size_t i = 0; i < N; i++) bias[i] = next_value(&seed, 2);
        void *bp = aligned_alloc(64, (gk_packed_b_bytes(N, K, bf16) + 63) / 64 * 64);
        gk_pack_b(b, K, N, K, bf16, bp, 1);
        void *scratch = aligned_alloc(64, (gk_gemm_scratch_bytes(M, K, bf16, 0, 1) + 63) / 64 * 64);
        gk_gemm_args g = {.M = M, .N = N, .K = K, .bf16 = bf16, .a = a, .lda = K, .b_packed = bp, .c = c, .ldc = N,
                          .bias_n = bias, .gelu = shapes[s].gelu};
        gk_gemm(&g, scratch, 1);
        if (bf16) {
            for (size_t i = 0; i < M * K; i++) a[i] = bf16_round(a[i]);
            for (size_t i = 0; i < N * K; i++) b[i] = bf16_round(b[i]);
        }
        double err = max_error(a, b, bias, shapes[s].gelu, c, M, N, K), best = INFINITY;
        for (double start = cpu_seconds(); cpu_seconds() - start < 0.5;) {
            double t0 = cpu_seconds();
            gk_gemm(&g, scratch, 1);
            double t = cpu_seconds() - t0;
            best = t < best ? t : best;
        }
        double flops = 2.0 * M * N * K, gflops = flops / best * 1e-9;
        total_flops += flops;
        total_time += best;
        printf("%-26s %6zu %6zu %6zu %10.1f %9.1f %7.1f%% %9.2e\n", shapes[s].name, M, N, K, best * 1e6, gflops,
               peak > 0 ? 100 * gflops / peak : NAN, err);
        if (!(err < 1e-5)) {
            fprintf(stderr, "%s: relative error %.3g over the 1e-5 tolerance\n", shapes[s].name, err);
            return 1;
        }
        free(a), free(b), free(bias), free(c), free(bp), free(scratch);
    }
    printf("all products, each once: %.1f GFLOP/s (relative error tolerance 1e-5 against double)\n",
           total_flops / total_time * 1e-9);
    return 0;
}
