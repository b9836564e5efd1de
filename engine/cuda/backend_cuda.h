/* CUDA-only entry points beside the common backend interface (engine/backend.h).
 *
 * Owns: nothing new; these let a caller that knows it runs on the CUDA backend skip the logits copy
 * (n_vocab floats per token over PCIe) when it only needs the greedy choice. Present in every build:
 * without CUDA they report failure. */
#ifndef BW_ENGINE_CUDA_BACKEND_CUDA_H
#define BW_ENGINE_CUDA_BACKEND_CUDA_H

#include <stdint.h>

#include "engine/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if b was made by bw_backend_cuda_create. */
int bw_backend_is_cuda(const bw_backend *b);

/* The forward pass of bw_backend_forward, but instead of logits it writes, for each token whose
 * want_logits is 1 (in batch order), the two best token ids (ids[2i], ids[2i+1]) and their logits
 * (vals likewise); ids[2i] is the greedy choice. Returns 0, or -1 (message on stderr). */
int bw_backend_cuda_forward_top2(bw_backend *b, const bw_batch *batch, int32_t *ids, float *vals);

#ifdef __cplusplus
}
#endif

#endif
