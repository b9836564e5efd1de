/* The two largest logits of each row and their token ids, for greedy sampling on the device (only
 * 16 bytes per row cross PCIe) and for the parity test's near-tie report. One block per row; ties go
 * to the lower id, as a first-maximum scan on the CPU does. Output: ids[2r], ids[2r+1], vals alike. */
#include <limits.h>

#include "engine/cuda/ops.cuh"

#define T2_THREADS 1024

struct t2 {
    float v1, v2;
    int i1, i2;
};

__device__ __forceinline__ bool t2_better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

__device__ __forceinline__ void t2_insert(t2 &s, float v, int i)
{
    if (t2_better(v, i, s.v1, s.i1)) {
        s.v2 = s.v1;
        s.i2 = s.i1;
        s.v1 = v;
        s.i1 = i;
    } else if (t2_better(v, i, s.v2, s.i2)) {
        s.v2 = v;
        s.i2 = i;
    }
}

__global__ void __launch_bounds__(T2_THREADS) t2_kernel(const float *logits, int n, int *ids, float *vals)
{
    __shared__ t2 red[T2_THREADS / BW_WARP];
    bw_pdl_wait();
    bw_pdl_launch_dependents();
    const float *row = logits + (size_t)blockIdx.x * n;
    t2 s = {-INFINITY, -INFINITY, INT_MAX, INT_MAX};
    for (int k = threadIdx.x; k < n; k += T2_THREADS) t2_insert(s, row[k], k);
    for (int o = 16; o > 0; o >>= 1) {
        const float v1 = __shfl_xor_sync(0xffffffffu, s.v1, o), v2 = __shfl_xor_sync(0xffffffffu, s.v2, o);
        const int i1 = __shfl_xor_sync(0xffffffffu, s.i1, o), i2 = __shfl_xor_sync(0xffffffffu, s.i2, o);
        t2_insert(s, v1, i1);
        t2_insert(s, v2, i2);
    }
    const int warp = threadIdx.x / BW_WARP, lane = threadIdx.x % BW_WARP;
    if (lane == 0) red[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        t2 r = red[0];
        for (int w = 1; w < T2_THREADS / BW_WARP; w++) {
            t2_insert(r, red[w].v1, red[w].i1);
            t2_insert(r, red[w].v2, red[w].i2);
        }
        ids[2 * blockIdx.x] = r.i1;
        ids[2 * blockIdx.x + 1] = r.i2;
        vals[2 * blockIdx.x] = r.v1;
        vals[2 * blockIdx.x + 1] = r.v2;
    }
}

cudaError_t bw_cu_top2(const bw_cu_launch &L, const float *logits, int n_rows, int n, int *ids, float *vals)
{
    if (n_rows <= 0) return cudaSuccess;
    return bw_cu_launch_kernel(L, dim3(n_rows), dim3(T2_THREADS), 0, t2_kernel, logits, n, ids, vals);
}
