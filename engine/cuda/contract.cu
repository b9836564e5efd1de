/* The contract's reference kernels (contract.cuh). Every float operation goes through numerics.h, so
 * tests/unit/test_cuda_numerics.c runs the same arithmetic on the CPU. */
#include "engine/cuda/contract.cuh"

#define NM_THREADS 256
#define NM_MAX_GROUPS 256 /* fold width up to 256: 8 groups per lane */

/* One block of threads per token. Warp 0 computes the RMS scale (lane j: partial j, then the xor
 * butterfly, which leaves the contract's fold in every lane); then warp w quantizes blocks w, w+8, ...
 * with lane l holding element l. amax is a max over the bit patterns of non-negative floats (ordered
 * as the floats), and sum q an integer sum: both exact in any order. */
__global__ void __launch_bounds__(NM_THREADS)
    nm_prepare_kernel(const float *x, int ldx, int K, const float *norm, float eps, bw_cu_qrows out)
{
    __shared__ float scale;
    const int t = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    const float *xr = x + (size_t)t * ldx;
    const int nb = K / 32;
    if (norm && warp == 0) {
        double p = 0.0;
        for (int k = lane; k < K; k += 32) p = bw_nm_dadd(p, (double)bw_nm_mul(xr[k], xr[k]));
        for (int o = 16; o > 0; o >>= 1) p = bw_nm_dadd(p, __shfl_xor_sync(0xffffffffu, p, o));
        if (lane == 0) scale = bw_nm_rms_scale_from(p, K, eps);
    }
    __syncthreads();
    for (int b = warp; b < nb; b += nwarps) {
        const int k = b * 32 + lane;
        const float v = norm ? bw_nm_normed(xr[k], scale, norm[k]) : xr[k];
        const float amax = __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(fabsf(v))));
        const int q = bw_nm_quant_elem(v, bw_nm_quant_inv(amax));
        const int sum = __reduce_add_sync(0xffffffffu, q);
        out.q[(size_t)t * K + k] = (int8_t)q;
        if (lane == 0) bw_nm_quant_scales(amax, sum, &out.d[(size_t)t * nb + b], &out.s[(size_t)t * nb + b]);
    }
}

/* The sum of group grp of weight row w against prepared row (q, d, s): blocks in order. */
__device__ __forceinline__ float nm_group(int kind, const uint8_t *w, int nb, int grp, const int8_t *q,
                                          const uint16_t *d, const uint16_t *s)
{
    const int bb = bw_nm_block_bytes(kind), qo = kind == BW_NM_Q4_1 ? 4 : 2;
    float acc = 0.0f;
    for (int b = grp * BW_NM_GROUP; b < nb && b < (grp + 1) * BW_NM_GROUP; b++) {
        const uint8_t *blk = w + (size_t)b * bb;
        const float dw = bw_nm_h2f((uint16_t)(blk[0] | blk[1] << 8));
        const float mw = kind == BW_NM_Q4_1 ? bw_nm_h2f((uint16_t)(blk[2] | blk[3] << 8)) : 0.0f;
        const int is = bw_nm_block_idot(kind, blk + qo, q + (size_t)b * 32);
        acc = bw_nm_group_add(acc, bw_nm_block_term(kind, dw, mw, bw_nm_h2f(d[b]), bw_nm_h2f(s[b]), is),
                              b == grp * BW_NM_GROUP);
    }
    return acc;
}

__global__ void __launch_bounds__(128)
    nm_matvec_kernel(int kind, const uint8_t *w, int rows, int K, bw_cu_qrows a, int n_tok, float *y, int ldy)
{
    const long gw = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (gw >= (long)rows * n_tok) return; /* whole warps leave together */
    const int r = (int)(gw % rows), t = (int)(gw / rows);
    const int nb = K / 32, ng = (nb + BW_NM_GROUP - 1) / BW_NM_GROUP, P = bw_nm_fold_width(ng);
    const int per = P > 32 ? P / 32 : 1;
    const uint8_t *wr = w + (size_t)r * nb * bw_nm_block_bytes(kind);
    const int8_t *q = a.q + (size_t)t * K;
    const uint16_t *d = a.d + (size_t)t * nb, *s = a.s + (size_t)t * nb;
    /* lane j owns the adjacent groups j*per .. j*per+per-1: the fold's lowest levels stay in the lane */
    float h[NM_MAX_GROUPS / 32];
#pragma unroll
    for (int k = 0; k < NM_MAX_GROUPS / 32; k++) {
        const int grp = lane * per + k;
        h[k] = k < per && grp < ng ? nm_group(kind, wr, nb, grp, q, d, s) : 0.0f;
    }
#pragma unroll
    for (int w = 1; w < NM_MAX_GROUPS / 32; w <<= 1)
        if (w < per)
#pragma unroll
            for (int k = 0; k + w < NM_MAX_GROUPS / 32; k += 2 * w) h[k] = bw_nm_add(h[k], h[k + w]);
    float v = h[0];
    const int lanes = P < 32 ? P : 32;
    for (int o = 1; o < lanes; o <<= 1) {
        const float other = __shfl_down_sync(0xffffffffu, v, o);
        v = bw_nm_add(v, other);
    }
    if (lane == 0) y[(size_t)t * ldy + r] = v;
}

cudaError_t bw_cu_nm_prepare(cudaStream_t st, const float *x, int ldx, int n_tok, int K, const float *norm, float eps,
                             bw_cu_qrows out)
{
    if (n_tok <= 0) return cudaSuccess;
    if (K <= 0 || K % 32 || ldx < K) return cudaErrorInvalidValue;
    nm_prepare_kernel<<<n_tok, NM_THREADS, 0, st>>>(x, ldx, K, norm, eps, out);
    return cudaGetLastError();
}

cudaError_t bw_cu_nm_matvec(cudaStream_t st, int kind, const uint8_t *w, int rows, int K, bw_cu_qrows a, int n_tok,
                            float *y, int ldy)
{
    if (n_tok <= 0 || rows <= 0) return cudaSuccess;
    if (K <= 0 || K % 32 || (K / 32 + BW_NM_GROUP - 1) / BW_NM_GROUP > NM_MAX_GROUPS || ldy < rows ||
        (kind != BW_NM_Q4_0 && kind != BW_NM_Q4_1 && kind != BW_NM_Q8_0))
        return cudaErrorInvalidValue;
    const long warps = (long)rows * n_tok;
    nm_matvec_kernel<<<(unsigned)((warps + 3) / 4), 128, 0, st>>>(kind, w, rows, K, a, n_tok, y, ldy);
    return cudaGetLastError();
}
