/* The tensor-core product for batches of many tokens (prefill, many-slot decode) of a quantized matrix
 * (Q4_0, Q4_1, Q8_0): y[t][r] = sum_c W[r][c] * x[t][c], with the epilogues of matmul.cuh.
 *
 * A 32-element quant block is exactly the k extent of one mma.sync.m16n8k32 s8 x s8 -> s32, so each mma
 * gives the integer block dots of 16 weight rows with 8 tokens, which are then scaled per block as the
 * CPU backend does (d_w*d_a*isum, + m_w*s_a for Q4_1): the integer sums are the CPU's exactly, only the
 * order of the float additions across blocks differs.
 *
 * Block: 4 warps, a tile of 64 output rows (32 units) x NTOK = 8*NSUB tokens; grid (row tiles, token
 * tiles). The block's activations are staged once in shared memory (matmul.cuh; rows padded by 16 bytes
 * so the B-fragment loads of the 8 tokens of a fragment hit 8 distinct bank groups). A warp owns 8 units:
 * A-fragment rows 0..7 are the first rows of its units and rows 8..15 the second, so each thread ends
 * up holding both rows of a unit for the same token, which the pair epilogues (SwiGLU, RoPE) need.
 * A fragments come straight from global memory: for Q4 the 32-bit word at bytes 4t..4t+3 of a block
 * holds elements 4t.. in its low nibbles and 16+4t.. in its high nibbles, which are the a0/a2 (row g)
 * or a1/a3 (row g+8) registers of thread t of the fragment. Weights layout: engine/cuda/repack.h. */
#include "engine/cuda/matmul.cuh"

#define MMA_WARPS 4
#define MMA_THREADS (MMA_WARPS * BW_WARP)
#define MMA_UNITS (MMA_WARPS * 8) /* units per block */

__device__ __forceinline__ void mma_s8(int *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)c, (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
    __trap(); /* never launched: the host checks the architecture */
#endif
}

static __host__ __device__ int mma_stride(int K) { return K + 16; }

static size_t mma_smem(int ntok, int K)
{
    const size_t act = (size_t)ntok * mma_stride(K) + (size_t)ntok * (K / 32) * 4;
    return ((act + 15) & ~(size_t)15) + (size_t)ntok * sizeof(float);
}

template <int WT, int NSUB>
__global__ void __launch_bounds__(MMA_THREADS)
    mma_kernel(bw_cu_mat W, bw_cu_act in, int n_tok, int epi, float *y, int ldy, bw_cu_qkv p, int n_units)
{
    constexpr int NTOK = 8 * NSUB;
    constexpr int QB = WT == BW_TYPE_Q8_0 ? 32 : 16;
    extern __shared__ __align__(16) uint8_t smem[];
    const int warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    const int g = lane / 4, tq = lane % 4;
    const int K = W.cols, nb = K / 32, stride = mma_stride(K);
    const int t0 = blockIdx.y * NTOK;
    const int nt = min(NTOK, n_tok - t0);
    const size_t act_bytes = (size_t)NTOK * stride + (size_t)NTOK * nb * 4;
    float *tscale = (float *)(smem + ((act_bytes + 15) & ~(size_t)15));

    /* This thread's two weight rows: row g of the fragment is unit u's first row, g+8 its second. */
    const int u = blockIdx.x * MMA_UNITS + warp * 8 + g;
    const bool has_u = u < n_units;
    int ra, rb;
    mm_unit_rows(epi, has_u ? u : 0, n_units, ra, rb);
    const bool hb = rb < W.rows;
    const int rbl = hb ? rb : ra;
    const uint8_t *qa = (const uint8_t *)W.q + (size_t)ra * nb * QB + 4 * tq;
    const uint8_t *qb = (const uint8_t *)W.q + (size_t)rbl * nb * QB + 4 * tq;
    bw_prefetch_l2(qa);
    bw_prefetch_l2(qb);

    bw_pdl_wait();
    bw_pdl_launch_dependents();
    mm_stage_act<true>(smem, stride, NTOK, tscale, in, K, t0, nt);
    const int8_t *aq = (const int8_t *)smem;
    const __half2 *ads = (const __half2 *)(smem + (size_t)NTOK * stride);

    float acc[NSUB][4];
#pragma unroll
    for (int n = 0; n < NSUB; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

#pragma unroll 2
    for (int b = 0; b < nb; b++) {
        uint32_t a0, a1, a2, a3;
        if (WT == BW_TYPE_Q8_0) {
            a0 = __ldg((const uint32_t *)(qa + (size_t)b * 32));
            a1 = __ldg((const uint32_t *)(qb + (size_t)b * 32));
            a2 = __ldg((const uint32_t *)(qa + (size_t)b * 32 + 16));
            a3 = __ldg((const uint32_t *)(qb + (size_t)b * 32 + 16));
        } else {
            const uint32_t wa = __ldg((const uint32_t *)(qa + (size_t)b * 16));
            const uint32_t wb = __ldg((const uint32_t *)(qb + (size_t)b * 16));
            a0 = wa & 0x0f0f0f0fu;
            a1 = wb & 0x0f0f0f0fu;
            a2 = (wa >> 4) & 0x0f0f0f0fu;
            a3 = (wb >> 4) & 0x0f0f0f0fu;
            if (WT == BW_TYPE_Q4_0) {
                a0 = __vsub4(a0, 0x08080808u);
                a1 = __vsub4(a1, 0x08080808u);
                a2 = __vsub4(a2, 0x08080808u);
                a3 = __vsub4(a3, 0x08080808u);
            }
        }
        const float2 sa = mm_scale_of<WT>(mm_scale_raw<WT>(W.s, (size_t)ra * nb + b));
        const float2 sb = mm_scale_of<WT>(mm_scale_raw<WT>(W.s, (size_t)rbl * nb + b));
#pragma unroll
        for (int n = 0; n < NSUB; n++) {
            const int8_t *bp = aq + (size_t)(n * 8 + g) * stride + b * 32 + 4 * tq;
            const uint32_t b0 = *(const uint32_t *)bp, b1 = *(const uint32_t *)(bp + 16);
            int c[4] = {0, 0, 0, 0};
            mma_s8(c, a0, a1, a2, a3, b0, b1);
            /* c0, c1: row g with tokens 2tq, 2tq+1; c2, c3: row g+8 with the same tokens. */
            const float2 d0 = __half22float2(ads[(n * 8 + 2 * tq) * nb + b]);
            const float2 d1 = __half22float2(ads[(n * 8 + 2 * tq + 1) * nb + b]);
            float f0 = sa.x * d0.x * (float)c[0], f1 = sa.x * d1.x * (float)c[1];
            float f2 = sb.x * d0.x * (float)c[2], f3 = sb.x * d1.x * (float)c[3];
            if (WT == BW_TYPE_Q4_1) {
                f0 += sa.y * d0.y;
                f1 += sa.y * d1.y;
                f2 += sb.y * d0.y;
                f3 += sb.y * d1.y;
            }
            acc[n][0] += f0;
            acc[n][1] += f1;
            acc[n][2] += f2;
            acc[n][3] += f3;
        }
    }

    if (!has_u) return;
#pragma unroll
    for (int n = 0; n < NSUB; n++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int t = n * 8 + 2 * tq + h;
            if (t < nt) mm_epilogue(epi, t0 + t, ra, rb, hb, acc[n][h], acc[n][2 + h], y, ldy, p);
        }
    }
}

