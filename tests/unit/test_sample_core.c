/* The device sampler's algorithm (engine/cuda/sample.cu) run on the CPU against the CPU sampler
 * (bw_sample), on thousands of random logit rows and parameter sets: the same token every time.
 * The emulation uses the very functions of engine/sample_core.h the kernel calls, in the kernel's
 * structure: the history window deduplicated, the argmax as partial results of 512 threads merged in a
 * tree, the candidates gathered in a scrambled order (as atomics would), padded to a power of two and
 * sorted by the bitonic network, top-k, probabilities, the sequential choice, and the host fallback
 * for rows with more than 4096 candidates. So a GPU that runs the kernel faithfully chooses what the
 * CPU chooses; tests/gpu/test_cuda_kernels.cu checks that on the device.
 * Also: the shared exp against libm's within 1 ulp, and the bitonic network against qsort.
 * The seed is printed; BW_TEST_SEED=N repeats a run. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sample_core.h"
#include "engine/sampler.h"

#define CAP 4096
#define HIST 256
#define THREADS 512

static int fails, checks;
static uint64_t rng;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond) && fails++ < 20) {                                                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777216.0f; }
static float gauss(void)
{
    float u = frand(1e-7f, 1.0f), v = frand(0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* The kernel's steps, sequentially. Returns the id, and *fallback = 1 when the row went to the host. */
static int32_t device_emulation(bw_sampler *s, const bw_sampler_params *p, float *l, int32_t nv, const int32_t *history,
                                size_t n_history, uint64_t index, int *fallback)
{
    static int32_t cid[CAP], hist[HIST];
    static float cv[CAP];
    *fallback = 0;
    /* the caller's window copy */
    size_t n = n_history;
    if (p->repeat_last_n == 0) n = 0;
    else if (p->repeat_last_n > 0 && (size_t)p->repeat_last_n < n) n = (size_t)p->repeat_last_n;
    if (n > HIST) n = HIST;
    memcpy(hist, history + (n_history - n), n * sizeof *hist);
    if (p->repetition_penalty != 1.0f)
        for (size_t i = 0; i < n; i++) {
            const int32_t id = hist[i];
            if (id < 0 || id >= nv) continue;
            int dup = 0;
            for (size_t j = 0; j < i && !dup; j++) dup = hist[j] == id;
            if (!dup) l[id] = bw_sc_penalize(l[id], p->repetition_penalty);
        }
    /* argmax: per-thread partials, merged pairwise in a butterfly-like tree */
    float bv[THREADS];
    int32_t bi[THREADS];
    for (int t = 0; t < THREADS; t++) {
        bv[t] = -INFINITY, bi[t] = INT32_MAX;
        for (int32_t i = t; i < nv; i += THREADS) bw_sc_argmax_merge(&bv[t], &bi[t], l[i], i);
    }
    for (int o = THREADS / 2; o > 0; o >>= 1)
        for (int t = 0; t < o; t++) bw_sc_argmax_merge(&bv[t], &bi[t], bv[t + o], bi[t + o]);
    const float maxl = bv[0];
    if (p->temperature <= 0.0f || p->top_k == 1) return bi[0];
    /* candidates in a scrambled order */
    const float thr = bw_sc_threshold(maxl, p->temperature);
    int32_t k = 0;
    /* a prime step that does not divide nv visits every id once (nv may be 7919 or 15838) */
    const int32_t start = (int32_t)(rnd() % (uint32_t)nv), step = nv % 7919 ? 7919 : 7907;
    for (int32_t c = 0; c < nv; c++) {
        const int32_t i = (int32_t)(((int64_t)start + (int64_t)c * step) % nv);
        if (l[i] >= thr) {
            if (k < CAP) cid[k] = i, cv[k] = l[i];
            k++;
        }
    }
    if (k > CAP) { /* the host samples the penalised row, with no history */
        *fallback = 1;
        return bw_sample(s, p, l, NULL, 0, index);
    }
    int32_t P = 1;
    while (P < k) P <<= 1;
    for (int32_t i = k; i < P; i++) cid[i] = INT32_MAX, cv[i] = -INFINITY;
    for (int32_t kk = 2; kk <= P; kk <<= 1)
        for (int32_t j = kk >> 1; j > 0; j >>= 1)
            for (int32_t i = 0; i < P; i++) bw_sc_bitonic_step(cid, cv, i, j, kk);
    const bw_sc_params sp = {p->temperature, p->top_p, p->top_k, p->min_p};
    const int32_t m = bw_sc_top_k(k, &sp);
    for (int32_t i = 0; i < m; i++) cv[i] = bw_sc_prob(cv[i], maxl, p->temperature);
    return bw_sc_choose(cid, cv, m, &sp, bw_sc_uniform(p->seed, index));
}

