/* Sampling on the device (issue 13, item 3): one block per logits row chooses the token with the
 * arithmetic of engine/sample_core.h, the code the CPU sampler (engine/sampler.c) runs, so a row
 * sampled here gets exactly the token bw_sample would choose from the same logits. Only the ids cross
 * to the host.
 *
 * Per row: the repetition penalty over the history window the caller copied (the last
 * min(n_history, repeat_last_n) ids, at most BW_CU_SAMPLE_HIST), the argmax (greedy when temperature
 * <= 0 or top_k == 1), then the candidates within the logit window, sorted by a bitonic network in
 * shared memory, their probabilities in parallel, and the sequential choice by one thread. A row with
 * more than BW_CU_SAMPLE_CAP candidates gets id -1: the caller copies that row's (penalised) logits
 * back and samples it on the host with bw_sample and no history (the penalty is already applied). A row
 * with n_hist < 0 (a window longer than BW_CU_SAMPLE_HIST) gets -2 and its logits untouched: the host
 * samples it as usual. */
#ifndef BW_ENGINE_CUDA_SAMPLE_CUH
#define BW_ENGINE_CUDA_SAMPLE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#define BW_CU_SAMPLE_HIST 256
#define BW_CU_SAMPLE_CAP 4096

struct bw_cu_sample_row {
    float temperature, top_p, min_p, repetition_penalty;
    int32_t top_k;
    int32_t n_hist; /* ids in this row's history window, <= BW_CU_SAMPLE_HIST; < 0: sample on the host */
    uint64_t seed, index;
};

/* logits: n_rows rows of n_vocab floats, ld apart (modified: the penalty). rows, hist (n_rows x
 * BW_CU_SAMPLE_HIST) and out (n_rows ids) are device memory. */
cudaError_t bw_cu_sample(cudaStream_t st, float *logits, int n_vocab, size_t ld, int n_rows,
                         const bw_cu_sample_row *rows, const int32_t *hist, int32_t *out);

#endif
