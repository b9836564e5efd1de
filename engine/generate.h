/* One generation job from the sampler's point of view: the token history, the stop rules and the text
 * that may be released to the client.
 *
 * Owns: the decision to stop (EOS/end-of-generation tokens, stop strings, max_tokens) and the text
 * deltas. A delta never ends inside a UTF-8 sequence, and text that could be the start of a stop string
 * is held back until it is known not to be one (a matched stop string is never emitted). The backend
 * call and the scheduling of slots live elsewhere (the CLI and engine/scheduler). */
#ifndef BW_ENGINE_GENERATE_H
#define BW_ENGINE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "proto/bw_proto.h" /* enum bw_stop_reason, the stop-string limits */

typedef struct {
    bw_sampler_params sampling;
    int32_t max_tokens;
    int n_stop;
    char stop[BW_PROTO_MAX_STOP][BW_PROTO_MAX_STOP_LEN + 1];
} bw_gen_params;

void bw_gen_params_defaults(bw_gen_params *p);

typedef struct bw_gen bw_gen;

/* A job over prompt tokens (copied). `first_index` > 0 resumes a job: `prompt` then ends with the
 * tokens already generated and the next token drawn has index first_index. */
bw_gen *bw_gen_create(const bw_tok *tok, const bw_gen_params *p, const int32_t *prompt, size_t n_prompt,
                      int32_t first_index);
void bw_gen_free(bw_gen *g);

/* Tokens the backend must process before the first bw_gen_next (the prompt). */
const int32_t *bw_gen_tokens(const bw_gen *g, size_t *n);

typedef struct {
    int32_t index;    /* position in the job's output: 0, 1, 2, ... */
    int32_t id;       /* token id */
    const char *text; /* text released with this token (may be ""), valid until the next call */
    size_t text_len;
    enum bw_stop_reason stop; /* BW_STOP_NONE while the job goes on */
    const char *stop_matched; /* the stop string, for BW_STOP_SEQUENCE */
} bw_gen_token;

/* Samples the next token from logits (n_vocab floats, modified) and returns what to publish. When
 * out->stop != BW_STOP_NONE the job is over and the token must not be fed to the backend. An EOS token
 * ends the job and is reported with its id but empty text. */
int bw_gen_next(bw_gen *g, bw_sampler *s, float *logits, bw_gen_token *out);

/* bw_gen_next split in two, for a sampler that runs elsewhere (the CUDA backend samples on the device
 * with these inputs and the same arithmetic): what the next draw needs, then the chosen id. */
const bw_sampler_params *bw_gen_sampling(const bw_gen *g);
const int32_t *bw_gen_history(const bw_gen *g, size_t *n); /* prompt and generated tokens so far */
uint64_t bw_gen_draw_index(const bw_gen *g);               /* the index of the next draw */
int bw_gen_accept(bw_gen *g, int32_t id, bw_gen_token *out);

int32_t bw_gen_n_generated(const bw_gen *g);

#endif
