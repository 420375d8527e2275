// Attention kernel alone (Sources/CGriditKernels/attention.c) on one thread: checks it against a
// double-precision naive twin, then times the shapes of the bundled pipeline and the DiT benchmarks
// (best of the passes in one second of thread CPU time, so other load on the machine skews it least),
// in fp32 and in bf16, by VDPBF16PS where the CPU has it (checked bit for bit against the FMA form)
// and on FMAs. Build and run from the repository root:
//     clang -O3 -ffp-contract=fast -ISources/CGriditKernels/include -ISources/CGriditKernels \
//         Sources/CGriditKernels/attention.c Sources/CGriditKernels/gemm.c tools/bench/attention_bench.c \
//         -lm -o /tmp/gridit-attention && /tmp/gridit-attention
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_bench.h"

// softmax(q kᵀ / sqrt(HD)) v in double, qkv packed (N, T, 3D).
static double max_error(const float *qkv, const float *out, size_t N, size_t T, size_t D, size_t NH) {
    size_t HD = D / NH;
    double *s = malloc(T * sizeof *s), worst = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t h = 0; h < NH; h++)
            for (size_t i = 0; i < T; i++) {
                const float *q = qkv + (n * T + i) * 3 * D + h * HD;
                double m = -INFINITY, z = 0;
                for (size_t j = 0; j < T; j++) {
                    const float *k = qkv + (n * T + j) * 3 * D + D + h * HD;
                    double a = 0;
                    for (size_t d = 0; d < HD; d++) a += (double)q[d] * k[d];
                    s[j] = a / sqrt((double)HD);
                    m = s[j] > m ? s[j] : m;
                }
                for (size_t j = 0; j < T; j++) z += s[j] = exp(s[j] - m);
                for (size_t d = 0; d < HD; d++) {
                    double a = 0;
                    for (size_t j = 0; j < T; j++) a += s[j] * qkv[(n * T + j) * 3 * D + 2 * D + h * HD + d];
                    double e = fabs(a / z - out[(n * T + i) * D + h * HD + d]);
                    worst = e > worst ? e : worst;
                }
            }
    free(s);
    return worst;
}

static double best_seconds(const float *qkv, float *out, float *scratch, size_t N, size_t T, size_t D, size_t NH,
                           int bf16, int kernel) {
    double best = INFINITY;
    for (double start = cpu_seconds(); cpu_seconds() - start < 1.0;) {
        double t = cpu_seconds();
        gk_attention(qkv, qkv + D, qkv + 2 * D, 3 * D, N, T, D, NH, out, D, scratch, 1, bf16, kernel);
        t = cpu_seconds() - t;
        best = t < best ? t : best;
    }
    return best;
}

int main(void) {
    // N, T, D, NH: stage 1 and stage 2 of models/moving-digits, DiT-XL/2 and DiT-S/2 at input 32,
    // DiT-XL/2 at input 64, then longer sequences (several softmax chunks).
    static const size_t shapes[][4] = {{1, 256, 128, 4},   {16, 64, 192, 3}, {1, 256, 1152, 16}, {1, 256, 384, 6},
                                       {1, 1024, 1152, 16}, {1, 1024, 256, 8}, {1, 2048, 64, 1},  {1, 4096, 32, 1}};
    int dp = gk_isa() >= GK_ISA_AVX512BF16;
    printf("GFLOP/s of 4 N T^2 D; max |diff| against softmax in double on the same inputs%s\n",
           dp ? "" : " (no AVX512_BF16: bf16 on FMAs only)");
    uint32_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t N = shapes[s][0], T = shapes[s][1], D = shapes[s][2], NH = shapes[s][3];
        float *qkv = malloc(N * T * 3 * D * sizeof *qkv), *out = malloc(N * T * D * sizeof *out),
              *out2 = malloc(N * T * D * sizeof *out2);
        float *scratch = malloc(gk_attention_scratch_floats(N, T, D, NH, 1, 1) * sizeof *scratch);
        for (size_t i = 0; i < N * T * 3 * D; i++) qkv[i] = next_value(&seed, 4);
        double flop = 4.0 * N * T * T * D * 1e-9;
        printf("N=%2zu T=%4zu HD=%2zu NH=%2zu:", N, T, D / NH, NH);
        static const struct { const char *name; int bf16, kernel; } runs[] = {
            {"fp32", 0, GK_BF16_AUTO}, {"bf16 VDPBF16PS", 1, GK_BF16_DPBF16}, {"bf16 FMA", 1, GK_BF16_FMA}};
        for (size_t r = 0; r < 3; r++) {
            if (runs[r].kernel == GK_BF16_DPBF16 && !dp) continue;
            gk_attention(qkv, qkv + D, qkv + 2 * D, 3 * D, N, T, D, NH, out, D, scratch, 1, runs[r].bf16, runs[r].kernel);
            double err = T <= 1024 ? max_error(qkv, out, N, T, D, NH) : NAN;
            double t = best_seconds(qkv, out2, scratch, N, T, D, NH, runs[r].bf16, runs[r].kernel);
            printf("  %s %8.1f us %6.1f GFLOP/s diff %.1e", runs[r].name, t * 1e6, flop / t, err);
            if (r == 2 && dp) {  // the FMA form against VDPBF16PS, bit for bit
                gk_attention(qkv, qkv + D, qkv + 2 * D, 3 * D, N, T, D, NH, out2, D, scratch, 1, 1, GK_BF16_DPBF16);
                printf(" (%s)", memcmp(out, out2, N * T * D * sizeof *out) ? "BITS DIFFER" : "same bits");
            }
        }
        printf("\n");
        free(qkv);
        free(out);
        free(out2);
        free(scratch);
    }
    return 0;
}
