/* Fork-join thread pool: n_threads - 1 workers plus the calling thread, all running one function per
 * bw_pool_run.
 *
 * Layout: the caller publishes (fn, ctx) and bumps `gen` (a generation counter on its own cache line);
 * workers that see a new generation run their share and decrement `pending` (another cache line); the
 * caller runs share 0 and waits for `pending` to reach zero. A worker that has seen no new generation
 * for BW_POOL_SPIN_NS parks on a condition variable; the caller only touches the mutex when `sleepers`
 * says someone is parked, so back-to-back runs (a decode step) cost two atomic writes and a spin. */
#include "engine/cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define bw_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define bw_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define bw_cpu_relax() ((void)0)
#endif

/* Long enough to bridge the serial work between two products of a forward pass (norms, attention on a
 * short context, sampling), short enough that an idle engine is asleep within a millisecond. */
#define BW_POOL_SPIN_NS 1000000LL
#define BW_CACHELINE 64

struct bw_worker {
    bw_pool *pool;
    int ith;
    pthread_t thread;
};

struct bw_pool {
    /* Written by the caller once per run, read by every worker: one line, apart from `pending`, which
     * the workers write, so that finishing workers do not evict the line the others are polling. */
    _Alignas(BW_CACHELINE) atomic_uint gen;
    bw_pool_fn fn;
    void *ctx;
    atomic_int stop;

    _Alignas(BW_CACHELINE) atomic_int pending;

    _Alignas(BW_CACHELINE) atomic_int sleepers;
    pthread_mutex_t mu;
    pthread_cond_t cv;

    int n_threads;
    struct bw_worker *workers;
};

static long long bw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Pauses in a tight poll before falling back to sched_yield: on a machine with more runnable threads
 * than cores (a shared host, or a pool wider than the CPU) a pure spin would hold the core that the
 * thread being waited for needs. */
#define BW_POOL_TIGHT_SPINS 1024u /* ~25 us: pause is ~25 ns on recent AMD cores */

/* Returns the first generation different from `seen`, spinning first and parking after. */
static unsigned bw_pool_wait_gen(bw_pool *p, unsigned seen)
{
    unsigned g;
    long long deadline = 0;
    for (unsigned spins = 0;; spins++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        if (spins < BW_POOL_TIGHT_SPINS) {
            bw_cpu_relax();
            continue;
        }
        sched_yield();
        /* Reading the clock only in the slow phase keeps it off the wake-up latency. */
        long long now = bw_now_ns();
        if (deadline == 0) deadline = now + BW_POOL_SPIN_NS;
        else if (now > deadline) break;
    }
    pthread_mutex_lock(&p->mu);
    /* seq_cst increment then load pairs with the caller's seq_cst store of gen then load of sleepers:
     * either we see the new generation here or the caller sees us and broadcasts under the mutex. */
    atomic_fetch_add(&p->sleepers, 1);
    while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *bw_pool_worker_main(void *arg)
{
    struct bw_worker *w = arg;
    bw_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        seen = bw_pool_wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
        p->fn(p->ctx, w->ith, p->n_threads);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

/* Publishes a new generation and wakes parked workers if there are any. */
static void bw_pool_kick(bw_pool *p)
{
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

bw_pool *bw_pool_create(int n_threads)
{
    if (n_threads < 1) return NULL;
    bw_pool *p = aligned_alloc(BW_CACHELINE, (sizeof(*p) + BW_CACHELINE - 1) / BW_CACHELINE * BW_CACHELINE);
    if (!p) return NULL;
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    p->fn = NULL;
    p->ctx = NULL;
    p->n_threads = n_threads;
    p->workers = NULL;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads, sizeof(*p->workers));
        if (!p->workers) {
            bw_pool_destroy(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i;
            if (pthread_create(&p->workers[i].thread, NULL, bw_pool_worker_main, &p->workers[i]) != 0) {
                /* Join the ones already started; they only know the threads they were told about. */
                p->n_threads = i;
                bw_pool_destroy(p);
                return NULL;
            }
        }
    }
    return p;
}

void bw_pool_destroy(bw_pool *p)
{
    if (!p) return;
    if (p->workers) {
        atomic_store(&p->stop, 1);
        bw_pool_kick(p);
        for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i].thread, NULL);
        free(p->workers);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int bw_pool_threads(const bw_pool *p)
{
    return p->n_threads;
}

void bw_pool_run(bw_pool *p, bw_pool_fn fn, void *ctx)
{
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    bw_pool_kick(p); /* seq_cst: also orders fn/ctx/pending before workers can see the generation */
    fn(ctx, 0, p->n_threads);
    for (unsigned spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; spins++) {
        if (spins < BW_POOL_TIGHT_SPINS) bw_cpu_relax();
        else sched_yield();
    }
}
