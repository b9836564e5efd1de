/* The device sampler (sample.cuh). Every decision goes through engine/sample_core.h. */
#include "engine/cuda/sample.cuh"
extern "C" {
#include "engine/sample_core.h"
}

#define SM_THREADS 512

__global__ void __launch_bounds__(SM_THREADS)
    sample_kernel(float *logits, int n_vocab, size_t ld, const bw_cu_sample_row *rows, const int32_t *hist,
                  int32_t *out)
{
    __shared__ int32_t cid[BW_CU_SAMPLE_CAP];
    __shared__ float cv[BW_CU_SAMPLE_CAP];
    __shared__ float red_v[SM_THREADS / 32];
    __shared__ int32_t red_i[SM_THREADS / 32];
    __shared__ int n_cand;
    const int row = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const bw_cu_sample_row R = rows[row];
    float *l = logits + (size_t)row * ld;

    if (R.n_hist < 0) { /* a penalty window longer than the device holds: the host samples the raw row */
        if (tid == 0) out[row] = -2;
        return;
    }
    /* repetition penalty: each distinct id of the window once, as the CPU does */
    if (tid == 0) {
        n_cand = 0;
        if (R.repetition_penalty != 1.0f) {
            const int32_t *h = hist + (size_t)row * BW_CU_SAMPLE_HIST;
            for (int i = 0; i < R.n_hist; i++) {
                const int32_t id = h[i];
                if (id < 0 || id >= n_vocab) continue;
                bool dup = false;
                for (int j = 0; j < i && !dup; j++) dup = h[j] == id;
                if (!dup) l[id] = bw_sc_penalize(l[id], R.repetition_penalty);
            }
        }
    }
    __syncthreads();

    /* argmax: each thread scans ascending ids (so it keeps the first of equals), then the merges */
    float bv = -INFINITY;
    int32_t bi = INT32_MAX;
    for (int i = tid; i < n_vocab; i += SM_THREADS) bw_sc_argmax_merge(&bv, &bi, l[i], i);
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        bw_sc_argmax_merge(&bv, &bi, ov, oi);
    }
    if (lane == 0) red_v[warp] = bv, red_i[warp] = bi;
    __syncthreads();
    if (tid == 0) {
        for (int w = 1; w < SM_THREADS / 32; w++) bw_sc_argmax_merge(&red_v[0], &red_i[0], red_v[w], red_i[w]);
    }
    __syncthreads();
    const float maxl = red_v[0];
    const int32_t best = red_i[0];
    if (R.temperature <= 0.0f || R.top_k == 1) {
        if (tid == 0) out[row] = best;
        return;
    }

    /* candidates, in whatever order the atomics give; the sort makes the order unique */
    const float thr = bw_sc_threshold(maxl, R.temperature);
    for (int i = tid; i < n_vocab; i += SM_THREADS) {
        const float v = l[i];
        if (v >= thr) {
            const int k = atomicAdd(&n_cand, 1);
            if (k < BW_CU_SAMPLE_CAP) cid[k] = i, cv[k] = v;
        }
    }
    __syncthreads();
    const int n = n_cand;
    if (n > BW_CU_SAMPLE_CAP) {
        if (tid == 0) out[row] = -1; /* the host samples this row */
        return;
    }
    int P = 1;
    while (P < n) P <<= 1;
    for (int i = n + tid; i < P; i += SM_THREADS) cid[i] = INT32_MAX, cv[i] = -INFINITY; /* sort last */
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < P; i += SM_THREADS) bw_sc_bitonic_step(cid, cv, i, j, k);
            __syncthreads();
        }

    bw_sc_params sp;
    sp.temperature = R.temperature, sp.top_p = R.top_p, sp.top_k = R.top_k, sp.min_p = R.min_p;
    const int m = bw_sc_top_k(n, &sp);
    for (int i = tid; i < m; i += SM_THREADS) cv[i] = bw_sc_prob(cv[i], maxl, R.temperature);
    __syncthreads();
    if (tid == 0) out[row] = bw_sc_choose(cid, cv, m, &sp, bw_sc_uniform(R.seed, R.index));
}

cudaError_t bw_cu_sample(cudaStream_t st, float *logits, int n_vocab, size_t ld, int n_rows,
                         const bw_cu_sample_row *rows, const int32_t *hist, int32_t *out)
{
    if (n_rows <= 0) return cudaSuccess;
    if (n_vocab <= 0 || ld < (size_t)n_vocab) return cudaErrorInvalidValue;
    sample_kernel<<<n_rows, SM_THREADS, 0, st>>>(logits, n_vocab, ld, rows, hist, out);
    return cudaGetLastError();
}
