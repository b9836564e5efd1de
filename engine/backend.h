/* The interface every compute backend (CPU, CUDA) implements: a forward pass over a batch of tokens
 * that may belong to several sequences, each with its own KV cache slot.
 *
 * Owns: nothing; this is the contract. Rules of a batch:
 *  - token t belongs to slot[t] and sits at position pos[t] of that sequence;
 *  - the tokens of one slot appear in increasing, contiguous positions (a prefill chunk) and the cache
 *    of that slot already holds positions 0..pos[first]-1;
 *  - token t attends to positions 0..pos[t] of its own slot;
 *  - logits are written, in batch order, for the tokens whose want_logits[t] is 1, n_vocab floats each.
 * Sampling, tokens and scheduling live above this line. */
#ifndef BW_ENGINE_BACKEND_H
#define BW_ENGINE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"

typedef struct {
    int n_tokens;
    const int32_t *token;
    const int32_t *pos;
    const int32_t *slot;
    const uint8_t *want_logits;
} bw_batch;

typedef struct bw_backend bw_backend;

typedef struct {
    const char *name; /* "cpu", "cuda" */
    int (*forward)(bw_backend *b, const bw_batch *batch, float *logits);
    void (*destroy)(bw_backend *b);
} bw_backend_ops;

typedef struct {
    int n_slots;   /* concurrent sequences (KV cache slots) */
    int n_ctx;     /* positions per slot */
    int n_threads; /* CPU threads */
    int device;    /* GPU ordinal */
    int max_batch; /* most tokens in one forward call (prefill chunk size) */
} bw_backend_params;

struct bw_backend {
    const bw_backend_ops *ops;
    const bw_model *model;
    bw_backend_params params;
};

/* Constructors return NULL with a one-line reason in err. */
bw_backend *bw_backend_cpu_create(const bw_model *m, const bw_backend_params *p, char *err, size_t errlen);
bw_backend *bw_backend_cuda_create(const bw_model *m, const bw_backend_params *p, char *err, size_t errlen);
int bw_backend_cuda_available(void); /* 0 when built without CUDA or no device is present */

static inline int bw_backend_forward(bw_backend *b, const bw_batch *batch, float *logits)
{
    return b->ops->forward(b, batch, logits);
}
static inline void bw_backend_destroy(bw_backend *b)
{
    if (b) b->ops->destroy(b);
}

#endif
