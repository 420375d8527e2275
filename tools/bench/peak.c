// Peak arithmetic rate of one core: 24 independent chains of 512-bit FMAs (fp32) and VDPBF16PS
// (bf16 pairs, fp32 accumulation), counted in thread CPU time so other load on the machine does not
// skew it. Build and run (needs AVX-512 F and BF16):
//     clang -O2 -mavx512f -mavx512bf16 tools/bench/peak.c -o /tmp/gridit-peak && /tmp/gridit-peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    enum { CHAINS = 24 };
    const long iters = 20000000;
    __m512 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(i * 1e-9f);
    const __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
    const __m512bh ab = (__m512bh)_mm512_set1_epi32(0x3f803f80);
    for (int round = 0; round < 3; round++) {
        double t0 = cpu_seconds();
        for (long i = 0; i < iters; i++)
            for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_fmadd_ps(a, acc[j], b);
        double t = cpu_seconds() - t0;
        printf("fp32 FMA (zmm):   %6.1f GFLOP/s per core\n", iters * CHAINS * 32.0 / t / 1e9);
        t0 = cpu_seconds();
        for (long i = 0; i < iters; i++)
            for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_dpbf16_ps(acc[j], ab, ab);
        t = cpu_seconds() - t0;
        printf("bf16 VDPBF16PS:   %6.1f GFLOP/s per core\n", iters * CHAINS * 64.0 / t / 1e9);
    }
    float s = 0;
    for (int i = 0; i < CHAINS; i++) s += _mm512_reduce_add_ps(acc[i]);
    return s == 12345.0f;  // keeps the chains live
}
