// Attention kernel alone (Sources/CGriditKernels/attention.c) on one thread: checks it against a
// double-precision naive twin, then times the shapes of the bundled pipeline and the DiT benchmarks
// (best of the passes in one second of thread CPU time, so other load on the machine skews it least).
// Build and run from the repository root:
//     clang -O3 -ffp-contract=fast -ISources/CGriditKernels/include -ISources/CGriditKernels \
//         Sources/CGriditKernels/attention.c tools/bench/attention_bench.c -lm -o /tmp/gridit-attention \
//         && /tmp/gridit-attention
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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

int main(void) {
    // N, T, D, NH: stage 1 and stage 2 of models/moving-digits, DiT-XL/2 and DiT-S/2 at input 32,
    // then longer sequences (several softmax chunks).
    static const size_t shapes[][4] = {{1, 256, 128, 4},  {16, 64, 192, 3}, {1, 256, 1152, 16}, {1, 256, 384, 6},
                                       {1, 1024, 256, 8}, {1, 2048, 64, 1}, {1, 4096, 32, 1}};
    uint32_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t N = shapes[s][0], T = shapes[s][1], D = shapes[s][2], NH = shapes[s][3];
        float *qkv = malloc(N * T * 3 * D * sizeof *qkv), *out = malloc(N * T * D * sizeof *out);
        float *scratch = malloc(gk_attention_scratch_floats(N, T, D, NH, 1) * sizeof *scratch);
        for (size_t i = 0; i < N * T * 3 * D; i++) qkv[i] = next_value(&seed, 4);
        gk_attention(qkv, qkv + D, qkv + 2 * D, 3 * D, N, T, D, NH, out, D, scratch, 1);
        double err = T <= 1024 ? max_error(qkv, out, N, T, D, NH) : NAN, best = INFINITY;
        for (double start = cpu_seconds(); cpu_seconds() - start < 1.0;) {
            double t = cpu_seconds();
            gk_attention(qkv, qkv + D, qkv + 2 * D, 3 * D, N, T, D, NH, out, D, scratch, 1);
            t = cpu_seconds() - t;
            best = t < best ? t : best;
        }
        double gflops = 4.0 * N * T * T * D / best * 1e-9;
        printf("N=%2zu T=%4zu HD=%2zu NH=%2zu: %9.1f us %6.1f GFLOP/s  max |diff| %.2g\n", N, T, D / NH, NH,
               best * 1e6, gflops, err);
        free(qkv);
        free(out);
        free(scratch);
    }
    return 0;
}
