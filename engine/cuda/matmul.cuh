/* Device helpers both product kernels share (matmul.cu: the warp-per-row-pair kernel for a few tokens;
 * matmul_mma.cu: the tensor-core tile kernel for many): staging a block's activation rows in shared
 * memory, and the epilogues. Weights layout: engine/cuda/repack.h.
 *
 * Staged activations, for quantized weights: aq[t][stride] int8 (row t of the block's tokens, K bytes
 * used; stride >= K lets the tile kernel pad rows against bank conflicts), then ads[t][K/32] half2
 * (d, d*sum(q)) per 32-element block, exactly as the CPU backend quantizes (id = 127/amax, round half
 * to even). For float weights: af[t][K] floats. Tokens past the batch's end are zero-filled. */
#ifndef BW_ENGINE_CUDA_MATMUL_CUH
#define BW_ENGINE_CUDA_MATMUL_CUH

#include "engine/cuda/ops.cuh"
#include "engine/tensor.h"

/* Loads in flight per lane while staging. The activations were just written by the previous kernel and
 * sit in L2, so staging costs dependent round trips, not bytes: the norm pass reads up to
 * 32 * MM_NORM_LD elements of a row in one trip (K <= 1024 in one), the quantization pass MM_LD_BATCH
 * blocks per warp (64 blocks, K <= 2048 of one token, per trip of a 4-warp block). */
#define MM_NORM_LD 32
#define MM_LD_BATCH 16

__device__ __forceinline__ const float *mm_act_row(const bw_cu_act &in, int t)
{
    return in.x + (size_t)(in.idx ? in.idx[t] : t) * in.ldx;
}

/* Stages tokens t0..t0+nt-1 (nt <= ntmax) into smem; tscale must hold ntmax floats of shared memory.
 * Every thread of the block calls it; it ends with a barrier. Needs sm_80 (redux.sync). */
template <bool QUANT>
__device__ __forceinline__ void mm_stage_act(uint8_t *smem, int stride, int ntmax, float *tscale, const bw_cu_act &in,
                                             int K, int t0, int nt)
{
    const int nwarps = blockDim.x / BW_WARP, warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    const int nb = K / 32;
    if (in.norm) {
        /* One warp per token. Sum of squares in double, then the scale in float, as the CPU's rmsnorm;
         * each lane adds its elements in ascending order (the padding zeros change nothing). */
        for (int t = warp; t < nt; t += nwarps) {
            const float *xr = mm_act_row(in, t0 + t);
            double ss = 0.0;
            for (int k0 = lane; k0 < K; k0 += BW_WARP * MM_NORM_LD) {
                float v[MM_NORM_LD];
#pragma unroll
                for (int i = 0; i < MM_NORM_LD; i++) {
                    const int k = k0 + i * BW_WARP;
                    v[i] = k < K ? xr[k] : 0.0f;
                }
#pragma unroll
                for (int i = 0; i < MM_NORM_LD; i++) ss += (double)(v[i] * v[i]);
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            if (lane == 0) tscale[t] = 1.0f / sqrtf((float)(ss / (double)K) + in.eps);
        }
        __syncthreads();
    }

    /* One warp per 32-element block of one token, lane l holding element l. All MM_LD_BATCH blocks'
     * loads are issued first, then each reduction step runs for all of them at once (no block waits
     * for another's reductions). amax is a max over the bit patterns of non-negative floats, which
     * order as the floats do, so both reductions are single exact redux.sync instructions. */
    int8_t *aq = (int8_t *)smem;
    __half2 *ads = (__half2 *)(smem + (size_t)ntmax * stride);
    float *af = (float *)smem;
    const int n_blk = ntmax * nb;
    for (int j0 = warp; j0 < n_blk; j0 += nwarps * MM_LD_BATCH) {
        float v[MM_LD_BATCH];
#pragma unroll
        for (int i = 0; i < MM_LD_BATCH; i++) {
            const int j = j0 + i * nwarps, t = j / nb, k = (j % nb) * 32 + lane;
            v[i] = 0.0f;
            if (j < n_blk && t < nt) {
                v[i] = mm_act_row(in, t0 + t)[k];
                if (in.norm) v[i] = v[i] * tscale[t] * in.norm[k];
            }
        }
        if (QUANT) {
            float amax[MM_LD_BATCH];
            int q[MM_LD_BATCH], sum[MM_LD_BATCH];
#pragma unroll
            for (int i = 0; i < MM_LD_BATCH; i++)
                amax[i] = __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(fabsf(v[i]))));
#pragma unroll
            for (int i = 0; i < MM_LD_BATCH; i++) {
                const float id = amax[i] != 0.0f ? 127.0f / amax[i] : 0.0f;
                q[i] = __float2int_rn(v[i] * id);
            }
#pragma unroll
            for (int i = 0; i < MM_LD_BATCH; i++) sum[i] = __reduce_add_sync(0xffffffffu, q[i]);
#pragma unroll
            for (int i = 0; i < MM_LD_BATCH; i++) {
                const int j = j0 + i * nwarps, t = j / nb, b = j % nb;
                if (j < n_blk) {
                    const float d = amax[i] / 127.0f;
                    aq[(size_t)t * stride + b * 32 + lane] = (int8_t)q[i];
                    if (lane == 0)
                        ads[t * nb + b] = __halves2half2(__float2half_rn(d), __float2half_rn(d * (float)sum[i]));
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < MM_LD_BATCH; i++) {
                const int j = j0 + i * nwarps, t = j / nb, k = (j % nb) * 32 + lane;
                if (j < n_blk) af[(size_t)t * K + k] = v[i];
            }
        }
    }
    __syncthreads();
}

