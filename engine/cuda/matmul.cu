/* Matrix products that dequantize the weights on the fly: y[t][r] = sum_c W[r][c] * x[t][c].
 *
 * One kernel serves decode (1..64 tokens) and prefill (chunks of up to 8 tokens per block, the grid's
 * y dimension walks the chunks; a block re-reads its rows' weights per chunk, from L2).
 *  - Prologue: the block's NT activation rows are read once, RMS-normalised if asked, and quantised
 *    to Q8_1-style blocks (int8 + f16 d, f16 s) in shared memory: layout aq[NT][K] int8, then
 *    ads[NT][K/32] half2 (d, s). Float weights keep the normalised row in float: af[NT][K].
 *  - Main loop: a warp owns a pair of output rows (an "unit") and all NT tokens, so each weight byte
 *    is loaded once per chunk. Lanes stride over 8-byte pieces of the row's quants (a half Q4 block,
 *    a quarter Q8_0 block) or 8 float elements, integer dot products per piece with dp4a, scaled per
 *    block as the CPU does (d_w*d_a*sum, + m_w*s_a for Q4_1).
 *  - Epilogue (lane 0 after a warp reduction): store, residual add, SwiGLU, or RoPE + KV write.
 * Weights layout: engine/cuda/repack.h. */
#include "engine/cuda/ops.cuh"
#include "engine/tensor.h"

#define MM_WARPS 4
#define MM_THREADS (MM_WARPS * BW_WARP)

__device__ __forceinline__ int mm_is_quant(int wt)
{
    return wt == BW_TYPE_Q4_0 || wt == BW_TYPE_Q4_1 || wt == BW_TYPE_Q8_0;
}

/* Normalises (optionally) and stores the block's activation rows in shared memory. */
template <int WT, int NT>
__device__ __forceinline__ void mm_prologue(uint8_t *smem, const bw_cu_act &in, int K, int t0, int nt)
{
    const int warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    const int nb = K / 32;
    constexpr bool quant = WT == BW_TYPE_Q4_0 || WT == BW_TYPE_Q4_1 || WT == BW_TYPE_Q8_0;
    size_t red_off = quant ? (size_t)NT * K + (size_t)NT * nb * 4 : (size_t)NT * K * 4;
    red_off = (red_off + 7) & ~(size_t)7; /* holds doubles */
    float *red = (float *)(smem + red_off);
    float scale[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) scale[t] = 1.0f;

    if (in.norm) {
        /* Sum of squares in double, then the scale in float: the CPU's rmsnorm does the same. */
        double ss[NT];
        double *redd = (double *)red;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            ss[t] = 0.0;
            if (t < nt) {
                const float *xr = in.x + (size_t)(in.idx ? in.idx[t0 + t] : t0 + t) * in.ldx;
                for (int k = threadIdx.x; k < K; k += MM_THREADS) ss[t] += (double)(xr[k] * xr[k]);
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], o);
        }
        if (lane == 0) {
#pragma unroll
            for (int t = 0; t < NT; t++) redd[t * MM_WARPS + warp] = ss[t];
        }
        __syncthreads();
#pragma unroll
        for (int t = 0; t < NT; t++) {
            double sum = 0.0;
#pragma unroll
            for (int w = 0; w < MM_WARPS; w++) sum += redd[t * MM_WARPS + w];
            scale[t] = 1.0f / sqrtf((float)(sum / (double)K) + in.eps);
        }
    }

    /* One warp per 32-element block of one token: lane l holds element l of the block. */
    for (int j = warp; j < nt * nb; j += MM_WARPS) {
        const int t = j / nb, b = j % nb, k = b * 32 + lane;
        float sc = 1.0f;
#pragma unroll
        for (int tt = 0; tt < NT; tt++)
            if (tt == t) sc = scale[tt]; /* static indexing keeps scale[] in registers */
        const float *xr = in.x + (size_t)(in.idx ? in.idx[t0 + t] : t0 + t) * in.ldx;
        float v = xr[k];
        if (in.norm) v = v * sc * in.norm[k];
        if (quant) {
            const float amax = bw_warp_max(fabsf(v));
            /* As the CPU: id = 127/amax (not 1/d), round half to even. */
            const float d = amax / 127.0f;
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            const int q = __float2int_rn(v * id);
            const int sum = bw_warp_sum_int(q);
            int8_t *aq = (int8_t *)smem;
            __half2 *ads = (__half2 *)(smem + (size_t)NT * K);
            aq[(size_t)t * K + k] = (int8_t)q;
            if (lane == 0) ads[t * nb + b] = __halves2half2(__float2half_rn(d), __float2half_rn(d * (float)sum));
        } else {
            ((float *)smem)[(size_t)t * K + k] = v;
        }
    }
    __syncthreads();
}