template <int WT, int NSUB>
static cudaError_t mma_launch_n(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                                float *y, int ldy, const bw_cu_qkv &p, int n_units)
{
    const size_t smem = mma_smem(8 * NSUB, W.cols);
    if (smem > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(mma_kernel<WT, NSUB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    const dim3 grid((n_units + MMA_UNITS - 1) / MMA_UNITS, (n_tok + 8 * NSUB - 1) / (8 * NSUB));
    return bw_cu_launch_kernel(L, grid, dim3(MMA_THREADS), smem, mma_kernel<WT, NSUB>, W, in, n_tok, epi, y, ldy, p,
                               n_units);
}

template <int WT>
static cudaError_t mma_launch(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                              float *y, int ldy, const bw_cu_qkv &p, int n_units)
{
    /* Wide token tiles re-read the weights least; narrow ones give small batches more blocks. */
    if (n_tok >= 256 && mma_smem(64, W.cols) <= 100 * 1024)
        return mma_launch_n<WT, 8>(L, W, in, n_tok, epi, y, ldy, p, n_units);
    if (n_tok > 16 && mma_smem(32, W.cols) <= 100 * 1024)
        return mma_launch_n<WT, 4>(L, W, in, n_tok, epi, y, ldy, p, n_units);
    if (mma_smem(16, W.cols) <= 100 * 1024) return mma_launch_n<WT, 2>(L, W, in, n_tok, epi, y, ldy, p, n_units);
    return cudaErrorNotSupported;
}

cudaError_t bw_cu_matmul_mma(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi,
                             float *y, int ldy, const bw_cu_qkv &p, int n_units)
{
    static int arch = -1; /* compute capability major of the current device, looked up once */
    if (arch < 0) {
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            cudaGetLastError();
            return cudaErrorNotSupported;
        }
        arch = major;
    }
    if (arch < 8) return cudaErrorNotSupported;
    switch (W.type) {
    case BW_TYPE_Q4_0: return mma_launch<BW_TYPE_Q4_0>(L, W, in, n_tok, epi, y, ldy, p, n_units);
    case BW_TYPE_Q4_1: return mma_launch<BW_TYPE_Q4_1>(L, W, in, n_tok, epi, y, ldy, p, n_units);
    case BW_TYPE_Q8_0: return mma_launch<BW_TYPE_Q8_0>(L, W, in, n_tok, epi, y, ldy, p, n_units);
    default: return cudaErrorNotSupported;
    }
}
