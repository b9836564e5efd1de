/* Attention over the KV cache, one block per (query head, token); the same kernel serves decode (one
 * query per slot) and prefill (a chunk of queries of one slot, causal through pos[t]).
 *
 * Cache layout (per layer): [slot][kv_head][n_ctx][head_dim] f16 for K and for V, written by the QKV
 * product's epilogue before this kernel runs (so a prefill chunk sees its own earlier tokens).
 * Shared memory: q[head_dim] (pre-scaled by 1/sqrt(head_dim)) | partial[G][head_dim] | red[64] |
 * scores[n_ctx]. Steps: one thread per cached position computes q.k (16-byte loads of the key row),
 * block max, exponentials and their sum, then thread (column pair c, group g) accumulates p*v over the
 * positions of its group and the groups are summed. Scores stay in shared memory, so the kernel needs
 * 4 bytes per position of context (raised above 48 KiB at load when n_ctx needs it). */
#include "engine/cuda/ops.cuh"

#define AT_THREADS 128

size_t bw_cu_attention_smem(int n_ctx, int head_dim)
{
    const int cols = head_dim / 2;
    const int groups = AT_THREADS / cols;
    return ((size_t)head_dim + (size_t)groups * head_dim + 64 + (size_t)n_ctx) * sizeof(float);
}

__device__ __forceinline__ float at_block_reduce(float v, float *red, bool is_max)
{
    const int warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    v = is_max ? bw_warp_max(v) : bw_warp_sum(v);
    __syncthreads(); /* red may still be read from the previous reduction */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < AT_THREADS / BW_WARP; w++) r = is_max ? fmaxf(r, red[w]) : r + red[w];
    return r;
}

__global__ void __launch_bounds__(AT_THREADS) at_kernel(bw_cu_attn a)
{
    extern __shared__ __align__(16) float sm[];
    const int h = blockIdx.x, t = blockIdx.y, hd = a.head_dim;
    const int cols = hd / 2, groups = AT_THREADS / cols;
    float *qs = sm;
    float *part = qs + hd;
    float *red = part + (size_t)groups * hd;
    float *sc = red + 64;

    bw_pdl_wait();
    bw_pdl_launch_dependents();
    const int pos = a.pos[t], n = pos + 1;
    const int kvh = h / (a.n_head / a.n_head_kv);
    const size_t base = ((size_t)a.slot[t] * a.n_head_kv + kvh) * a.n_ctx * hd;
    const __half *K = a.k_cache + base;
    const __half *V = a.v_cache + base;

    for (int d = threadIdx.x; d < hd; d += AT_THREADS) qs[d] = a.q[(size_t)t * a.ldq + (size_t)h * hd + d] * a.scale;
    __syncthreads();

    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += AT_THREADS) {
        const uint4 *kr = (const uint4 *)(K + (size_t)j * hd);
        float dot = 0.0f;
        for (int c = 0; c < hd / 8; c++) {
            const uint4 v = kr[c];
            const __half2 *h2 = (const __half2 *)&v;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = __half22float2(h2[i]);
                dot += qs[c * 8 + 2 * i] * f.x + qs[c * 8 + 2 * i + 1] * f.y;
            }
        }
        sc[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = at_block_reduce(mx, red, true);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += AT_THREADS) {
        const float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = at_block_reduce(sum, red, false); /* its barriers also publish sc[] */

    const int c = threadIdx.x % cols, g = threadIdx.x / cols;
    if (g < groups) {
        float2 acc = make_float2(0.0f, 0.0f);
        for (int j = g; j < n; j += groups) {
            const float2 v = __half22float2(((const __half2 *)(V + (size_t)j * hd))[c]);
            const float p = sc[j];
            acc.x += p * v.x;
            acc.y += p * v.y;
        }
        part[g * hd + 2 * c] = acc.x;
        part[g * hd + 2 * c + 1] = acc.y;
    }
    __syncthreads();
    const float inv = 1.0f / sum;
    for (int d = threadIdx.x; d < hd; d += AT_THREADS) {
        float o = 0.0f;
        for (int gg = 0; gg < groups; gg++) o += part[gg * hd + d];
        a.out[(size_t)t * a.ldo + (size_t)h * hd + d] = o * inv;
    }
}

cudaError_t bw_cu_attention_prepare(int n_ctx, int head_dim)
{
    const size_t smem = bw_cu_attention_smem(n_ctx, head_dim);
    if (smem <= 48 * 1024) return cudaSuccess;
    return cudaFuncSetAttribute(at_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

cudaError_t bw_cu_attention(const bw_cu_launch &L, const bw_cu_attn &a, int n_tok)
{
    if (n_tok <= 0) return cudaSuccess;
    if (a.head_dim % 8 != 0 || a.head_dim > 2 * AT_THREADS || a.n_head % a.n_head_kv != 0)
        return cudaErrorInvalidValue;
    return bw_cu_launch_kernel(L, dim3(a.n_head, n_tok), dim3(AT_THREADS), bw_cu_attention_smem(a.n_ctx, a.head_dim),
                               at_kernel, a);
}