static void test_device_algorithm_matches_cpu_sampler(void)
{
    const int32_t nv_max = 49152;
    bw_sampler *s = bw_sampler_create(nv_max);
    float *base = malloc(nv_max * sizeof *base), *a = malloc(nv_max * sizeof *a), *b = malloc(nv_max * sizeof *b);
    int32_t history[300];
    int same = 0, fallbacks = 0, greedy = 0, cases = 3000;
    for (int c = 0; c < cases; c++) {
        const int32_t nv = c % 5 == 0 ? nv_max : 50 + (int32_t)(rnd() % 20000);
        const float scale = rnd() % 4 ? frand(2.0f, 10.0f) : frand(0.2f, 2.0f);
        const int ties = rnd() % 4 == 0;
        for (int32_t i = 0; i < nv; i++) {
            float v = gauss() * scale;
            if (ties) v = roundf(v * 4.0f) / 4.0f; /* many equal logits: the id order decides */
            base[i] = v;
        }
        bw_sampler_params p;
        bw_sampler_defaults(&p);
        static const float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.0f, 1.5f, 3.0f};
        static const int32_t ks[] = {0, 0, 1, 5, 40, 1000, 5000};
        static const float tps[] = {1.0f, 1.0f, 0.95f, 0.5f, 0.1f};
        static const float mps[] = {0.0f, 0.0f, 0.05f, 0.3f};
        static const float pens[] = {1.0f, 1.0f, 1.1f, 1.5f, 0.8f};
        static const int32_t rls[] = {64, 64, 0, 16, -1, 300};
        p.temperature = temps[rnd() % 7];
        p.top_k = ks[rnd() % 7];
        p.top_p = tps[rnd() % 5];
        p.min_p = mps[rnd() % 4];
        p.repetition_penalty = pens[rnd() % 5];
        p.repeat_last_n = rls[rnd() % 6];
        p.seed = ((uint64_t)rnd() << 32) | rnd();
        const size_t nh = rnd() % 300;
        for (size_t i = 0; i < nh; i++) history[i] = (int32_t)(rnd() % (uint32_t)(i % 3 ? nv : 64)) - (i == 7);
        if (p.repeat_last_n < 0 || p.repeat_last_n > HIST) p.repeat_last_n = HIST; /* the device's window limit */
        const uint64_t index = rnd() % 1000;
        memcpy(a, base, (size_t)nv * sizeof *a);
        memcpy(b, base, (size_t)nv * sizeof *b);
        bw_sampler *sv = bw_sampler_create(nv);
        const int32_t want = bw_sample(sv, &p, a, history, nh, index);
        int fb;
        const int32_t got = device_emulation(sv, &p, b, nv, history, nh, index, &fb);
        bw_sampler_free(sv);
        fallbacks += fb;
        greedy += p.temperature <= 0.0f || p.top_k == 1;
        if (got == want) same++;
        else
            CHECK(0, "case %d (nv %d, T %g, k %d, p %g, min_p %g, pen %g/%d): device algorithm %d, CPU sampler %d", c,
                  nv, p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty, p.repeat_last_n, got, want);
    }
    const int sampled = cases - greedy - fallbacks;
    CHECK(fallbacks >= 50 && sampled >= 500, "%d host fallbacks, %d sampled on the device path: the cases miss one",
          fallbacks, sampled);
    printf("device algorithm vs bw_sample: %d of %d the same (%d greedy, %d host fallbacks)\n", same, cases, greedy,
           fallbacks);
    free(base), free(a), free(b);
    bw_sampler_free(s);
}

static void test_exp_and_sort(void)
{
    int far = 0;
    for (int i = 0; i < 2000000; i++) {
        const float x = -frand(0.0f, 87.0f);
        const float e = bw_sc_expf(x), ref = (float)exp((double)x);
        if (fabsf(e - ref) > ldexpf(1.0f, ilogbf(ref) - 23)) far++;
    }
    CHECK(far == 0, "bw_sc_expf more than 1 ulp from exp in %d cases", far);
    CHECK(bw_sc_expf(0.0f) == 1.0f && bw_sc_expf(-100.0f) == 0.0f, "exp(0) or exp(-100) wrong");
    /* the bitonic network gives qsort's order */
    int bad = 0;
    for (int rep = 0; rep < 200; rep++) {
        int32_t n = 1 + (int32_t)(rnd() % 3000), P = 1, id[4096];
        float v[4096];
        while (P < n) P <<= 1;
        for (int32_t i = 0; i < n; i++) id[i] = (int32_t)(rnd() % 100000), v[i] = roundf(gauss() * 8.0f) / 8.0f;
        for (int32_t i = 0; i < n; i++) /* distinct ids */
            id[i] = id[i] * 4096 + i;
        for (int32_t i = n; i < P; i++) id[i] = INT32_MAX, v[i] = -INFINITY;
        for (int32_t k = 2; k <= P; k <<= 1)
            for (int32_t j = k >> 1; j > 0; j >>= 1)
                for (int32_t i = 0; i < P; i++) bw_sc_bitonic_step(id, v, i, j, k);
        for (int32_t i = 1; i < n; i++)
            if (!bw_sc_before(v[i - 1], id[i - 1], v[i], id[i])) bad++;
    }
    CHECK(bad == 0, "bitonic network left %d pairs out of order", bad);
    printf("exp within 1 ulp of exp(double) on [-87, 0]; bitonic network sorts\n");
}

int main(void)
{
    const char *seed = getenv("BW_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
    if (!rng) rng = 1;
    printf("seed %llu\n", (unsigned long long)rng);
    test_exp_and_sort();
    test_device_algorithm_matches_cpu_sampler();
    printf("%d checks, %d failed\n", checks, fails);
    return fails ? 1 : 0;
}
