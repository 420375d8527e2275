// A small persistent thread pool for the fixed schedules of the kernels.
//
// A pool runs one job at a time: `gk_parallel_for` hands tasks 0..<n to up to `workers` threads (the
// caller is worker 0) through an atomic counter, and returns when every task is done. Which worker
// runs a task is not fixed, so tasks must write disjoint outputs and compute the same bits whoever
// runs them; `worker` only indexes per-thread scratch. Waiting threads (workers between jobs, the
// caller for the last helpers) spin briefly with PAUSE (a forward pass issues jobs microseconds
// apart), then yield the CPU for a while (on a machine with more runnable threads than cores, the
// thread being waited for may need this core), then sleep on a futex.
//
// There are two such pools, so that two threads can each run their own jobs at once (the engine
// runs stage 1 and stage 2 side by side, each on its share of the threads). A call made while both
// are busy, or from inside a task, runs its tasks serially on the calling thread: same results, no
// deadlock.
#include "gridit_kernels.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define GK_PAUSE() _mm_pause()
#else
#define GK_PAUSE() ((void)0)
#endif

#define GK_MAX_WORKERS 64
#define GK_WORKERS_MASK 0xffu   // the worker count's bits in `generation` (GK_MAX_WORKERS fits)
#define GK_SPIN_PAUSE 300   // ~15-20 us of PAUSE
#define GK_SPIN_YIELD 100   // then ~100 us of sched_yield


static void futex_wait(atomic_uint *addr, unsigned expected) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *addr) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

// One step of a wait loop: PAUSE, then sched_yield; returns 0 once the spinning budget is spent.
static int spin(int *spins) {
    int n = ++*spins;
    if (n < GK_SPIN_PAUSE) {
        GK_PAUSE();
        return 1;
    }
    if (n < GK_SPIN_PAUSE + GK_SPIN_YIELD) {
        sched_yield();
        return 1;
    }
    return 0;
}

#define GK_POOLS 2

typedef struct {
    pthread_mutex_t run_lock;      // held by the caller of the job in flight
    pthread_mutex_t spawn_lock;
    int spawned;                   // pool threads 1..spawned exist
    // Bumped to start a job (futex word of the workers): the job's number above the low 8 bits,
    // its worker count in them. One word, so that a worker reads the count of the job it saw
    // start: read apart, a thread the last job left out could take the next job's count while
    // its caller still writes it, run its tasks early and count itself done twice.
    atomic_uint generation;
    atomic_uint pending;           // helpers of the current job not yet finished (futex word of the caller)
    atomic_int sleepers;           // workers in (or entering) futex_wait on `generation`
    atomic_int caller_sleeping;    // the caller is in (or entering) futex_wait on `pending`
    // The current job, written before `generation` is bumped.
    gk_task_fn fn;
    void *ctx;
    size_t tasks;
    atomic_size_t next;
    // Generation each pool thread starts from: read by the spawner before the job that needs the
    // thread is published, so a thread that starts late still sees that job.
    unsigned start_generation[GK_MAX_WORKERS];
} gk_pool;

static gk_pool pools[GK_POOLS] = {
    {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER},
    {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER},
};

static _Thread_local int in_task;

static void run_tasks(gk_pool *pool, int worker) {
    in_task = 1;
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed);
        if (t >= pool->tasks) break;
        pool->fn(pool->ctx, t, worker);
    }
    in_task = 0;
}

// A pool thread's argument: its pool and its worker index, packed in one integer.
static void *worker_main(void *arg) {
    gk_pool *pool = &pools[(intptr_t)arg / GK_MAX_WORKERS];
    int worker = (int)((intptr_t)arg % GK_MAX_WORKERS);
    unsigned seen = pool->start_generation[worker];
    int needed = 1;  // by the last job: a thread its jobs leave out goes back to sleep without spinning
    for (;;) {
        unsigned g;
        int spins = needed ? 0 : GK_SPIN_PAUSE + GK_SPIN_YIELD;
        while ((g = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (!spin(&spins)) {
                // seq_cst pairs with the caller's bump-then-check: it sees a sleeper or we see the bump.
                atomic_fetch_add(&pool->sleepers, 1);
                if (atomic_load(&pool->generation) == seen) futex_wait(&pool->generation, seen);
                atomic_fetch_sub(&pool->sleepers, 1);
            }
        }
        seen = g;
        needed = worker < (int)(g & GK_WORKERS_MASK);
        if (!needed) continue;
        run_tasks(pool, worker);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_sleeping))
            futex_wake(&pool->pending);
    }
    return NULL;
}

static int ensure_threads(gk_pool *pool, int workers) {
    if (pool->spawned >= workers - 1) return workers;
    pthread_mutex_lock(&pool->spawn_lock);
    while (pool->spawned < workers - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        int worker = pool->spawned + 1;
        pool->start_generation[worker] = atomic_load(&pool->generation);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        intptr_t arg = (intptr_t)(pool - pools) * GK_MAX_WORKERS + worker;
        int rc = pthread_create(&thread, &attr, worker_main, (void *)arg);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;  // fewer threads than asked: the job still completes
        pool->spawned++;
    }
    int available = pool->spawned + 1;
    pthread_mutex_unlock(&pool->spawn_lock);
    return workers < available ? workers : available;
}

// The first idle pool, now held by the caller; NULL when all are busy.
static gk_pool *acquire_pool(void) {
    for (int i = 0; i < GK_POOLS; i++)
        if (pthread_mutex_trylock(&pools[i].run_lock) == 0) return &pools[i];
    return NULL;
}

void gk_parallel_for(size_t tasks, int workers, gk_task_fn fn, void *ctx) {
    if (workers > GK_MAX_WORKERS) workers = GK_MAX_WORKERS;
    if ((size_t)workers > tasks) workers = (int)tasks;
    gk_pool *pool = workers <= 1 || in_task ? NULL : acquire_pool();
    if (pool == NULL) {
        int nested = in_task;
        in_task = 1;
        for (size_t t = 0; t < tasks; t++) fn(ctx, t, 0);
        in_task = nested;
        return;
    }
    workers = ensure_threads(pool, workers);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->tasks = tasks;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->pending, (unsigned)(workers - 1), memory_order_relaxed);
    // Only the caller (holding run_lock) writes it: the next job number and this job's count.
    unsigned previous = atomic_load_explicit(&pool->generation, memory_order_relaxed);
    atomic_store(&pool->generation, (previous & ~GK_WORKERS_MASK) + (GK_WORKERS_MASK + 1) + (unsigned)workers);
    if (atomic_load(&pool->sleepers) > 0) futex_wake(&pool->generation);
    run_tasks(pool, 0);
    unsigned left;
    int spins = 0;
    while ((left = atomic_load(&pool->pending)) != 0) {
        if (!spin(&spins)) {
            atomic_store(&pool->caller_sleeping, 1);
            if ((left = atomic_load(&pool->pending)) != 0) futex_wait(&pool->pending, left);
            atomic_store(&pool->caller_sleeping, 0);
        }
    }
    pthread_mutex_unlock(&pool->run_lock);
}
