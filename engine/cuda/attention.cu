/* Attention over the KV cache, one block per (query head, token); the same kernel serves decode (one
 * query per slot) and prefill (a chunk of queries of one slot, causal through pos[t]).
 *
 * Cache layout (per layer): [slot][kv_head][n_ctx][head_dim] f16 for K and for V, written by the QKV
 * product's epilogue before this kernel runs (so a prefill chunk sees its own earlier tokens).
 *
 * Work split: a group of LP lanes owns one cached position at a time, each lane 8 dimensions (one
 * 16-byte load of the key row and one of the value row), so a warp covers 32/LP positions per step and
 * the block's 8 warps stride over the context together. Each group keeps a running max, sum and
 * output (online softmax) over its positions, with AT_UNROLL positions' loads issued before any is
 * used; at the end the groups' partial results are merged through shared memory. No per-position
 * storage: the kernel's shared memory does not grow with the context. */
#include "engine/cuda/ops.cuh"

#define AT_WARPS 8
#define AT_THREADS (AT_WARPS * BW_WARP)
#define AT_UNROLL 4
#define AT_MAX_GROUPS (AT_WARPS * BW_WARP) /* with LP = 1: head_dim up to 8 */

size_t bw_cu_attention_smem(int n_ctx, int head_dim)
{
    (void)n_ctx;
    (void)head_dim;
    return 0;
}

/* Lanes per position: head_dim / 8 rounded up to a power of two. */
static __host__ __device__ int at_lanes(int hd)
{
    int lp = 1;
    while (lp * 8 < hd) lp *= 2;
    return lp;
}

template <int LP> __global__ void __launch_bounds__(AT_THREADS) at_kernel(bw_cu_attn a)
{
    constexpr int PP = BW_WARP / LP;  /* positions per warp step */
    constexpr int NG = AT_WARPS * PP; /* groups per block */
    constexpr int STEP = NG;          /* positions per block step */
    __shared__ float s_m[NG], s_l[NG];
    __shared__ __align__(16) float s_o[NG * LP * 8];
    const int h = blockIdx.x, t = blockIdx.y, hd = a.head_dim;
    const int warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    const int sub = lane % LP, grp = warp * PP + lane / LP;
    const int d0 = sub * 8;
    const bool active = d0 < hd;

    bw_pdl_wait();
    bw_pdl_launch_dependents();
    const int n = a.pos[t] + 1;
    const int kvh = h / (a.n_head / a.n_head_kv);
    const size_t base = ((size_t)a.slot[t] * a.n_head_kv + kvh) * a.n_ctx * hd;
    const __half *K = a.k_cache + base + d0;
    const __half *V = a.v_cache + base + d0;

    float q[8];
    {
        const float *qr = a.q + (size_t)t * a.ldq + (size_t)h * hd + d0;
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = active ? qr[i] * a.scale : 0.0f;
    }
    float m = -INFINITY, l = 0.0f, o[8];
#pragma unroll
    for (int i = 0; i < 8; i++) o[i] = 0.0f;

    /* The trip count is the warp's, not the group's: the shuffles below need every lane of the warp,
     * so a group whose positions have run out keeps stepping with nothing valid. */
    for (int jw = warp * PP; jw < n; jw += STEP * AT_UNROLL) {
        const int j0 = jw + lane / LP;
        uint4 kv[AT_UNROLL], vv[AT_UNROLL];
#pragma unroll
        for (int r = 0; r < AT_UNROLL; r++) {
            const int j = j0 + r * STEP;
            kv[r] = vv[r] = make_uint4(0, 0, 0, 0);
            if (j < n && active) {
                kv[r] = *(const uint4 *)(K + (size_t)j * hd);
                vv[r] = *(const uint4 *)(V + (size_t)j * hd);
            }
        }
        float s[AT_UNROLL];
        float mc = -INFINITY;
#pragma unroll
        for (int r = 0; r < AT_UNROLL; r++) {
            const __half2 *k2 = (const __half2 *)&kv[r];
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = __half22float2(k2[i]);
                dot += q[2 * i] * f.x + q[2 * i + 1] * f.y;
            }
#pragma unroll
            for (int off = LP / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
            s[r] = j0 + r * STEP < n ? dot : -INFINITY;
            mc = fmaxf(mc, s[r]);
        }
        /* mn stays -inf while this group has seen no valid position: then l and o are still 0 and
         * every p is 0, and the guards keep exp(-inf - -inf) out. */
        const float mn = fmaxf(m, mc);
        const float c = m == -INFINITY ? 0.0f : expf(m - mn);
        l *= c;
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] *= c;
#pragma unroll
        for (int r = 0; r < AT_UNROLL; r++) {
            const float pr = s[r] == -INFINITY ? 0.0f : expf(s[r] - mn);
            l += pr;
            const __half2 *v2 = (const __half2 *)&vv[r];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = __half22float2(v2[i]);
                o[2 * i] += pr * f.x;
                o[2 * i + 1] += pr * f.y;
            }
        }
        m = mn;
    }

    if (sub == 0) {
        s_m[grp] = m;
        s_l[grp] = l;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) s_o[(grp * LP + sub) * 8 + i] = o[i];
    __syncthreads();
    float M = -INFINITY;
    for (int gg = 0; gg < NG; gg++) M = fmaxf(M, s_m[gg]);
    float L = 0.0f;
    for (int gg = 0; gg < NG; gg++) L += s_l[gg] * expf(s_m[gg] - M); /* empty groups: l = 0, exp(-inf) = 0 */
    const float inv = 1.0f / L;
    for (int d = threadIdx.x; d < hd; d += AT_THREADS) {
        const int sd = d / 8, id = d % 8;
        float acc = 0.0f;
        for (int gg = 0; gg < NG; gg++)
            if (s_m[gg] != -INFINITY) acc += s_o[(gg * LP + sd) * 8 + id] * expf(s_m[gg] - M);
        a.out[(size_t)t * a.ldo + (size_t)h * hd + d] = acc * inv;
    }
}

cudaError_t bw_cu_attention_prepare(int n_ctx, int head_dim)
{
    (void)n_ctx;
    (void)head_dim;
    return cudaSuccess;
}

cudaError_t bw_cu_attention(const bw_cu_launch &L, const bw_cu_attn &a, int n_tok)
{
    if (n_tok <= 0) return cudaSuccess;
    if (a.head_dim % 8 != 0 || a.head_dim > 256 || a.n_head % a.n_head_kv != 0) return cudaErrorInvalidValue;
    const dim3 grid(a.n_head, n_tok), block(AT_THREADS);
    switch (at_lanes(a.head_dim)) {
    case 1: return bw_cu_launch_kernel(L, grid, block, 0, at_kernel<1>, a);
    case 2: return bw_cu_launch_kernel(L, grid, block, 0, at_kernel<2>, a);
    case 4: return bw_cu_launch_kernel(L, grid, block, 0, at_kernel<4>, a);
    case 8: return bw_cu_launch_kernel(L, grid, block, 0, at_kernel<8>, a);
    case 16: return bw_cu_launch_kernel(L, grid, block, 0, at_kernel<16>, a);
    default: return bw_cu_launch_kernel(L, grid, block, 0, at_kernel<32>, a);
    }
}
