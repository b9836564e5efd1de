/* Sampling pipeline, in this order: repetition penalty → greedy (temperature 0) or
 * top-k → softmax at the temperature → min-p → top-p → one uniform draw.
 *
 * The draw for token index i of a job is splitmix64(seed, i): a resumed job at index i draws what the
 * uninterrupted job drew, whatever happened before. Candidates are kept as (id, logit/prob) pairs; only
 * those that can still be sampled are sorted. The arithmetic (penalty, window, order, exp, the choice)
 * is engine/sample_core.h, which the device sampler (engine/cuda/sample.cu) runs too. */
#include "engine/sampler.h"

#include <stdlib.h>
#include <string.h>

#include "engine/sample_core.h"
#include "proto/bw_proto.h" /* BW_PROTO_REPEAT_LAST_N */

typedef struct {
    int32_t id;
    float v;
} bw_cand;

struct bw_sampler {
    int32_t n_vocab;
    bw_cand *cand;
    int32_t *ids; /* the sorted candidates, split for bw_sc_pick */
    float *vals;
};

void bw_sampler_defaults(bw_sampler_params *p)
{
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->repeat_last_n = BW_PROTO_REPEAT_LAST_N;
    p->seed = 0;
}

bw_sampler *bw_sampler_create(int32_t n_vocab)
{
    bw_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->ids = malloc((size_t)n_vocab * sizeof *s->ids);
    s->vals = malloc((size_t)n_vocab * sizeof *s->vals);
    if (!s->cand || !s->ids || !s->vals) {
        bw_sampler_free(s);
        return NULL;
    }
    return s;
}

void bw_sampler_free(bw_sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s->ids);
    free(s->vals);
    free(s);
}

double bw_sampler_uniform(uint64_t seed, uint64_t index) { return bw_sc_uniform(seed, index); }

static void apply_repetition_penalty(const bw_sampler_params *p, float *logits, int32_t n_vocab, const int32_t *history,
                                     size_t n_history)
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
        logits[id] = bw_sc_penalize(logits[id], p->repetition_penalty);
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
    if (x->id == y->id) return 0;
    return bw_sc_before(x->v, x->id, y->v, y->id) ? -1 : 1;
}

int32_t bw_sample(bw_sampler *s, const bw_sampler_params *p, float *logits, const int32_t *history, size_t n_history,
                  uint64_t index)
{
    const int32_t nv = s->n_vocab;
    apply_repetition_penalty(p, logits, nv, history, n_history);
    if (p->temperature <= 0.0f || p->top_k == 1) return argmax(logits, nv);

    const float maxl = logits[argmax(logits, nv)], floor_l = bw_sc_threshold(maxl, p->temperature);
    int32_t n = 0;
    for (int32_t i = 0; i < nv; i++)
        if (logits[i] >= floor_l) s->cand[n++] = (bw_cand){i, logits[i]};
    if (n == 0) return argmax(logits, nv); /* only NaN logits: nothing can be drawn */
    qsort(s->cand, (size_t)n, sizeof *s->cand, cand_desc);
    for (int32_t i = 0; i < n; i++) s->ids[i] = s->cand[i].id, s->vals[i] = s->cand[i].v;
    const bw_sc_params sp = {p->temperature, p->top_p, p->top_k, p->min_p};
    return bw_sc_pick(s->ids, s->vals, n, maxl, &sp, bw_sc_uniform(p->seed, index));
}
