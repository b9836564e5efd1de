/* Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty.
 *
 * Owns: the order of the sampling steps and the random stream. The random number used for the token at
 * index i of a job is a pure function of (seed, i), so a job resumed at index i draws exactly what it
 * would have drawn. Stop strings, EOS and max_tokens are decided by the caller (engine/generate.h). */
#ifndef BW_ENGINE_SAMPLER_H
#define BW_ENGINE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float temperature;        /* 0 = greedy */
    float top_p;              /* 1 = off */
    int32_t top_k;            /* 0 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    int32_t repeat_last_n;    /* how many recent tokens the penalty looks at (default BW_PROTO_REPEAT_LAST_N) */
    uint64_t seed;
} bw_sampler_params;

void bw_sampler_defaults(bw_sampler_params *p);

/* Scratch for one sampler call, sized for the vocabulary. */
typedef struct bw_sampler bw_sampler;
bw_sampler *bw_sampler_create(int32_t n_vocab);
void bw_sampler_free(bw_sampler *s);

/* Picks the token at index `index` of the job. logits (n_vocab) may be modified. history holds the
 * prompt and generated tokens so far (for the repetition penalty). */
int32_t bw_sample(bw_sampler *s, const bw_sampler_params *p, float *logits, const int32_t *history, size_t n_history,
                  uint64_t index);

/* The uniform [0,1) draw for (seed, index); exposed for tests. */
double bw_sampler_uniform(uint64_t seed, uint64_t index);

#endif
