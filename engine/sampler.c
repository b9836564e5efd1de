/* Sampling pipeline, in this order: repetition penalty → greedy (temperature 0) or
 * top-k → softmax at the temperature → min-p → top-p → one uniform draw.
 *
 * The draw for token index i of a job is splitmix64(seed, i): a resumed job at index i draws what the
 * uninterrupted job drew, whatever happened before. Candidates are kept as (id, logit/prob) pairs; only
 * those that can still be sampled are sorted. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tokens this far below the best one (probability ratio e^-20 ≈ 2e-9) can never be drawn from a
 * double-precision uniform in any meaningful way; dropping them before sorting keeps a flat
 * distribution over 50k tokens cheap. */
#define BW_SAMPLER_LOGIT_WINDOW 20.0f

typedef struct {
    int32_t id;
    float v;
} bw_cand;

struct bw_sampler {
    int32_t n_vocab;
    bw_cand *cand;
};

void bw_sampler_defaults(bw_sampler_params *p)
{
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

bw_sampler *bw_sampler_create(int32_t n_vocab)
{
    bw_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    if (!s->cand) {
        free(s);
        return NULL;
    }
    return s;
}

void bw_sampler_free(bw_sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s);
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

double bw_sampler_uniform(uint64_t seed, uint64_t index)
{
    uint64_t r = splitmix64(splitmix64(seed) ^ splitmix64(index + 0x632be59bd9b4e019ull));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0); /* 53 random bits */
}

static void apply_repetition_penalty(const bw_sampler_params *p, float *logits, int32_t n_vocab,
                                     const int32_t *history, size_t n_history)
{
    if (p->repetition_penalty == 1.0f || n_history == 0 || p->repeat_last_n == 0) return;
    size_t n = n_history;
    if (p->repeat_last_n > 0 && (size_t)p->repeat_last_n < n) n = (size_t)p->repeat_last_n;
    const int32_t *h = history + (n_history - n);
    /* A token repeated in the window is penalised once, as in llama.cpp (the window is small: 64). */
    for (size_t i = 0; i < n; i++) {
        int32_t id = h[i];
        if (id < 0 || id >= n_vocab) continue;
        int dup = 0;
        for (size_t j = 0; j < i; j++) {
            if (h[j] == id) {
                dup = 1;
                break;
            }
        }
        if (dup) continue;
        float *l = &logits[id];
        *l = *l > 0 ? *l / p->repetition_penalty : *l * p->repetition_penalty;
    }
}

static int32_t argmax(const float *logits, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int cand_desc(const void *a, const void *b)
{
    const bw_cand *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->id < y->id ? -1 : (x->id > y->id); /* ties by id: the order is deterministic */
}

int32_t bw_sample(bw_sampler *s, const bw_sampler_params *p, float *logits, const int32_t *history,
                  size_t n_history, uint64_t index)
{
    const int32_t nv = s->n_vocab;
    apply_repetition_penalty(p, logits, nv, history, n_history);
    if (p->temperature <= 0.0f || p->top_k == 1) return argmax(logits, nv);

    float maxl = logits[argmax(logits, nv)];
    int32_t n = 0;
    for (int32_t i = 0; i < nv; i++) {
        if (logits[i] >= maxl - BW_SAMPLER_LOGIT_WINDOW * p->temperature) s->cand[n++] = (bw_cand){i, logits[i]};
    }
    qsort(s->cand, (size_t)n, sizeof *s->cand, cand_desc);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;

    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        s->cand[i].v = expf((s->cand[i].v - maxl) / p->temperature);
        sum += s->cand[i].v;
    }
    if (p->min_p > 0.0f) {
        /* cand[0] is the most likely token: min-p keeps those at least min_p times as likely. */
        float floor_p = s->cand[0].v * p->min_p;
        int32_t keep = 1;
        while (keep < n && s->cand[keep].v >= floor_p) keep++;
        for (int32_t i = keep; i < n; i++) sum -= s->cand[i].v;
        n = keep;
    }
    if (p->top_p < 1.0f) {
        double acc = 0.0, target = p->top_p * sum;
        int32_t keep = 0;
        while (keep < n) {
            acc += s->cand[keep].v;
            keep++;
            if (acc >= target) break;
        }
        n = keep;
        sum = acc;
    }
    double r = bw_sampler_uniform(p->seed, index) * sum;
    double acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->cand[i].v;
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
