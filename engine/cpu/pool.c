/* Fork-join thread pool: n_threads - 1 workers plus the calling thread, running the n_threads shares
 * (ith = 0 .. nth-1) of one function per bw_pool_run.
 *
 * Shares are claimed, not assigned: `claim` holds (run number << 32 | next unclaimed share), and the
 * caller and the workers take shares from it with a compare-and-swap until none is left. So when a
 * worker is late (parked, or descheduled on a machine shared with other processes) the caller runs
 * its share instead of waiting for it; the run ends when `done` counts every share. The run number in
 * `claim` keeps a worker that wakes up late from taking a share of a run that is already over.
 * Workers learn of a new run from `gen` (its own cache line, read-mostly); one that has seen no new
 * run for BW_POOL_SPIN_NS parks on a condition variable, and the caller only touches the mutex when
 * `sleepers` says someone is parked, so back-to-back runs (a decode step) cost a few atomics. */
#include "engine/cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
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
    pthread_t thread;
};

struct bw_pool {
    /* Written by the caller once per run, read by every worker: one line, apart from the counters that
     * every thread writes, so that claiming and finishing do not evict the line the others poll. */
    _Alignas(BW_CACHELINE) atomic_uint gen;
    bw_pool_fn fn;
    void *ctx;
    atomic_int stop;
    uint32_t run; /* caller only */

    _Alignas(BW_CACHELINE) _Atomic uint64_t claim;
    _Alignas(BW_CACHELINE) atomic_int done;

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

/* Runs shares of the current run until none is left unclaimed. */
static void bw_pool_work(bw_pool *p)
{
    uint64_t v = atomic_load_explicit(&p->claim, memory_order_acquire);
    while ((uint32_t)v < (uint32_t)p->n_threads) {
        /* Acquire on success: fn and ctx were written before the caller published this run. */
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &v, v + 1, memory_order_acquire, memory_order_acquire))
            continue;
        p->fn(p->ctx, (int)(uint32_t)v, p->n_threads);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        v = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void *bw_pool_worker_main(void *arg)
{
    struct bw_worker *w = arg;
    bw_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        seen = bw_pool_wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
        bw_pool_work(p);
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
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    p->run = 0;
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

int bw_pool_threads(const bw_pool *p) { return p->n_threads; }

void bw_pool_run(bw_pool *p, bw_pool_fn fn, void *ctx)
{
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    p->run++;
    /* Release: fn, ctx and the reset `done` are visible to whoever claims a share of this run. The
     * previous run is over (every share done), so no thread still reads the old fn. */
    atomic_store_explicit(&p->claim, (uint64_t)p->run << 32, memory_order_release);
    bw_pool_kick(p);
    bw_pool_work(p);
    for (unsigned spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) != p->n_threads; spins++) {
        if (spins < BW_POOL_TIGHT_SPINS) bw_cpu_relax();
        else sched_yield();
    }
}