__device__ __forceinline__ float mm_silu(float x)
{
    return x / (1.0f + expf(-x));
}

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

__device__ __forceinline__ void mm_epilogue(int epi, int t, int ra, int rb, bool hb, float va, float vb,
                                            float *y, int ldy, const bw_cu_qkv &p)
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

/* Integer dot of one 8-byte piece of a weight row against the matching activation bytes. */
template <int WT>
__device__ __forceinline__ int mm_dot_piece(uint2 w, const int8_t *ap, int s)
{
    if (WT == BW_TYPE_Q8_0) {
        const int2 a = *(const int2 *)(ap + s * 8);
        return __dp4a((int)w.y, a.y, __dp4a((int)w.x, a.x, 0));
    }
    /* Q4: bytes 8s..8s+7 of the block hold elements 8s.. (low nibbles) and 16+8s.. (high nibbles). */
    int lo0 = (int)(w.x & 0x0f0f0f0fu), lo1 = (int)(w.y & 0x0f0f0f0fu);
    int hi0 = (int)((w.x >> 4) & 0x0f0f0f0fu), hi1 = (int)((w.y >> 4) & 0x0f0f0f0fu);
    if (WT == BW_TYPE_Q4_0) { /* q - 8 per byte, exact in int8 */
        lo0 = (int)__vsub4((unsigned)lo0, 0x08080808u);
        lo1 = (int)__vsub4((unsigned)lo1, 0x08080808u);
        hi0 = (int)__vsub4((unsigned)hi0, 0x08080808u);
        hi1 = (int)__vsub4((unsigned)hi1, 0x08080808u);
    }
    const int2 al = *(const int2 *)(ap + s * 8);
    const int2 ah = *(const int2 *)(ap + 16 + s * 8);
    int si = __dp4a(lo0, al.x, 0);
    si = __dp4a(lo1, al.y, si);
    si = __dp4a(hi0, ah.x, si);
    return __dp4a(hi1, ah.y, si);
}

template <int WT>
__device__ __forceinline__ float2 mm_scale(const void *s, size_t blk)
{
    if (WT == BW_TYPE_Q4_1) {
        const uint32_t v = ((const uint32_t *)s)[blk];
        return make_float2(bw_h2f((uint16_t)(v & 0xffffu)), bw_h2f((uint16_t)(v >> 16)));
    }
    return make_float2(bw_h2f(((const uint16_t *)s)[blk]), 0.0f);
}

/* 8 float weights of row w starting at element e. */
template <int WT>
__device__ __forceinline__ void mm_load8(const void *w, size_t e, float *o)
{
    if (WT == BW_TYPE_F32) {
        const float4 a = *(const float4 *)((const float *)w + e);
        const float4 b = *(const float4 *)((const float *)w + e + 4);
        o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
        o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
    } else {
        const uint4 v = *(const uint4 *)((const uint16_t *)w + e);
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t lo = (uint16_t)(u[i] & 0xffffu), hi = (uint16_t)(u[i] >> 16);
            o[2 * i] = WT == BW_TYPE_F16 ? bw_h2f(lo) : bw_bf2f(lo);
            o[2 * i + 1] = WT == BW_TYPE_F16 ? bw_h2f(hi) : bw_bf2f(hi);
        }
    }
}

