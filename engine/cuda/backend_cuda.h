/* CUDA-only entry points beside the common backend interface (engine/backend.h).
 *
 * Owns: nothing new; these let a caller that knows it runs on the CUDA backend skip the logits copy
 * (n_vocab floats per token over PCIe) when it only needs the greedy choice. Present in every build:
 * without CUDA they report failure. */
#ifndef BW_ENGINE_CUDA_BACKEND_CUDA_H
#define BW_ENGINE_CUDA_BACKEND_CUDA_H

#include <stdint.h>

#include "engine/backend.h"
#include "engine/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if b was made by bw_backend_cuda_create. */
int bw_backend_is_cuda(const bw_backend *b);

/* The forward pass of bw_backend_forward, but instead of logits it writes, for each token whose
 * want_logits is 1 (in batch order), the two best token ids (ids[2i], ids[2i+1]) and their logits
 * (vals likewise); ids[2i] is the greedy choice. Returns 0, or -1 (message on stderr). */
int bw_backend_cuda_forward_top2(bw_backend *b, const bw_batch *batch, int32_t *ids, float *vals);

/* What the sampler needs for one logits row: bw_sample's inputs except the logits. */
typedef struct {
    bw_sampler_params p;
    const int32_t *history; /* prompt and generated tokens (the penalty reads the last repeat_last_n) */
    size_t n_history;
    uint64_t index; /* the draw's index in its job */
} bw_cuda_sample_req;

/* Sampled on the device, but the window of the repetition penalty is longer than the device holds:
 * the row's logits are in fallback_logits untouched; sample it with bw_sample as usual. */
#define BW_CUDA_SAMPLE_HOST_RAW (-2)
/* Too many candidates for the device's sort: the row's logits, already penalised, are in
 * fallback_logits; sample it with bw_sample, no history (the penalty must not apply twice). */
#define BW_CUDA_SAMPLE_HOST_PENALISED (-1)

/* The forward pass of bw_backend_forward, then sampling on the device (engine/cuda/sample.cuh: the
 * same arithmetic as bw_sample, engine/sample_core.h): for the i-th token whose want_logits is 1,
 * req[i] says how to draw and ids[i] receives the token, or one of the two codes above, in which case
 * row i of fallback_logits (n_vocab floats per wanted row) holds the logits to sample on the host. Only
 * the ids (and those rare rows) cross to the host. Returns 0, or -1 (message on stderr). */
int bw_backend_cuda_forward_sample(bw_backend *b, const bw_batch *batch, const bw_cuda_sample_req *req, int32_t *ids,
                                   float *fallback_logits);

#ifdef __cplusplus
}
#endif

#endif
