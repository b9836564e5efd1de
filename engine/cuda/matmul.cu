/* Matrix products that dequantize the weights on the fly: y[t][r] = sum_c W[r][c] * x[t][c].
 *
 * This file: the warp kernel, and the dispatch. Where the caller asks for it (bw_cu_launch.mma),
 * batches of more than 8 tokens of a quantized matrix go to the tensor-core tile kernel
 * (matmul_mma.cu); everything else comes here, in chunks of up to 8 tokens per block (the grid's y
 * dimension walks the chunks). A token's result here does not depend on the batch around it.
 *  - Before waiting for the previous kernel (PDL), each warp loads the first pieces of its first
 *    rows into registers: weights are never written, so their DRAM latency overlaps the previous
 *    kernel's tail.
 *  - Prologue: the block's activation rows are staged in shared memory (matmul.cuh), RMS-normalised if
 *    asked and quantised to 8 bits for quantized weights.
 *  - Main loop: a warp owns a pair of output rows (an "unit") and all the block's tokens, so each weight
 *    byte is loaded once per chunk. Lanes stride over 8-byte pieces of the row's quants (a half Q4
 *    block, a quarter Q8_0 block) or 8 float elements; integer dot products per piece with dp4a, scaled
 *    per block as the CPU does (d_w*d_a*sum, + m_w*s_a for Q4_1). The next unit's first pieces are
 *    loaded while the current one is summed, so a warp always has loads in flight.
 *  - Epilogue (lane t for token t, after a warp reduction): store, residual add, SwiGLU, or RoPE + KV
 *    write. A unit's result does not depend on which warp or block computes it, so the grid's shape
 *    (bounded in total by the caller) is free to change with the batch.
 * Weights layout: engine/cuda/repack.h. */
#include "engine/cuda/matmul.cuh"

#define MM_WARPS 4
#define MM_THREADS (MM_WARPS * BW_WARP)
/* Pieces per lane held in registers ahead of use: 4 x 32 x 8 bytes covers a whole row up to K = 1024
 * for Q8_0 and K = 2048 for Q4. */
#define MM_PRE 4

/* Batches above this many tokens of a quantized matrix go to the tile kernel. */
#define MM_WARP_MAX_TOK 8

/* One lane's share of one piece index of a unit: the quants of both rows and their block scales. */
struct mm_piece {
    uint2 wa, wb;
    uint32_t sa, sb;
};

template <int WT>
__device__ __forceinline__ void mm_load_unit(const uint8_t *wq, const void *ws, size_t row_bytes, int nb, int ra,
                                             int rb, int lane, int n_pieces, mm_piece *pre)
{
    constexpr int NSUB = WT == BW_TYPE_Q8_0 ? 4 : 2; /* pieces per block */
#pragma unroll
    for (int k = 0; k < MM_PRE; k++) {
        const int i = lane + k * BW_WARP;
        if (i < n_pieces) {
            const int b = i / NSUB;
            pre[k].wa = __ldg((const uint2 *)(wq + (size_t)ra * row_bytes + (size_t)i * 8));
            pre[k].wb = __ldg((const uint2 *)(wq + (size_t)rb * row_bytes + (size_t)i * 8));
            pre[k].sa = mm_scale_raw<WT>(ws, (size_t)ra * nb + b);
            pre[k].sb = mm_scale_raw<WT>(ws, (size_t)rb * nb + b);
        }
    }
}

/* Integer dot of one 8-byte piece of a weight row against the matching activation bytes. */
template <int WT> __device__ __forceinline__ int mm_dot_piece(uint2 w, const int8_t *ap, int s)
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

template <int WT, int NT>
__device__ __forceinline__ void mm_accum_piece(const mm_piece &pc, int i, int nt, int K, int nb, const int8_t *aq,
                                               const __half2 *ads, float *acc0, float *acc1)
{
    constexpr int NSUB = WT == BW_TYPE_Q8_0 ? 4 : 2;
    const int b = i / NSUB, s = i % NSUB;
    const float2 sa = mm_scale_of<WT>(pc.sa), sb = mm_scale_of<WT>(pc.sb);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t < nt) {
            const int8_t *ap = aq + (size_t)t * K + b * 32;
            const float2 ds = __half22float2(ads[t * nb + b]);
            float fa = sa.x * ds.x * (float)mm_dot_piece<WT>(pc.wa, ap, s);
            float fb = sb.x * ds.x * (float)mm_dot_piece<WT>(pc.wb, ap, s);
            if (WT == BW_TYPE_Q4_1 && s == 0) {
                fa += sa.y * ds.y;
                fb += sb.y * ds.y;
            }
            acc0[t] += fa;
            acc1[t] += fb;
        }
    }
}