template <int WT, int NT>
__global__ void __launch_bounds__(MM_THREADS)
    mm_kernel(bw_cu_mat W, bw_cu_act in, int n_tok, int epi, float *y, int ldy, bw_cu_qkv p, int n_units)
{
    extern __shared__ __align__(16) uint8_t smem[];
    const int warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    const int K = W.cols, nb = K / 32;
    const int t0 = blockIdx.y * NT;
    const int nt = min(NT, n_tok - t0);
    constexpr bool quant = WT == BW_TYPE_Q4_0 || WT == BW_TYPE_Q4_1 || WT == BW_TYPE_Q8_0;
    constexpr int QB = WT == BW_TYPE_Q8_0 ? 32 : 16;                       /* quant bytes per block */
    constexpr int EB = WT == BW_TYPE_F32 ? 4 : 2;                          /* float element bytes */
    const size_t row_bytes = quant ? (size_t)nb * QB : (size_t)K * EB;
    const int n_pieces = quant ? (int)(row_bytes / 8) : K / 8;
    const uint8_t *wq = (const uint8_t *)W.q;

    /* Units this block will start with: prefetch their first bytes while the previous kernel ends. */
    {
        const int u = blockIdx.x * MM_WARPS + warp;
        if (u < n_units && lane * 128 < (int)row_bytes) {
            const int ra = epi == BW_EPI_SWIGLU ? u : 2 * u;
            bw_prefetch_l2(wq + (size_t)ra * row_bytes + lane * 128);
        }
    }
    bw_pdl_wait();
    bw_pdl_launch_dependents();
    mm_prologue<WT, NT>(smem, in, K, t0, nt);

    const int8_t *aq = (const int8_t *)smem;
    const __half2 *ads = (const __half2 *)(smem + (size_t)NT * K);
    const float *af = (const float *)smem;

    for (int u = blockIdx.x * MM_WARPS + warp; u < n_units; u += gridDim.x * MM_WARPS) {
        const int ra = epi == BW_EPI_SWIGLU ? u : 2 * u;
        const int rb = epi == BW_EPI_SWIGLU ? u + n_units : 2 * u + 1;
        const bool hb = rb < W.rows;
        const int rbl = hb ? rb : ra; /* a missing last row reads row ra and is never stored */
        float acc0[NT], acc1[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) acc0[t] = acc1[t] = 0.0f;

        if (quant) {
            constexpr int NSUB = QB / 8;
            const uint8_t *qa = wq + (size_t)ra * row_bytes;
            const uint8_t *qb = wq + (size_t)rbl * row_bytes;
            for (int i = lane; i < n_pieces; i += BW_WARP) {
                const int b = i / NSUB, s = i % NSUB;
                const uint2 wa = __ldg((const uint2 *)(qa + (size_t)i * 8));
                const uint2 wb = __ldg((const uint2 *)(qb + (size_t)i * 8));
                const float2 sa = mm_scale<WT>(W.s, (size_t)ra * nb + b);
                const float2 sb = mm_scale<WT>(W.s, (size_t)rbl * nb + b);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < nt) {
                        const int8_t *ap = aq + (size_t)t * K + b * 32;
                        const float2 ds = __half22float2(ads[t * nb + b]);
                        float fa = sa.x * ds.x * (float)mm_dot_piece<WT>(wa, ap, s);
                        float fb = sb.x * ds.x * (float)mm_dot_piece<WT>(wb, ap, s);
                        if (WT == BW_TYPE_Q4_1 && s == 0) {
                            fa += sa.y * ds.y;
                            fb += sb.y * ds.y;
                        }
                        acc0[t] += fa;
                        acc1[t] += fb;
                    }
                }
            }
        } else {
            for (int i = lane; i < n_pieces; i += BW_WARP) {
                float wa[8], wb[8];
                mm_load8<WT>(W.q, (size_t)ra * K + (size_t)i * 8, wa);
                mm_load8<WT>(W.q, (size_t)rbl * K + (size_t)i * 8, wb);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < nt) {
                        const float4 x0 = *(const float4 *)(af + (size_t)t * K + i * 8);
                        const float4 x1 = *(const float4 *)(af + (size_t)t * K + i * 8 + 4);
                        acc0[t] += wa[0] * x0.x + wa[1] * x0.y + wa[2] * x0.z + wa[3] * x0.w + wa[4] * x1.x +
                                   wa[5] * x1.y + wa[6] * x1.z + wa[7] * x1.w;
                        acc1[t] += wb[0] * x0.x + wb[1] * x0.y + wb[2] * x0.z + wb[3] * x0.w + wb[4] * x1.x +
                                   wb[5] * x1.y + wb[6] * x1.z + wb[7] * x1.w;
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            acc0[t] = bw_warp_sum(acc0[t]);
            acc1[t] = bw_warp_sum(acc1[t]);
        }
        if (lane == 0) {
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < nt) mm_epilogue(epi, t0 + t, ra, rb, hb, acc0[t], acc1[t], y, ldy, p);
        }
    }
}