__device__ __forceinline__ float mm_silu(float x) { return x / (1.0f + expf(-x)); }

/* RoPE of the pair (a, b) at dimensions (j, j+1) of a head, computed as the CPU does: the angle of pair
 * i is freq_scale * (pos * theta_scale^i), the power built by repeated multiplication, and theta_scale
 * = powf(base, -2/n_rot) comes from the host's powf. */
__device__ __forceinline__ void mm_rope(float &a, float &b, int j, int pos, const bw_cu_qkv &p)
{
    if (j >= p.n_rot) return;
    const int i = j / 2;
    float theta = (float)pos;
    for (int k = 0; k < i; k++) theta *= p.theta_scale;
    float t = p.pos_scale * theta;
    if (p.rope_freqs) t /= p.rope_freqs[i];
    /* In double: exact range reduction for any position, and the correctly rounded float sine and
     * cosine of t. */
    double sd, cd;
    sincos((double)t, &sd, &cd);
    const float s = (float)sd, c = (float)cd;
    const float a2 = a * c - b * s;
    const float b2 = a * s + b * c;
    a = a2;
    b = b2;
}

/* Output rows of unit u: (2u, 2u+1), or (u, u + n_units) for the stacked gate|up matrix. */
__device__ __forceinline__ void mm_unit_rows(int epi, int u, int n_units, int &ra, int &rb)
{
    ra = epi == BW_EPI_SWIGLU ? u : 2 * u;
    rb = epi == BW_EPI_SWIGLU ? u + n_units : 2 * u + 1;
}

__device__ __forceinline__ void mm_epilogue(int epi, int t, int ra, int rb, bool hb, float va, float vb, float *y,
                                            int ldy, const bw_cu_qkv &p)
{
    switch (epi) {
    case BW_EPI_STORE:
        y[(size_t)t * ldy + ra] = va;
        if (hb) y[(size_t)t * ldy + rb] = vb;
        break;
    case BW_EPI_ADD:
        y[(size_t)t * ldy + ra] += va;
        if (hb) y[(size_t)t * ldy + rb] += vb;
        break;
    case BW_EPI_SWIGLU: y[(size_t)t * ldy + ra] = mm_silu(va) * vb; break;
    case BW_EPI_QKV: {
        const int pos = p.pos[t];
        if (ra < p.n_q) {
            mm_rope(va, vb, ra % p.head_dim, pos, p);
            p.q[(size_t)t * p.n_q + ra] = va;
            p.q[(size_t)t * p.n_q + ra + 1] = vb;
            break;
        }
        const bool is_k = ra < p.n_q + p.n_k;
        const int rr = ra - p.n_q - (is_k ? 0 : p.n_k);
        const int kvh = rr / p.head_dim, j = rr % p.head_dim;
        if (is_k) mm_rope(va, vb, j, pos, p);
        const size_t off = (((size_t)p.slot[t] * p.n_head_kv + kvh) * p.n_ctx + pos) * p.head_dim + j;
        __half *dst = is_k ? p.k_cache : p.v_cache;
        *(__half2 *)(dst + off) = __floats2half2_rn(va, vb);
        break;
    }
    }
}

/* The (d, m) pair of a weight block: m is 0 except for Q4_1. */
template <int WT> __device__ __forceinline__ float2 mm_scale_of(uint32_t raw)
{
    if (WT == BW_TYPE_Q4_1) return make_float2(bw_h2f((uint16_t)(raw & 0xffffu)), bw_h2f((uint16_t)(raw >> 16)));
    return make_float2(bw_h2f((uint16_t)raw), 0.0f);
}

template <int WT> __device__ __forceinline__ uint32_t mm_scale_raw(const void *s, size_t blk)
{
    if (WT == BW_TYPE_Q4_1) return __ldg((const uint32_t *)s + blk);
    return __ldg((const uint16_t *)s + blk);
}

/* Host side: the tile kernel (matmul_mma.cu); cudaErrorNotSupported when it does not take this shape
 * or type, and the caller uses the warp kernel. */
cudaError_t bw_cu_matmul_mma(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                             float *y, int ldy, const bw_cu_qkv &p, int n_units);

#endif
