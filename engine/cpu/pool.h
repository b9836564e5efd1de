/* A fixed thread pool for data-parallel loops (the caller's thread works too).
 *
 * Owns: its worker threads. bw_pool_run() is a fork-join barrier: it returns when every task is done.
 * Workers spin briefly between runs and then sleep, so a decode step (hundreds of runs) pays no
 * wake-up latency while an idle engine burns no CPU. Not re-entrant: one bw_pool_run at a time. */
#ifndef BW_ENGINE_CPU_POOL_H
#define BW_ENGINE_CPU_POOL_H

typedef struct bw_pool bw_pool;

/* fn is called as fn(ctx, ith, nth) once for each ith in [0, nth) where nth = thread count. */
typedef void (*bw_pool_fn)(void *ctx, int ith, int nth);

bw_pool *bw_pool_create(int n_threads); /* n_threads >= 1; NULL on failure */
void bw_pool_destroy(bw_pool *p);
int bw_pool_threads(const bw_pool *p);
void bw_pool_run(bw_pool *p, bw_pool_fn fn, void *ctx);

#endif