/* 8 float weights of row w starting at element e. */
template <int WT> __device__ __forceinline__ void mm_load8(const void *w, size_t e, float *o)
{
    if (WT == BW_TYPE_F32) {
        const float4 a = *(const float4 *)((const float *)w + e);
        const float4 b = *(const float4 *)((const float *)w + e + 4);
        o[0] = a.x;
        o[1] = a.y;
        o[2] = a.z;
        o[3] = a.w;
        o[4] = b.x;
        o[5] = b.y;
        o[6] = b.z;
        o[7] = b.w;
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
    constexpr int QB = WT == BW_TYPE_Q8_0 ? 32 : 16; /* quant bytes per block */
    constexpr int EB = WT == BW_TYPE_F32 ? 4 : 2;    /* float element bytes */
    const size_t row_bytes = quant ? (size_t)nb * QB : (size_t)K * EB;
    const int n_pieces = quant ? (int)(row_bytes / 8) : K / 8;
    const uint8_t *wq = (const uint8_t *)W.q;
    const size_t act_bytes = quant ? (size_t)NT * K + (size_t)NT * nb * 4 : (size_t)NT * K * 4;
    float *tscale = (float *)(smem + ((act_bytes + 15) & ~(size_t)15));
    const int stride = gridDim.x * MM_WARPS;

    int u = blockIdx.x * MM_WARPS + warp;
    mm_piece pre[MM_PRE];
    if (quant && u < n_units) {
        int ra, rb;
        mm_unit_rows(epi, u, n_units, ra, rb);
        mm_load_unit<WT>(wq, W.s, row_bytes, nb, ra, rb < W.rows ? rb : ra, lane, n_pieces, pre);
    }
    bw_pdl_wait();
    bw_pdl_launch_dependents();
    mm_stage_act<quant>(smem, K, NT, tscale, in, K, t0, nt);

    const int8_t *aq = (const int8_t *)smem;
    const __half2 *ads = (const __half2 *)(smem + (size_t)NT * K);
    const float *af = (const float *)smem;

    for (; u < n_units; u += stride) {
        int ra, rb;
        mm_unit_rows(epi, u, n_units, ra, rb);
        const bool hb = rb < W.rows;
        const int rbl = hb ? rb : ra; /* a missing last row reads row ra and is never stored */
        float acc0[NT], acc1[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) acc0[t] = acc1[t] = 0.0f;

        if (quant) {
            mm_piece cur[MM_PRE];
#pragma unroll
            for (int k = 0; k < MM_PRE; k++) cur[k] = pre[k];
            if (u + stride < n_units) { /* the next unit's loads go out before this one is summed */
                int na, nbr;
                mm_unit_rows(epi, u + stride, n_units, na, nbr);
                mm_load_unit<WT>(wq, W.s, row_bytes, nb, na, nbr < W.rows ? nbr : na, lane, n_pieces, pre);
            }
#pragma unroll
            for (int k = 0; k < MM_PRE; k++) {
                const int i = lane + k * BW_WARP;
                if (i < n_pieces) mm_accum_piece<WT, NT>(cur[k], i, nt, K, nb, aq, ads, acc0, acc1);
            }
            constexpr int NSUB = QB / 8;
            for (int i = lane + MM_PRE * BW_WARP; i < n_pieces; i += BW_WARP) {
                mm_piece pc;
                const int b = i / NSUB;
                pc.wa = __ldg((const uint2 *)(wq + (size_t)ra * row_bytes + (size_t)i * 8));
                pc.wb = __ldg((const uint2 *)(wq + (size_t)rbl * row_bytes + (size_t)i * 8));
                pc.sa = mm_scale_raw<WT>(W.s, (size_t)ra * nb + b);
                pc.sb = mm_scale_raw<WT>(W.s, (size_t)rbl * nb + b);
                mm_accum_piece<WT, NT>(pc, i, nt, K, nb, aq, ads, acc0, acc1);
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
        /* The butterfly leaves the same bits in every lane, so lane t finishes token t: the epilogues
         * (RoPE's double-precision sine and cosine among them) of a chunk run side by side. */
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (lane == t && t < nt) mm_epilogue(epi, t0 + t, ra, rb, hb, acc0[t], acc1[t], y, ldy, p);
    }
}

static size_t mm_smem(int wt, int nt, int K)
{
    const int quant = wt == BW_TYPE_Q4_0 || wt == BW_TYPE_Q4_1 || wt == BW_TYPE_Q8_0;
    size_t act = quant ? (size_t)nt * K + (size_t)nt * (K / 32) * 4 : (size_t)nt * K * 4;
    return ((act + 15) & ~(size_t)15) + (size_t)nt * sizeof(float); /* the per-token norm scales */
}

template <int WT, int NT>
static cudaError_t mm_launch_nt(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                                float *y, int ldy, const bw_cu_qkv &p, int n_units, int max_blocks)
{
    const size_t smem = mm_smem(WT, NT, W.cols);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(mm_kernel<WT, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    /* max_blocks bounds the whole grid, not one chunk's row of it: every block stages its chunk's
     * activations (norm and quantization) before it starts on its units, so for a long prompt fewer
     * blocks per chunk, each walking more units, spend less on staging the same tokens again. */
    const int n_chunks = (n_tok + NT - 1) / NT;
    int gx = (n_units + MM_WARPS - 1) / MM_WARPS;
    if (max_blocks > 0 && gx > max_blocks / n_chunks) gx = max_blocks / n_chunks > 1 ? max_blocks / n_chunks : 1;
    const dim3 grid(gx, n_chunks);
    return bw_cu_launch_kernel(L, grid, dim3(MM_THREADS), smem, mm_kernel<WT, NT>, W, in, n_tok, epi, y, ldy, p,
                               n_units);
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

cudaError_t bw_cu_matmul(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi, float *y,
                         int ldy, const bw_cu_qkv *qkv, int max_blocks)
{
    if (n_tok <= 0) return cudaSuccess;
    if (W.cols % 32 != 0 || (epi == BW_EPI_SWIGLU && W.rows % 2 != 0) || (epi == BW_EPI_QKV && !qkv))
        return cudaErrorInvalidValue;
    bw_cu_qkv p = {};
    if (qkv) p = *qkv;
    const int n_units = epi == BW_EPI_SWIGLU ? W.rows / 2 : (W.rows + 1) / 2;
    if (L.mma && n_tok > MM_WARP_MAX_TOK) {
        const cudaError_t e = bw_cu_matmul_mma(L, W, in, n_tok, epi, y, ldy, p, n_units);
        if (e != cudaErrorNotSupported) return e;
    }
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
