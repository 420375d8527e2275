// What the one-thread kernel benchmarks (attention_bench.c, gemm_bench.c) share: the pool replaced
// by a loop on the calling thread, thread CPU time, and reproducible test values.
#include <stdint.h>
#include <time.h>

#include "gridit_kernels.h"

// The kernel's work items run here in order on this thread, each with its worker's scratch.
void gk_parallel_for(size_t tasks, int workers, gk_task_fn fn, void *ctx) {
    for (size_t i = 0; i < tasks; i++) fn(ctx, i, (int)(i % (size_t)workers));
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Uniform in [-scale / 2, scale / 2).
static float next_value(uint32_t *s, float scale) {
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f - 0.5f) * scale;
}