static size_t mm_smem(int wt, int nt, int K)
{
    const int quant = wt == BW_TYPE_Q4_0 || wt == BW_TYPE_Q4_1 || wt == BW_TYPE_Q8_0;
    size_t act = quant ? (size_t)nt * K + (size_t)nt * (K / 32) * 4 : (size_t)nt * K * 4;
    return ((act + 7) & ~(size_t)7) + (size_t)nt * MM_WARPS * 8; /* the norm's per-warp sums, in double */
}

template <int WT, int NT>
static cudaError_t mm_launch_nt(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok,
                                int epi, float *y, int ldy, const bw_cu_qkv &p, int n_units, int max_blocks)
{
    const size_t smem = mm_smem(WT, NT, W.cols);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(mm_kernel<WT, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return e;
    }
    int gx = (n_units + MM_WARPS - 1) / MM_WARPS;
    if (max_blocks > 0 && gx > max_blocks) gx = max_blocks;
    const dim3 grid(gx, (n_tok + NT - 1) / NT);
    return bw_cu_launch_kernel(L, grid, dim3(MM_THREADS), smem, mm_kernel<WT, NT>, W, in, n_tok, epi, y, ldy,
                               p, n_units);
}

template <int WT>
static cudaError_t mm_launch(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                             float *y, int ldy, const bw_cu_qkv &p, int n_units, int max_blocks)
{
    /* Tokens per block: as many as the batch has, up to 8, as long as the activations fit 48 KiB of
     * shared memory (more blocks per SM hide more latency). */
    int nt = n_tok == 1 ? 1 : n_tok == 2 ? 2 : n_tok <= 4 ? 4 : 8;
    while (nt > 1 && mm_smem(WT, nt, W.cols) > 48 * 1024) nt /= 2;
    switch (nt) {
    case 1: return mm_launch_nt<WT, 1>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case 2: return mm_launch_nt<WT, 2>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case 4: return mm_launch_nt<WT, 4>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    default: return mm_launch_nt<WT, 8>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    }
}

cudaError_t bw_cu_matmul(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                         float *y, int ldy, const bw_cu_qkv *qkv, int max_blocks)
{
    if (n_tok <= 0) return cudaSuccess;
    if (W.cols % 32 != 0 || (epi == BW_EPI_SWIGLU && W.rows % 2 != 0) || (epi == BW_EPI_QKV && !qkv))
        return cudaErrorInvalidValue;
    bw_cu_qkv p = {};
    if (qkv) p = *qkv;
    const int n_units = epi == BW_EPI_SWIGLU ? W.rows / 2 : (W.rows + 1) / 2;
    switch (W.type) {
    case BW_TYPE_F32: return mm_launch<BW_TYPE_F32>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case BW_TYPE_F16: return mm_launch<BW_TYPE_F16>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case BW_TYPE_BF16: return mm_launch<BW_TYPE_BF16>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case BW_TYPE_Q4_0: return mm_launch<BW_TYPE_Q4_0>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case BW_TYPE_Q4_1: return mm_launch<BW_TYPE_Q4_1>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    case BW_TYPE_Q8_0: return mm_launch<BW_TYPE_Q8_0>(L, W, in, n_tok, epi, y, ldy, p, n_units, max_blocks);
    default: return cudaErrorInvalidValue;
    }
}
