/* Token embedding: x[t][c] = E[tok[t]][c], dequantized from any weight type (layout: repack.h), one
 * block per token. The values equal GGUF's dequantization exactly (d * q in float, as on the CPU). */
#include "engine/cuda/ops.cuh"
#include "engine/tensor.h"

__device__ __forceinline__ float em_get(const bw_cu_mat &E, int r, int c)
{
    const size_t i = (size_t)r * E.cols + c;
    const size_t blk = (size_t)r * (E.cols / 32) + c / 32;
    const int j = c % 32;
    switch (E.type) {
    case BW_TYPE_F32: return ((const float *)E.q)[i];
    case BW_TYPE_F16: return bw_h2f(((const uint16_t *)E.q)[i]);
    case BW_TYPE_BF16: return bw_bf2f(((const uint16_t *)E.q)[i]);
    case BW_TYPE_Q8_0: return bw_h2f(((const uint16_t *)E.s)[blk]) * (float)((const int8_t *)E.q)[blk * 32 + j];
    case BW_TYPE_Q4_0: {
        const uint8_t byte = ((const uint8_t *)E.q)[blk * 16 + (j & 15)];
        const int q = j < 16 ? (byte & 15) : (byte >> 4);
        return bw_h2f(((const uint16_t *)E.s)[blk]) * (float)(q - 8);
    }
    case BW_TYPE_Q4_1: {
        const uint8_t byte = ((const uint8_t *)E.q)[blk * 16 + (j & 15)];
        const int q = j < 16 ? (byte & 15) : (byte >> 4);
        const uint16_t *dm = (const uint16_t *)E.s + blk * 2;
        return bw_h2f(dm[0]) * (float)q + bw_h2f(dm[1]);
    }
    default: return __int_as_float(0x7fc00000); /* NaN: an unsupported type cannot pass the load checks */
    }
}

__global__ void em_kernel(bw_cu_mat E, const int *tok, float *x)
{
    bw_pdl_wait();
    bw_pdl_launch_dependents();
    const int t = blockIdx.x, r = tok[t];
    for (int c = threadIdx.x; c < E.cols; c += blockDim.x) x[(size_t)t * E.cols + c] = em_get(E, r, c);
}

cudaError_t bw_cu_embed(const bw_cu_launch &L, const bw_cu_mat &E, const int *tok, int n_tok, float *x)
{
    if (n_tok <= 0) return cudaSuccess;
    return bw_cu_launch_kernel(L, dim3(n_tok), dim3(256), 0, em_kernel, E, tok, x);
}
